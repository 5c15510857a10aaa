//! Packet slots from C: `fc_packet_*` (the writer and readers of encoded access units).

use std::ffi::{c_char, c_int};
use std::sync::Mutex;

use framecache_shm::error::{Error, Result};
use framecache_shm::packet::{
    Packet, PacketInfo, PacketReader, PacketReaderConfig, PacketSlotConfig, PacketStart,
    PacketWriter, StreamConfig, MAX_STREAMS,
};

use crate::abi::{abi_structs, blank, element, out_size, read_in, write_out};
use crate::*;

abi_structs! {
    fc_stream_info => (std::mem::offset_of!(fc_stream_info, media), std::mem::size_of::<fc_stream_info>()),
    fc_packet_slot_config => (std::mem::offset_of!(fc_packet_slot_config, payload_size), std::mem::size_of::<fc_packet_slot_config>()),
    fc_packet => (std::mem::size_of::<fc_packet>(), std::mem::size_of::<fc_packet>()),
    fc_packet_reader_config => (4, std::mem::size_of::<fc_packet_reader_config>()),
    fc_packet_reader_counters => (std::mem::size_of::<fc_packet_reader_counters>(), std::mem::size_of::<fc_packet_reader_counters>()),
}

/// An open packet-slot writer. Opaque.
pub struct fc_packet_writer {
    inner: Mutex<PacketWriter>,
}

/// An open packet-slot reader. Opaque.
pub struct fc_packet_reader {
    inner: Mutex<PacketReader>,
}

/// One elementary stream of a packet slot (input to `fc_packet_writer_create`, output of
/// `fc_packet_get_stream`). Set `struct_size = sizeof(fc_stream_info)`.
/// Required fields (what the least `struct_size` must cover): as an input (`fc_packet_slot_config.streams`), `codec`.
#[repr(C)]
pub struct fc_stream_info {
    /// `sizeof(fc_stream_info)`.
    pub struct_size: u32,
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// `FC_MEDIA_*` (output only; derived from the codec).
    pub media: u32,
    /// Timebase numerator (0 with `timebase_den` 0 = 1/90000).
    pub timebase_num: u32,
    /// Timebase denominator.
    pub timebase_den: u32,
    /// Video width (0 = unknown).
    pub width: u32,
    /// Video height (0 = unknown).
    pub height: u32,
    /// Video frame rate numerator (0 = unknown).
    pub fps_num: u32,
    /// Video frame rate denominator.
    pub fps_den: u32,
    /// Audio sample rate (0 = unknown).
    pub sample_rate: u32,
    /// Audio channels (0 = unknown).
    pub channels: u32,
    /// Current codec-parameter generation (output only).
    pub params_gen: u32,
    /// Language/name tag, NUL-terminated.
    pub tag: [c_char; 16],
}

/// How to create a packet slot. Set `struct_size`; zeroed sizes take their defaults.
/// Required fields (what the least `struct_size` must cover): `stream_count`, `streams`.
#[repr(C)]
pub struct fc_packet_slot_config {
    /// `sizeof(fc_packet_slot_config)`.
    pub struct_size: u32,
    /// Streams in `streams` (1..=8).
    pub stream_count: u32,
    /// The streams; each with its `struct_size` set. Copied.
    pub streams: *const fc_stream_info,
    /// Payload ring bytes, a multiple of 4096 (0 = 32 MiB).
    pub payload_size: u64,
    /// Packet descriptors (0 = 16384).
    pub desc_count: u32,
    /// Bytes per codec-parameter slot (0 = 4096).
    pub params_capacity: u32,
    /// File mode (0 = 0660).
    pub mode: u32,
    /// `FC_SLOT_*` flags.
    pub flags: u32,
    /// Source-type label or NULL. Copied.
    pub source_type: *const c_char,
    /// `key=value` labels separated by newlines, or NULL. Copied.
    pub labels: *const c_char,
}

/// A packet: input to `fc_packet_publish` (`stream`, `flags`, `pts`, `dts`, `data`, `size`)
/// and output of `fc_packet_next` / `fc_packet_next_copy`. Set `struct_size`.
#[repr(C)]
pub struct fc_packet {
    /// `sizeof(fc_packet)`.
    pub struct_size: u32,
    /// Stream index.
    pub stream: u32,
    /// `FC_PACKET_*` flags.
    pub flags: u32,
    /// Codec-parameter generation that applies (output).
    pub params_gen: u32,
    /// Presentation timestamp (`FC_NOPTS` = none).
    pub pts: i64,
    /// Decoding timestamp (`FC_NOPTS` = none).
    pub dts: i64,
    /// Payload. For views from `fc_packet_next`: valid until the next call on the reader, and
    /// only trustworthy if `fc_packet_check` says `FC_OK` after use.
    pub data: *const u8,
    /// Payload bytes.
    pub size: u64,
    /// Sequence number (output).
    pub seq: u64,
    /// Publish time, CLOCK_MONOTONIC ns (output).
    pub publish_ns: u64,
    /// Packets skipped before this one (output).
    pub skipped: u64,
    /// Absolute payload position (output; used by `fc_packet_check`).
    pub pos: u64,
}

/// Packet reader options (NULL = start at the most recent keyframe).
/// Required fields (what the least `struct_size` must cover): none.
#[repr(C)]
pub struct fc_packet_reader_config {
    /// `sizeof(fc_packet_reader_config)`.
    pub struct_size: u32,
    /// `FC_PACKET_START_*`.
    pub start: u32,
}

/// `fc_packet_reader_config.start`: the most recent keyframe of the primary stream.
pub const FC_PACKET_START_KEYFRAME: u32 = 0;
/// `fc_packet_reader_config.start`: the oldest keyframe still in the ring.
pub const FC_PACKET_START_OLDEST_KEYFRAME: u32 = 1;
/// `fc_packet_reader_config.start`: the next packet published.
pub const FC_PACKET_START_NEXT: u32 = 2;
/// `fc_slot_status.kind`: a packet ring.
pub const FC_KIND_PACKETS: u32 = 2;

/// Packet reader counters. Set `struct_size`.
#[repr(C)]
pub struct fc_packet_reader_counters {
    /// `sizeof(fc_packet_reader_counters)`.
    pub struct_size: u32,
    /// 1 if the writer is alive.
    pub writer_alive: u32,
    /// Packets delivered.
    pub packets_read: u64,
    /// Packets passed over.
    pub packets_skipped: u64,
    /// Reads found overwritten.
    pub overruns: u64,
    /// Re-attachments.
    pub reattached: u64,
    /// Packets the writer published.
    pub writer_packets: u64,
    /// Published but not yet read.
    pub lag: u64,
    /// Publish→read latency of the last packet, ns.
    pub latency_last_ns: u64,
    /// Largest publish→read latency, ns.
    pub latency_max_ns: u64,
}

pub(crate) fn stream_config(s: &fc_stream_info, i: usize) -> Result<StreamConfig> {
    let mut c = StreamConfig::new(s.codec);
    if s.timebase_num != 0 || s.timebase_den != 0 {
        c.timebase = (s.timebase_num, s.timebase_den);
    }
    c.width = s.width;
    c.height = s.height;
    c.fps = (s.fps_num, if s.fps_den == 0 { 1 } else { s.fps_den });
    c.sample_rate = s.sample_rate;
    c.channels = s.channels;
    // SAFETY: a fixed array; CStr stops at the first NUL or we take nothing.
    let tag: Vec<u8> = s
        .tag
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    c.tag = String::from_utf8(tag)
        .map_err(|_| Error::InvalidArg(format!("streams[{i}].tag is not UTF-8")))?;
    Ok(c)
}

/// `count` stream descriptions at `streams`, `streams[0].struct_size` bytes apart (the caller's
/// sizeof), as the ring takes them.
///
/// # Safety
/// `streams` valid for `count` entries of the caller's size (checked non-NULL here).
pub(crate) unsafe fn streams_in(
    streams: *const fc_stream_info,
    count: u32,
    what: &str,
) -> Result<Vec<StreamConfig>> {
    if count == 0 || count as usize > MAX_STREAMS || streams.is_null() {
        return Err(Error::InvalidArg(format!(
            "{count} {what} (1..={MAX_STREAMS}, non-NULL)"
        )));
    }
    let stride = read_in(streams, &format!("{what}[0]"))?.struct_size as usize;
    (0..count as usize)
        .map(|i| {
            let label = format!("{what}[{i}]");
            stream_config(&read_in(element(streams, i, stride), &label)?, i)
        })
        .collect()
}

/// The `size` bytes at `data` (which may be NULL when `size` is 0).
///
/// # Safety
/// `data` readable for `size` bytes.
pub(crate) unsafe fn bytes_in<'a>(data: *const u8, size: usize) -> Result<&'a [u8]> {
    if size == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Error::InvalidArg("data is NULL".into()));
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(data, size) })
}

/// A packet to publish as the caller described it, its payload borrowed.
///
/// # Safety
/// `p.data` readable for `p.size` bytes.
pub(crate) unsafe fn packet_in<'a>(p: &fc_packet) -> Result<Packet<'a>> {
    if p.data.is_null() {
        return Err(Error::InvalidArg("packet->data is NULL".into()));
    }
    let size = usize::try_from(p.size).map_err(|_| Error::InvalidArg("size".into()))?;
    Ok(Packet {
        stream: p.stream,
        pts: p.pts,
        dts: p.dts,
        flags: p.flags,
        // SAFETY: the caller's contract.
        data: unsafe { std::slice::from_raw_parts(p.data, size) },
    })
}

/// A copying read into the caller's `buf` of `cap` bytes: `read` copies the next packet there,
/// then `*packet` describes it (its `data` is `buf`).
///
/// # Safety
/// `buf` writable for `cap` bytes; `packet` writable with `struct_size` set.
pub(crate) unsafe fn copy_out(
    buf: *mut u8,
    cap: usize,
    packet: *mut fc_packet,
    read: impl FnOnce(&mut [u8]) -> Result<PacketInfo>,
) -> Result<()> {
    out_size(packet, "packet")?;
    if buf.is_null() {
        return Err(Error::InvalidArg("buf is NULL".into()));
    }
    // SAFETY: the caller guarantees `cap` writable bytes.
    let info = read(unsafe { std::slice::from_raw_parts_mut(buf, cap) })?;
    let mut p = blank();
    fill_packet(&mut p, &info, buf);
    write_out(packet, &p, "packet")
}

/// Hands codec parameters (generation `gen`, bytes `data`) to a caller's `buf` of `cap` bytes:
/// the size and generation always, the bytes when they fit (else `FC_ERR_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `buf` writable for `cap` bytes (or NULL with `cap` 0); `gen_out` NULL or writable.
pub(crate) unsafe fn params_out(
    gen: u32,
    data: &[u8],
    buf: *mut u8,
    cap: usize,
    size_out: &mut usize,
    gen_out: *mut u32,
) -> Result<()> {
    *size_out = data.len();
    put(gen_out, gen);
    if data.len() > cap {
        return Err(Error::BufferTooSmall {
            need: data.len(),
            got: cap,
        });
    }
    if !data.is_empty() {
        if buf.is_null() {
            return Err(Error::InvalidArg("buf is NULL".into()));
        }
        // SAFETY: the caller guarantees `cap` >= len writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    }
    Ok(())
}

/// Creates packet slot `slot` and returns its writer in `*out` (owned by the caller until
/// `fc_packet_writer_close`; NULL on failure). A live writer gives `FC_ERR_BUSY`.
///
/// # Safety
/// `slot` NUL-terminated; `config` valid with `stream_count` readable `streams`; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_writer_create(
    slot: *const c_char,
    config: *const fc_packet_slot_config,
    out: *mut *mut fc_packet_writer,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let c = read_in(config, "config")?;
        // SAFETY: `stream_count` readable entries per the contract.
        let streams = unsafe { streams_in(c.streams, c.stream_count, "streams")? };
        let mut cfg = PacketSlotConfig::new(streams);
        if c.payload_size != 0 {
            cfg.payload_size = c.payload_size;
        }
        if c.desc_count != 0 {
            cfg.desc_count = c.desc_count;
        }
        if c.params_capacity != 0 {
            cfg.params_capacity = c.params_capacity;
        }
        cfg.mode = c.mode;
        cfg.keep_on_close = c.flags & FC_SLOT_KEEP_ON_CLOSE != 0;
        cfg.source_type = opt_c_str(c.source_type, "source_type")?.to_string();
        cfg.labels = parse_labels(opt_c_str(c.labels, "labels")?)?;
        let w = PacketWriter::create(id, &cfg)?;
        *out = Box::into_raw(Box::new(fc_packet_writer {
            inner: Mutex::new(w),
        }));
        Ok(())
    })
}

/// Publishes codec parameters for `stream` (`size` bytes at `data`; at most the slot's
/// parameter capacity, else `FC_ERR_OVERSIZED`); their generation goes to `*gen_out` if not NULL.
///
/// # Safety
/// `writer` valid and open; `data` readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_set_codec_params(
    writer: *mut fc_packet_writer,
    stream: u32,
    data: *const u8,
    size: usize,
    gen_out: *mut u32,
) -> c_int {
    boundary(|| {
        let w = arg(writer, "writer")?;
        // SAFETY: `size` readable bytes per the contract.
        let bytes = unsafe { bytes_in(data, size)? };
        let gen = lock(&w.inner).set_codec_params(stream, bytes)?;
        put(gen_out, gen);
        Ok(())
    })
}

/// Publishes one packet (`packet->stream`, `flags`, `pts`, `dts`, `data`, `size`; the payload
/// is copied into the ring). Its sequence number goes to `*seq_out` if not NULL. Never waits
/// for readers. `FC_ERR_OVERSIZED` if larger than a quarter of the payload ring.
///
/// # Safety
/// `writer` valid and open; `packet` valid with `data` readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_publish(
    writer: *mut fc_packet_writer,
    packet: *const fc_packet,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let w = arg(writer, "writer")?;
        let p: fc_packet = read_in(packet, "packet")?;
        // SAFETY: `data` readable for `size` bytes per the contract.
        let seq = lock(&w.inner).publish(&unsafe { packet_in(&p)? })?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Closes a packet writer (readers see the writer gone; the file is removed unless
/// `FC_SLOT_KEEP_ON_CLOSE`). NULL is ignored.
///
/// # Safety
/// `writer` NULL or from `fc_packet_writer_create`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_writer_close(writer: *mut fc_packet_writer) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(writer) }
}

/// Opens packet slot `slot` for reading; `config` NULL = start at the most recent keyframe.
/// `FC_ERR_NO_PACKET_RING` if the id has no packet slot. The caller owns `*out`.
///
/// # Safety
/// `slot` NUL-terminated; `config` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_reader_open(
    slot: *const c_char,
    config: *const fc_packet_reader_config,
    out: *mut *mut fc_packet_reader,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let mut cfg = PacketReaderConfig::default();
        // SAFETY: NULL or valid per the contract.
        if !config.is_null() {
            let c = read_in(config, "config")?;
            cfg.start = match c.start {
                FC_PACKET_START_KEYFRAME => PacketStart::Keyframe,
                FC_PACKET_START_OLDEST_KEYFRAME => PacketStart::OldestKeyframe,
                FC_PACKET_START_NEXT => PacketStart::Next,
                s => return Err(Error::InvalidArg(format!("start {s}"))),
            };
        }
        let r = PacketReader::open(id, cfg)?;
        *out = Box::into_raw(Box::new(fc_packet_reader {
            inner: Mutex::new(r),
        }));
        Ok(())
    })
}

/// Number of streams of the slot in `*count`.
///
/// # Safety
/// `reader` valid and open; `count` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_stream_count(
    reader: *mut fc_packet_reader,
    count: *mut u32,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        *arg_mut(count, "count")? = lock(&r.inner).layout().stream_count;
        Ok(())
    })
}

/// Describes stream `index` in `*out`.
///
/// # Safety
/// `reader` valid and open; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_get_stream(
    reader: *mut fc_packet_reader,
    index: u32,
    out: *mut fc_stream_info,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        out_size(out, "out")?;
        let streams = lock(&r.inner).streams();
        let s = streams
            .get(index as usize)
            .ok_or_else(|| Error::InvalidArg(format!("stream {index}")))?;
        write_out(out, &stream_info(s), "out")
    })
}

/// A stream as the C ABI describes it.
pub(crate) fn stream_info(s: &framecache_shm::packet::StreamInfo) -> fc_stream_info {
    let mut o: fc_stream_info = blank();
    o.codec = s.codec;
    o.media = s.media;
    (o.timebase_num, o.timebase_den) = s.timebase;
    o.width = s.width;
    o.height = s.height;
    (o.fps_num, o.fps_den) = s.fps;
    o.sample_rate = s.sample_rate;
    o.channels = s.channels;
    o.params_gen = s.params_gen;
    copy_c_str(&mut o.tag, &s.tag);
    o
}

pub(crate) fn fill_packet(p: &mut fc_packet, i: &PacketInfo, data: *const u8) {
    p.stream = i.stream;
    p.flags = i.flags;
    p.params_gen = i.params_gen;
    p.pts = i.pts;
    p.dts = i.dts;
    p.data = data;
    p.size = u64::from(i.size);
    p.seq = i.seq;
    p.publish_ns = i.publish_ns;
    p.skipped = i.skipped;
    p.pos = i.pos;
}

/// Waits up to `timeout_ms` (negative = forever) for the next packet and fills `*packet` with a
/// zero-copy view of it. `FC_ERR_TIMEOUT`, or `FC_ERR_WRITER_GONE` when the writer is gone and
/// nothing is left. Call `fc_packet_check` after using the payload.
///
/// # Safety
/// `reader` valid and open; `packet` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_next(
    reader: *mut fc_packet_reader,
    packet: *mut fc_packet,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        out_size(packet, "packet")?;
        let mut g = lock(&r.inner);
        let v = g.next(timeout(timeout_ms))?;
        let mut p = blank();
        fill_packet(&mut p, &v.info, v.data().as_ptr());
        write_out(packet, &p, "packet")
    })
}

/// `FC_OK` if the view `packet` (from `fc_packet_next` on this reader) was not overwritten
/// since, else `FC_ERR_PACKET_OVERRUN`; then the reader also moves on to the next keyframe, so
/// the packets it delivers next never continue a GOP that lost a packet.
///
/// # Safety
/// `reader` valid and open; `packet` valid.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_check(
    reader: *mut fc_packet_reader,
    packet: *const fc_packet,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let p: fc_packet = read_in(packet, "packet")?;
        let info = PacketInfo {
            seq: p.seq,
            pos: p.pos,
            ..Default::default()
        };
        if lock(&r.inner).check_view(&info) {
            Ok(())
        } else {
            Err(Error::PacketOverrun)
        }
    })
}

/// Waits like `fc_packet_next`, then copies the payload into `buf` (`cap` bytes;
/// `FC_ERR_BUFFER_TOO_SMALL` leaves the packet for a retry). `FC_ERR_PACKET_OVERRUN` if it was
/// overwritten during the copy (the reader moves on to the next keyframe).
///
/// # Safety
/// `reader` valid and open; `buf` writable for `cap` bytes; `packet` writable with `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_next_copy(
    reader: *mut fc_packet_reader,
    buf: *mut u8,
    cap: usize,
    packet: *mut fc_packet,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        // SAFETY: `buf` and `packet` per the contract.
        unsafe {
            copy_out(buf, cap, packet, |out| {
                lock(&r.inner).next_copy(out, timeout(timeout_ms))
            })
        }
    })
}

/// Copies the codec parameters of `stream`, generation `gen` (0 = current; a packet's
/// `params_gen` names the ones that apply to it) into `buf` (`cap` bytes). `*size_out` gets the
/// size (also when `FC_ERR_BUFFER_TOO_SMALL`), `*gen_out` the generation if not NULL.
/// `FC_ERR_NO_CODEC_PARAMS` if there are none or that generation is gone.
///
/// # Safety
/// `reader` valid and open; `buf` writable for `cap` bytes (may be NULL if `cap` is 0);
/// `size_out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_get_codec_params(
    reader: *mut fc_packet_reader,
    stream: u32,
    gen: u32,
    buf: *mut u8,
    cap: usize,
    size_out: *mut usize,
    gen_out: *mut u32,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let size_out = arg_mut(size_out, "size_out")?;
        let (g, data) = lock(&r.inner).codec_params(stream, gen)?;
        // SAFETY: `buf` and `gen_out` per the contract.
        unsafe { params_out(g, &data, buf, cap, size_out, gen_out) }
    })
}

/// Fills `*stats` with the reader's counters.
///
/// # Safety
/// `reader` valid and open; `stats` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_reader_stats(
    reader: *mut fc_packet_reader,
    stats: *mut fc_packet_reader_counters,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        out_size(stats, "stats")?;
        let mut s: fc_packet_reader_counters = blank();
        let st = lock(&r.inner).stats();
        s.writer_alive = st.writer_alive.into();
        s.packets_read = st.packets_read;
        s.packets_skipped = st.packets_skipped;
        s.overruns = st.overruns;
        s.reattached = st.reattached;
        s.writer_packets = st.writer_packets;
        s.lag = st.lag;
        s.latency_last_ns = st.latency_last_ns;
        s.latency_max_ns = st.latency_max_ns;
        write_out(stats, &s, "stats")
    })
}

/// Closes a packet reader; views it handed out become invalid. NULL is ignored.
///
/// # Safety
/// `reader` NULL or from `fc_packet_reader_open`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_reader_close(reader: *mut fc_packet_reader) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(reader) }
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_packet.rs"));

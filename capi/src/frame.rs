//! Frame slots from C: `fc_producer_*` (the writer) and `fc_consumer_*` (readers).

use std::ffi::{c_char, c_int};
use std::sync::Mutex;

use framecache_shm::error::Error;
use framecache_shm::format::PixelFormat;
use framecache_shm::ring::{
    Consumer, ConsumerConfig, FrameInfo, FrameMeta, Producer, ReadMode, SlotConfig, StartAt,
};

use crate::abi::{abi_structs, blank, out_size, read_in, write_out};
use crate::*;

abi_structs! {
    fc_slot_config => (std::mem::offset_of!(fc_slot_config, fps_num), std::mem::size_of::<fc_slot_config>()),
    fc_consumer_config => (4, std::mem::size_of::<fc_consumer_config>()),
    fc_frame => (std::mem::size_of::<fc_frame>(), std::mem::size_of::<fc_frame>()),
    fc_consumer_counters => (std::mem::size_of::<fc_consumer_counters>(), std::mem::size_of::<fc_consumer_counters>()),
}

/// `fc_consumer_config.mode`: every frame in order (skipping, and counting, when a ring behind).
pub const FC_MODE_SEQUENTIAL: u32 = 0;
/// `fc_consumer_config.mode`: always the newest frame.
pub const FC_MODE_LATEST: u32 = 1;
/// `fc_consumer_config.start`: start at the newest published frame.
pub const FC_START_NEWEST: u32 = 0;
/// `fc_consumer_config.start`: start at the oldest frame still in the ring.
pub const FC_START_OLDEST: u32 = 1;
/// `fc_consumer_config.start`: start at the next frame published.
pub const FC_START_NEXT: u32 = 2;
/// `fc_slot_config.flags`: keep the slot file when the producer closes.
pub const FC_SLOT_KEEP_ON_CLOSE: u32 = 1;
/// An open frame-slot writer. Opaque.
pub struct fc_producer {
    inner: Mutex<Producer>,
}

/// An open frame-slot reader. Opaque.
pub struct fc_consumer {
    inner: Mutex<Consumer>,
}

/// How to create a frame slot. Set `struct_size = sizeof(fc_slot_config)`; zeroed fields take
/// their defaults.
/// Required fields (what the least `struct_size` must cover): `fourcc`, `width`, `height`.
#[repr(C)]
pub struct fc_slot_config {
    /// `sizeof(fc_slot_config)`.
    pub struct_size: u32,
    /// Pixel format, an `FC_FOURCC_*` value (required).
    pub fourcc: u32,
    /// Width in pixels (required).
    pub width: u32,
    /// Height in pixels (required).
    pub height: u32,
    /// Frame rate numerator (0 with `fps_den` 0 = 30/1).
    pub fps_num: u32,
    /// Frame rate denominator (0 = 1).
    pub fps_den: u32,
    /// Frame slots in the ring (0 = 120).
    pub depth: u32,
    /// File mode (0 = 0660).
    pub mode: u32,
    /// Row alignment in bytes, a power of two (0 = 1, tight rows).
    pub row_align: u32,
    /// `FC_SLOT_*` flags.
    pub flags: u32,
    /// Short source-type label, or NULL. Copied.
    pub source_type: *const c_char,
    /// Labels `key=value` separated by newlines, or NULL. Copied.
    pub labels: *const c_char,
}

/// Reader options. Set `struct_size = sizeof(fc_consumer_config)`, or pass NULL for defaults
/// (sequential, starting at the newest frame).
/// Required fields (what the least `struct_size` must cover): none (`struct_size` alone is a valid config).
#[repr(C)]
pub struct fc_consumer_config {
    /// `sizeof(fc_consumer_config)`.
    pub struct_size: u32,
    /// `FC_MODE_SEQUENTIAL` or `FC_MODE_LATEST`.
    pub mode: u32,
    /// `FC_START_NEWEST`, `FC_START_OLDEST` or `FC_START_NEXT`.
    pub start: u32,
}

/// A frame handed out by `fc_consumer_read` (a view into shared memory) or
/// `fc_consumer_read_copy` (`data` = the caller's buffer). Set `struct_size = sizeof(fc_frame)`
/// before the call.
#[repr(C)]
pub struct fc_frame {
    /// `sizeof(fc_frame)`, set by the caller.
    pub struct_size: u32,
    /// Pixel format FourCC.
    pub fourcc: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Planes in use.
    pub plane_count: u32,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
    /// Bytes per row of each plane.
    pub strides: [u32; 4],
    /// Offset of each plane from `data`.
    pub offsets: [u32; 4],
    /// The frame's bytes. For views: valid until the next read or close on this consumer, and
    /// only trustworthy if `fc_consumer_check` says `FC_OK` after use.
    pub data: *const u8,
    /// Bytes at `data`.
    pub size: u64,
    /// Sequence number.
    pub seq: u64,
    /// Presentation timestamp.
    pub pts: i64,
    /// Capture time, CLOCK_REALTIME ns.
    pub capture_ns: u64,
    /// Publish time, CLOCK_MONOTONIC ns.
    pub publish_ns: u64,
    /// Frames skipped between the previous delivered frame and this one.
    pub skipped: u64,
}

/// Reader counters. Set `struct_size = sizeof(fc_consumer_counters)` before the call.
#[repr(C)]
pub struct fc_consumer_counters {
    /// `sizeof(fc_consumer_counters)`, set by the caller.
    pub struct_size: u32,
    /// 1 if the writer is alive, else 0.
    pub writer_alive: u32,
    /// Frames delivered.
    pub frames_read: u64,
    /// Frames passed over without delivery.
    pub frames_skipped: u64,
    /// Reads found overwritten during the read.
    pub overwritten: u64,
    /// Re-attachments to a re-created slot.
    pub reattached: u64,
    /// Frames published by the writer of the attached slot.
    pub writer_frames: u64,
    /// Publish→read latency of the last frame, ns.
    pub latency_last_ns: u64,
    /// Mean publish→read latency, ns.
    pub latency_avg_ns: u64,
    /// Largest publish→read latency, ns.
    pub latency_max_ns: u64,
}

/// Creates frame slot `slot` (an id of 1-64 `[A-Za-z0-9._-]`) and returns its writer in `*out`.
/// A stale slot (its writer died) is replaced; a live one gives `FC_ERR_BUSY`. `config` is
/// read during the call only. On success the caller owns `*out` (release with
/// `fc_producer_close`); on failure `*out` is set to NULL.
///
/// # Safety
/// `slot` must be NULL or a NUL-terminated string; `config` NULL or valid; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_create(
    slot: *const c_char,
    config: *const fc_slot_config,
    out: *mut *mut fc_producer,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let c = read_in(config, "config")?;
        let mut cfg = SlotConfig::new(PixelFormat::from_fourcc(c.fourcc)?, c.width, c.height);
        if c.fps_num != 0 || c.fps_den != 0 {
            cfg.fps_num = c.fps_num;
            cfg.fps_den = if c.fps_den == 0 { 1 } else { c.fps_den };
        }
        if c.depth != 0 {
            cfg.depth = c.depth;
        }
        cfg.mode = c.mode;
        cfg.row_align = c.row_align.max(1);
        cfg.keep_on_close = c.flags & FC_SLOT_KEEP_ON_CLOSE != 0;
        cfg.source_type = opt_c_str(c.source_type, "source_type")?.to_string();
        for line in opt_c_str(c.labels, "labels")?
            .lines()
            .filter(|l| !l.is_empty())
        {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::InvalidArg(format!("label {line:?} is not key=value")))?;
            cfg.labels.push((k.to_string(), v.to_string()));
        }
        let p = Producer::create(id, &cfg)?;
        *out = Box::into_raw(Box::new(fc_producer {
            inner: Mutex::new(p),
        }));
        Ok(())
    })
}

/// Copies one whole frame (`size` must equal the slot's frame size) into the ring and publishes
/// it; its sequence number goes to `*seq_out` if not NULL. `capture_ns` 0 = now. Never waits
/// for readers.
///
/// # Safety
/// `producer` must come from `fc_producer_create` and not be closed; `data` must hold `size`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_write(
    producer: *mut fc_producer,
    data: *const u8,
    size: usize,
    pts: i64,
    capture_ns: u64,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let p = arg(producer, "producer")?;
        if data.is_null() {
            return Err(Error::InvalidArg("data is NULL".into()));
        }
        // SAFETY: caller guarantees `size` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(data, size) };
        let seq = lock(&p.inner).write(
            bytes,
            FrameMeta {
                pts,
                capture_ns,
                flags: 0,
            },
        )?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Reserves the next frame slot for writing in place: `*data_out` points at `*size_out` bytes
/// of shared memory (page-aligned; planes at the slot's offsets) that stay valid until
/// `fc_producer_commit`. Acquiring twice without a commit gives `FC_ERR_STATE`.
///
/// # Safety
/// `producer` valid and open; `data_out` and `size_out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_acquire(
    producer: *mut fc_producer,
    data_out: *mut *mut u8,
    size_out: *mut usize,
) -> c_int {
    boundary(|| {
        let p = arg(producer, "producer")?;
        let data_out = arg_mut(data_out, "data_out")?;
        let size_out = arg_mut(size_out, "size_out")?;
        let mut g = lock(&p.inner);
        *data_out = g.begin()?;
        *size_out = g.geometry().frame_size as usize;
        Ok(())
    })
}

/// Publishes the frame reserved by `fc_producer_acquire`; its sequence number goes to
/// `*seq_out` if not NULL. `FC_ERR_STATE` if nothing is acquired.
///
/// # Safety
/// `producer` valid and open.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_commit(
    producer: *mut fc_producer,
    pts: i64,
    capture_ns: u64,
    flags: u32,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let p = arg(producer, "producer")?;
        let seq = lock(&p.inner).commit(FrameMeta {
            pts,
            capture_ns,
            flags,
        })?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Closes the writer: readers see "writer gone"; the slot file is removed unless
/// `FC_SLOT_KEEP_ON_CLOSE` was set (readers that have it open keep reading). NULL is ignored.
///
/// # Safety
/// `producer` must be NULL or from `fc_producer_create`, and not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_close(producer: *mut fc_producer) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(producer) }
}

/// Opens frame slot `slot` for reading (read-only mapping; no registration with the writer).
/// `config` NULL = defaults. On success the caller owns `*out` (release with
/// `fc_consumer_close`); on failure `*out` is NULL.
///
/// # Safety
/// `slot` NULL or NUL-terminated; `config` NULL or valid; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_open(
    slot: *const c_char,
    config: *const fc_consumer_config,
    out: *mut *mut fc_consumer,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let mut cfg = ConsumerConfig::default();
        // SAFETY: NULL or valid per the contract.
        if !config.is_null() {
            let c = read_in(config, "config")?;
            cfg.mode = match c.mode {
                FC_MODE_SEQUENTIAL => ReadMode::Sequential,
                FC_MODE_LATEST => ReadMode::Latest,
                m => return Err(Error::InvalidArg(format!("mode {m}"))),
            };
            cfg.start = match c.start {
                FC_START_NEWEST => StartAt::Newest,
                FC_START_OLDEST => StartAt::Oldest,
                FC_START_NEXT => StartAt::Next,
                s => return Err(Error::InvalidArg(format!("start {s}"))),
            };
        }
        let c = Consumer::open(id, cfg)?;
        *out = Box::into_raw(Box::new(fc_consumer {
            inner: Mutex::new(c),
        }));
        Ok(())
    })
}

fn fill_frame(f: &mut fc_frame, c: &Consumer, info: &FrameInfo, data: *const u8) {
    let g = c.geometry();
    f.fourcc = g.format.fourcc();
    f.width = g.width;
    f.height = g.height;
    f.plane_count = g.plane_count;
    f.flags = info.flags;
    f.strides = g.strides;
    f.offsets = g.offsets;
    f.data = data;
    f.size = g.frame_size;
    f.seq = info.seq;
    f.pts = info.pts;
    f.capture_ns = info.capture_ns;
    f.publish_ns = info.publish_ns;
    f.skipped = info.skipped;
}

/// Waits up to `timeout_ms` (negative = forever, 0 = poll) for the next frame and fills `*frame`
/// with a zero-copy view of it. `FC_ERR_TIMEOUT` if none came; `FC_ERR_WRITER_GONE` if the
/// writer is gone, nothing is left and no new writer appeared in time (a reader re-attaches to a
/// re-created slot by itself). The view is valid until the next read or close on this consumer;
/// call `fc_consumer_check` after using it.
///
/// # Safety
/// `consumer` valid and open; `frame` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_read(
    consumer: *mut fc_consumer,
    frame: *mut fc_frame,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        out_size(frame, "frame")?;
        let mut g = lock(&c.inner);
        let (info, data) = {
            let v = g.read(timeout(timeout_ms))?;
            (v.info, v.data().as_ptr())
        };
        let mut f = blank();
        fill_frame(&mut f, &g, &info, data);
        write_out(frame, &f, "frame")
    })
}

/// `FC_OK` if the frame view `frame` (from `fc_consumer_read` on this consumer) was not
/// overwritten since it was handed out, else `FC_ERR_OVERWRITTEN` (counted in the stats).
///
/// # Safety
/// `consumer` valid and open; `frame` valid.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_check(
    consumer: *mut fc_consumer,
    frame: *const fc_frame,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        let f: fc_frame = read_in(frame, "frame")?;
        if lock(&c.inner).check_view(f.seq) {
            Ok(())
        } else {
            Err(Error::Overwritten)
        }
    })
}

/// Waits like `fc_consumer_read`, then copies the frame into `buf` (`cap` bytes, at least the
/// frame size, else `FC_ERR_BUFFER_TOO_SMALL`) and validates it: a frame overwritten during the
/// copy is never returned (the reader counts it and moves on). `*frame` describes the copy
/// (`data` = `buf`).
///
/// # Safety
/// `consumer` valid and open; `buf` writable for `cap` bytes; `frame` writable with
/// `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_read_copy(
    consumer: *mut fc_consumer,
    buf: *mut u8,
    cap: usize,
    frame: *mut fc_frame,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        out_size(frame, "frame")?;
        if buf.is_null() {
            return Err(Error::InvalidArg("buf is NULL".into()));
        }
        // SAFETY: caller guarantees `cap` writable bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
        let mut g = lock(&c.inner);
        let info = g.read_copy(out, timeout(timeout_ms))?;
        let mut f = blank();
        fill_frame(&mut f, &g, &info, buf);
        write_out(frame, &f, "frame")
    })
}

/// Fills `*stats` with the reader's counters.
///
/// # Safety
/// `consumer` valid and open; `stats` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_stats(
    consumer: *mut fc_consumer,
    stats: *mut fc_consumer_counters,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        out_size(stats, "stats")?;
        let mut s: fc_consumer_counters = blank();
        let st = lock(&c.inner).stats();
        s.writer_alive = st.writer_alive.into();
        s.frames_read = st.frames_read;
        s.frames_skipped = st.frames_skipped;
        s.overwritten = st.overwritten;
        s.reattached = st.reattached;
        s.writer_frames = st.writer_frames;
        s.latency_last_ns = st.latency_last_ns;
        s.latency_avg_ns = st.latency_avg_ns;
        s.latency_max_ns = st.latency_max_ns;
        write_out(stats, &s, "stats")
    })
}

/// Closes a reader and unmaps the slot; frame views it handed out become invalid. NULL is
/// ignored.
///
/// # Safety
/// `consumer` NULL or from `fc_consumer_open`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_close(consumer: *mut fc_consumer) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(consumer) }
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_frame.rs"));

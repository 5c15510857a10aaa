//! The packet ring's bytes in shared memory: header, stream table, codec-parameter slots,
//! packet descriptors and the payload byte ring. `docs/PROTOCOL.md` ("Packet ring") is the
//! normative description; offsets are frozen by the assertions below and the conformance tests.

use std::mem::{offset_of, size_of};

use crate::error::{Error, Result};
use crate::slot::get_cstr;

/// Magic of a packet-ring slot file (defined beside the frame ring's, which must recognise it).
pub use crate::ring::layout::PACKET_MAGIC;
/// Wire-protocol version of the packet ring. Bumped only on incompatible changes.
pub const PACKET_PROTO_VERSION: u32 = 1;
/// Size of [`PacketRingHeader`].
pub const PACKET_HEADER_SIZE: usize = 1024;
/// Streams a packet slot can describe.
pub const MAX_STREAMS: usize = 8;
/// Size of one [`StreamDesc`].
pub const STREAM_DESC_SIZE: usize = 128;
/// Size of one [`PacketDesc`].
pub const PACKET_DESC_SIZE: usize = 64;
/// Size of the header of one codec-parameter slot (lock, size, generation); data follows.
pub const PARAMS_SLOT_HEADER: usize = 16;
/// Parameter generations kept per stream, so a reader holding an older packet still finds the
/// parameters that apply to it.
pub const PARAMS_HISTORY: u32 = 4;
/// Default bytes of one codec-parameter slot.
pub const DEFAULT_PARAMS_CAPACITY: u32 = 4096;
/// Default payload byte ring: 32 MiB.
pub const DEFAULT_PAYLOAD_SIZE: u64 = 32 << 20;
/// Default number of packet descriptors.
pub const DEFAULT_DESC_COUNT: u32 = 16384;
/// pts/dts value meaning "none".
pub const FC_NOPTS: i64 = i64::MIN;

/// Packet flag: a sync point (video keyframe; every audio/data packet).
pub const FC_PACKET_KEYFRAME: u32 = 1;
/// Packet flag: a discontinuity (timestamps or content) precedes this packet.
pub const FC_PACKET_DISCONTINUITY: u32 = 2;
/// Packet flag: the stream's codec parameters changed; this is the first packet using them.
pub const FC_PACKET_CONFIG_CHANGE: u32 = 4;
/// Packet flag: the source marked the payload as possibly corrupt.
pub const FC_PACKET_CORRUPT: u32 = 8;

/// Codec: H.264 / AVC, Annex-B access units.
pub const FC_CODEC_H264: u32 = 1;
/// Codec: H.265 / HEVC, Annex-B access units.
pub const FC_CODEC_HEVC: u32 = 2;
/// Codec: AAC, raw frames (no ADTS header); parameters = AudioSpecificConfig.
pub const FC_CODEC_AAC: u32 = 3;
/// Codec: Opus packets; parameters = OpusHead.
pub const FC_CODEC_OPUS: u32 = 4;
/// Codec: MPEG-1/2 audio layer II.
pub const FC_CODEC_MP2: u32 = 5;
/// Codec: MPEG-1/2 audio layer III.
pub const FC_CODEC_MP3: u32 = 6;
/// Codec: AC-3.
pub const FC_CODEC_AC3: u32 = 7;
/// Codec: opaque data (SCTE-35, KLV, ...).
pub const FC_CODEC_DATA: u32 = 8;

/// Media kind of a stream: video.
pub const FC_MEDIA_VIDEO: u32 = 1;
/// Media kind of a stream: audio.
pub const FC_MEDIA_AUDIO: u32 = 2;
/// Media kind of a stream: data.
pub const FC_MEDIA_DATA: u32 = 3;

/// Name of a codec constant (`h264`, `aac`, ...), as ffmpeg names it.
pub fn codec_name(codec: u32) -> &'static str {
    match codec {
        FC_CODEC_H264 => "h264",
        FC_CODEC_HEVC => "hevc",
        FC_CODEC_AAC => "aac",
        FC_CODEC_OPUS => "opus",
        FC_CODEC_MP2 => "mp2",
        FC_CODEC_MP3 => "mp3",
        FC_CODEC_AC3 => "ac3",
        FC_CODEC_DATA => "data",
        _ => "unknown",
    }
}

/// The media kind a codec belongs to.
pub fn codec_media(codec: u32) -> Option<u32> {
    match codec {
        FC_CODEC_H264 | FC_CODEC_HEVC => Some(FC_MEDIA_VIDEO),
        FC_CODEC_AAC | FC_CODEC_OPUS | FC_CODEC_MP2 | FC_CODEC_MP3 | FC_CODEC_AC3 => {
            Some(FC_MEDIA_AUDIO)
        }
        FC_CODEC_DATA => Some(FC_MEDIA_DATA),
        _ => None,
    }
}

/// The packet ring's header at offset 0 (1024 bytes). Fields before `write_seq` are immutable
/// after the file is published, except the atomic `state`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PacketRingHeader {
    /// `"FCPACKET"`.
    pub magic: [u8; 8],
    /// [`PACKET_PROTO_VERSION`].
    pub proto_version: u32,
    /// Size of this header (1024 in version 1).
    pub header_size: u32,
    /// Size of the whole file.
    pub file_size: u64,
    /// Creation time, CLOCK_REALTIME ns.
    pub epoch_ns: u64,
    /// Pid of the writer that created the file.
    pub writer_pid: u32,
    /// Atomic. 1 = live, 2 = closed cleanly.
    pub state: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// Streams described in the stream table (1..=8).
    pub stream_count: u32,
    /// NUL-terminated source-type label.
    pub source_type: [u8; 16],
    /// Number of packet descriptors.
    pub desc_count: u32,
    /// Bytes of each codec-parameter slot's data area.
    pub params_capacity: u32,
    /// Parameter slots per stream ([`PARAMS_HISTORY`]).
    pub params_history: u32,
    /// Index of the primary stream: its keyframes are the join points (first video stream).
    pub primary_stream: u32,
    /// Bytes of the payload ring (a multiple of 4096).
    pub payload_size: u64,
    /// Offset of the stream table (8 entries of 128 bytes).
    pub streams_offset: u64,
    /// Offset of the codec-parameter slots.
    pub params_offset: u64,
    /// Offset of descriptor 0.
    pub desc_offset: u64,
    /// Offset of the payload ring (a multiple of 4096).
    pub payload_offset: u64,
    /// Largest packet accepted (a quarter of the payload ring).
    pub max_packet: u64,
    /// Reserved, 0.
    pub reserved1: [u8; 128],
    /// Free labels: `key=value` entries separated by `\n`, NUL-terminated.
    pub labels: [u8; 256],
    /// Atomic. Packets published; packet `s` is described by descriptor `s % desc_count`.
    pub write_seq: u64,
    /// Atomic. Futex word incremented after every publish (or burst of publishes) and at close.
    pub wake: u32,
    /// Reserved, 0.
    pub reserved2: u32,
    /// Atomic. Absolute byte position up to which the writer has reserved the payload ring:
    /// payload bytes at positions below `write_reserve - payload_size` are gone.
    pub write_reserve: u64,
    /// Atomic. 1 + sequence of the last keyframe of the primary stream (0 = none yet).
    pub last_keyframe: u64,
    /// Atomic. CLOCK_MONOTONIC ns of the last publish.
    pub last_publish_ns: u64,
    /// Atomic. Payload bytes published (without padding).
    pub bytes_published: u64,
    /// Reserved, 0.
    pub reserved3: [u8; 464],
}

/// One entry of the stream table (128 bytes), immutable after creation except `params_gen`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StreamDesc {
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// `FC_MEDIA_*`.
    pub media: u32,
    /// Timebase numerator of pts/dts (e.g. 1).
    pub timebase_num: u32,
    /// Timebase denominator (e.g. 90000).
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
    /// Atomic. Current codec-parameter generation (0 = none yet).
    pub params_gen: u32,
    /// Reserved, 0.
    pub reserved0: u32,
    /// NUL-terminated language or name tag.
    pub tag: [u8; 16],
    /// Reserved, 0.
    pub reserved: [u8; 64],
}

/// Descriptor of one packet (64 bytes), guarded by its seqlock `lock`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketDesc {
    /// Atomic seqlock: `2*seq + 1` while packet `seq` is written, `2*seq + 2` once complete.
    pub lock: u64,
    /// Sequence number.
    pub seq: u64,
    /// Presentation timestamp in the stream's timebase ([`FC_NOPTS`] = none).
    pub pts: i64,
    /// Decoding timestamp ([`FC_NOPTS`] = none).
    pub dts: i64,
    /// Absolute byte position of the payload; its offset in the ring is `pos % payload_size`.
    pub pos: u64,
    /// Payload bytes.
    pub size: u32,
    /// `FC_PACKET_*` flags.
    pub flags: u32,
    /// Stream index.
    pub stream: u32,
    /// Codec-parameter generation that applies to this packet (0 = none).
    pub params_gen: u32,
    /// CLOCK_MONOTONIC ns of the publish.
    pub publish_ns: u64,
}

const _: () = {
    assert!(size_of::<PacketRingHeader>() == PACKET_HEADER_SIZE);
    assert!(offset_of!(PacketRingHeader, stream_count) == 44);
    assert!(offset_of!(PacketRingHeader, source_type) == 48);
    assert!(offset_of!(PacketRingHeader, desc_count) == 64);
    assert!(offset_of!(PacketRingHeader, primary_stream) == 76);
    assert!(offset_of!(PacketRingHeader, payload_size) == 80);
    assert!(offset_of!(PacketRingHeader, max_packet) == 120);
    assert!(offset_of!(PacketRingHeader, reserved1) == 128);
    assert!(offset_of!(PacketRingHeader, labels) == 256);
    assert!(offset_of!(PacketRingHeader, write_seq) == 512);
    assert!(offset_of!(PacketRingHeader, wake) == 520);
    assert!(offset_of!(PacketRingHeader, write_reserve) == 528);
    assert!(offset_of!(PacketRingHeader, last_keyframe) == 536);
    assert!(offset_of!(PacketRingHeader, last_publish_ns) == 544);
    assert!(offset_of!(PacketRingHeader, bytes_published) == 552);
    assert!(offset_of!(PacketRingHeader, reserved3) == 560);
    assert!(size_of::<StreamDesc>() == STREAM_DESC_SIZE);
    assert!(offset_of!(StreamDesc, params_gen) == 40);
    assert!(offset_of!(StreamDesc, tag) == 48);
    assert!(size_of::<PacketDesc>() == PACKET_DESC_SIZE);
    assert!(offset_of!(PacketDesc, pos) == 32);
    assert!(offset_of!(PacketDesc, publish_ns) == 56);
};

macro_rules! fields {
    ($t:ty; $($f:ident),* $(,)?) => {
        &[$((stringify!($f), offset_of!($t, $f), {
            // Size of the field, from a pointer to it (no instance needed).
            const fn size_of_ptr<T>(_: *const T) -> usize { size_of::<T>() }
            let u = std::mem::MaybeUninit::<$t>::uninit();
            // SAFETY: only the address of the field is taken, nothing is read.
            size_of_ptr(unsafe { std::ptr::addr_of!((*u.as_ptr()).$f) })
        })),*]
    };
}

/// `(name, offset, size)` of every header field, for the conformance tests.
pub const HEADER_FIELDS: &[(&str, usize, usize)] = fields!(PacketRingHeader;
    magic, proto_version, header_size, file_size, epoch_ns, writer_pid, state, flags, stream_count,
    source_type, desc_count, params_capacity, params_history, primary_stream, payload_size,
    streams_offset, params_offset, desc_offset, payload_offset, max_packet, reserved1, labels,
    write_seq, wake, reserved2, write_reserve, last_keyframe, last_publish_ns, bytes_published,
    reserved3);

/// `(name, offset, size)` of every stream-table field.
pub const STREAM_FIELDS: &[(&str, usize, usize)] = fields!(StreamDesc;
    codec, media, timebase_num, timebase_den, width, height, fps_num, fps_den, sample_rate,
    channels, params_gen, reserved0, tag, reserved);

/// `(name, offset, size)` of every packet-descriptor field.
pub const DESC_FIELDS: &[(&str, usize, usize)] = fields!(PacketDesc;
    lock, seq, pts, dts, pos, size, flags, stream, params_gen, publish_ns);

/// Where everything lives in a packet slot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketLayout {
    /// Streams in use.
    pub stream_count: u32,
    /// Descriptors.
    pub desc_count: u32,
    /// Bytes of each parameter slot's data.
    pub params_capacity: u32,
    /// Payload ring size.
    pub payload_size: u64,
    /// Offset of the stream table.
    pub streams_offset: u64,
    /// Offset of the parameter slots.
    pub params_offset: u64,
    /// Offset of descriptor 0.
    pub desc_offset: u64,
    /// Offset of the payload ring.
    pub payload_offset: u64,
    /// Largest packet.
    pub max_packet: u64,
    /// Primary stream index.
    pub primary_stream: u32,
    /// File size.
    pub file_size: u64,
}

/// Smallest payload ring accepted.
pub const MIN_PAYLOAD_SIZE: u64 = 64 << 10;
/// Largest payload ring accepted (4 GiB).
pub const MAX_PAYLOAD_SIZE: u64 = 4 << 30;
/// Descriptor count bounds.
pub const MIN_DESC_COUNT: u32 = 16;
/// Descriptor count bounds.
pub const MAX_DESC_COUNT: u32 = 1 << 22;
/// Largest parameter slot.
pub const MAX_PARAMS_CAPACITY: u32 = 1 << 20;

impl PacketLayout {
    /// The layout a writer creates.
    pub fn new(
        stream_count: u32,
        primary_stream: u32,
        payload_size: u64,
        desc_count: u32,
        params_capacity: u32,
    ) -> Result<PacketLayout> {
        if stream_count == 0
            || stream_count as usize > MAX_STREAMS
            || primary_stream >= stream_count
        {
            return Err(Error::InvalidArg(format!(
                "{stream_count} streams (1..={MAX_STREAMS})"
            )));
        }
        if !(MIN_PAYLOAD_SIZE..=MAX_PAYLOAD_SIZE).contains(&payload_size)
            || !payload_size.is_multiple_of(4096)
        {
            return Err(Error::InvalidArg(format!(
                "payload size {payload_size} (a multiple of 4096 in {MIN_PAYLOAD_SIZE}..={MAX_PAYLOAD_SIZE})"
            )));
        }
        if !(MIN_DESC_COUNT..=MAX_DESC_COUNT).contains(&desc_count) {
            return Err(Error::InvalidArg(format!("descriptor count {desc_count}")));
        }
        if params_capacity == 0
            || params_capacity > MAX_PARAMS_CAPACITY
            || !params_capacity.is_multiple_of(8)
        {
            return Err(Error::InvalidArg(format!(
                "params capacity {params_capacity}"
            )));
        }
        let streams_offset = PACKET_HEADER_SIZE as u64;
        let params_offset = streams_offset + (MAX_STREAMS * STREAM_DESC_SIZE) as u64;
        let params_bytes = MAX_STREAMS as u64
            * u64::from(PARAMS_HISTORY)
            * (PARAMS_SLOT_HEADER as u64 + u64::from(params_capacity));
        let desc_offset = (params_offset + params_bytes).next_multiple_of(64);
        let payload_offset =
            (desc_offset + u64::from(desc_count) * PACKET_DESC_SIZE as u64).next_multiple_of(4096);
        Ok(PacketLayout {
            stream_count,
            desc_count,
            params_capacity,
            payload_size,
            streams_offset,
            params_offset,
            desc_offset,
            payload_offset,
            max_packet: payload_size / 4,
            primary_stream,
            file_size: payload_offset + payload_size,
        })
    }

    /// Offset of stream `i`'s table entry.
    pub fn stream_at(&self, i: u32) -> usize {
        (self.streams_offset + u64::from(i) * STREAM_DESC_SIZE as u64) as usize
    }

    /// Offset of the parameter slot for stream `i`, generation `gen`.
    pub fn params_at(&self, i: u32, gen: u32) -> usize {
        let slot = u64::from(i) * u64::from(PARAMS_HISTORY) + u64::from(gen % PARAMS_HISTORY);
        (self.params_offset + slot * (PARAMS_SLOT_HEADER as u64 + u64::from(self.params_capacity)))
            as usize
    }

    /// Offset of descriptor slot `i`.
    pub fn desc_at(&self, i: u32) -> usize {
        (self.desc_offset + u64::from(i) * PACKET_DESC_SIZE as u64) as usize
    }
}

/// Reads a header out of possibly hostile bytes.
pub fn read_header(bytes: &[u8]) -> Result<PacketRingHeader> {
    if bytes.len() < PACKET_HEADER_SIZE {
        return Err(Error::Truncated(format!(
            "{} bytes, the header needs {PACKET_HEADER_SIZE}",
            bytes.len()
        )));
    }
    // SAFETY: length checked; plain old data valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<PacketRingHeader>()) })
}

/// Validates a packet-ring header against itself and the real file length (fuzz target
/// `packet_header`). The stream table is validated too: `bytes` must cover it.
pub fn validate(bytes: &[u8], file_len: u64) -> Result<PacketLayout> {
    let h = read_header(bytes)?;
    if h.magic != PACKET_MAGIC {
        if h.magic == crate::ring::layout::FRAME_MAGIC {
            return Err(Error::WrongKind("a frame ring, not a packet ring".into()));
        }
        return Err(Error::BadMagic);
    }
    if h.proto_version != PACKET_PROTO_VERSION {
        return Err(Error::Version {
            found: h.proto_version,
            supported: PACKET_PROTO_VERSION,
        });
    }
    let corrupt = |what: &str| Err(Error::Corrupt(what.to_string()));
    if h.header_size as usize != PACKET_HEADER_SIZE {
        return corrupt("header_size");
    }
    if h.params_history != PARAMS_HISTORY {
        return corrupt("params_history");
    }
    if get_cstr(&h.source_type).is_none() || get_cstr(&h.labels).is_none() {
        return corrupt("source_type or labels not NUL-terminated UTF-8");
    }
    let expect = PacketLayout::new(
        h.stream_count,
        h.primary_stream,
        h.payload_size,
        h.desc_count,
        h.params_capacity,
    )
    .map_err(|e| Error::Corrupt(e.to_string()))?;
    let got = PacketLayout {
        stream_count: h.stream_count,
        desc_count: h.desc_count,
        params_capacity: h.params_capacity,
        payload_size: h.payload_size,
        streams_offset: h.streams_offset,
        params_offset: h.params_offset,
        desc_offset: h.desc_offset,
        payload_offset: h.payload_offset,
        max_packet: h.max_packet,
        primary_stream: h.primary_stream,
        file_size: h.file_size,
    };
    // Version 1 places every region exactly where the writer's formula puts it.
    if got != expect {
        return corrupt("region offsets or sizes disagree with the counts");
    }
    if h.file_size > file_len {
        return Err(Error::Truncated(format!(
            "header says {} bytes, file has {file_len}",
            h.file_size
        )));
    }
    let table_end = got.stream_at(MAX_STREAMS as u32);
    if bytes.len() < table_end {
        return Err(Error::Truncated("stream table".into()));
    }
    for i in 0..h.stream_count {
        let at = got.stream_at(i);
        // SAFETY: in bounds (checked above); plain old data.
        let s: StreamDesc = unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
        if codec_media(s.codec) != Some(s.media) {
            return corrupt(&format!(
                "stream {i}: codec {} / media {}",
                s.codec, s.media
            ));
        }
        if s.timebase_num == 0 || s.timebase_den == 0 || get_cstr(&s.tag).is_none() {
            return corrupt(&format!("stream {i}: timebase or tag"));
        }
    }
    Ok(got)
}

//! The frame ring's bytes in shared memory: header, per-frame descriptors, data slots.
//!
//! `docs/PROTOCOL.md` is the normative description; the structs here are `#[repr(C)]`, exported
//! to `include/framecache.h`, and their offsets are frozen by the assertions below and by the
//! conformance tests (Rust and C) that compare them with the document.
//!
//! All integers are little-endian (the only byte order framecache runs on; a big-endian host
//! refuses to build). Fields marked *atomic* are only accessed with atomic instructions.

use std::mem::{offset_of, size_of};

use crate::error::{Error, Result};
use crate::format::{FrameGeometry, PixelFormat};
use crate::slot::get_cstr;

#[cfg(target_endian = "big")]
compile_error!("framecache's shared-memory format is little-endian");

/// Magic of a frame-ring slot file.
pub const FRAME_MAGIC: [u8; 8] = *b"FCFRAMES";
/// Magic of a packet-ring slot file (a later ring kind), recognised to report `WrongKind`.
pub const PACKET_MAGIC: [u8; 8] = *b"FCPACKET";
/// Wire-protocol version of the frame ring. Bumped only on incompatible changes.
pub const FRAME_PROTO_VERSION: u32 = 1;
/// Size of [`FrameRingHeader`]; also the offset of the descriptor array in version 1.
pub const HEADER_SIZE: usize = 1024;
/// Size of one [`FrameDesc`].
pub const DESC_SIZE: usize = 64;
/// Alignment of the data region and of every frame slot in it.
pub const PAGE: u64 = 4096;
/// Default ring depth.
pub const DEFAULT_DEPTH: u32 = 120;
/// Smallest allowed ring depth (one frame being written, one readable).
pub const MIN_DEPTH: u32 = 2;
/// Largest allowed ring depth.
pub const MAX_DEPTH: u32 = 16384;

/// `state`: the writer is (or was, if its lock is gone) running.
pub const STATE_LIVE: u32 = 1;
/// `state`: the writer closed the slot cleanly.
pub const STATE_CLOSED: u32 = 2;

/// Frame flag: the writer marked a discontinuity before this frame (e.g. source restart).
pub const FC_FRAME_DISCONTINUITY: u32 = 1;

/// The frame ring's header at offset 0 of the slot file (1024 bytes).
///
/// Fields up to `labels` are written once before the file is published (renamed into place)
/// and never change, except the atomic `state`. The live fields from offset 512 sit on their
/// own cache lines, away from the immutable part that readers re-read.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FrameRingHeader {
    /// `"FCFRAMES"`.
    pub magic: [u8; 8],
    /// [`FRAME_PROTO_VERSION`].
    pub proto_version: u32,
    /// Size of this header in bytes (1024 in version 1; may grow into reserved space).
    pub header_size: u32,
    /// Size of the whole file in bytes.
    pub file_size: u64,
    /// Creation time (CLOCK_REALTIME ns); a re-created slot has a new epoch.
    pub epoch_ns: u64,
    /// Process id of the writer that created the file.
    pub writer_pid: u32,
    /// Atomic. [`STATE_LIVE`] or [`STATE_CLOSED`].
    pub state: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// Reserved, 0.
    pub reserved0: u32,
    /// NUL-terminated short label of the source type (e.g. `testsrc`, `ffmpeg`).
    pub source_type: [u8; 16],
    /// Pixel format FourCC.
    pub fourcc: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate numerator (0 = unknown).
    pub fps_num: u32,
    /// Frame rate denominator (never 0).
    pub fps_den: u32,
    /// Number of frame slots in the ring.
    pub depth: u32,
    /// Planes in use (1..=4).
    pub plane_count: u32,
    /// Row alignment used to compute the strides (1 = tight).
    pub row_align: u32,
    /// Bytes per row of each plane.
    pub strides: [u32; 4],
    /// Offset of each plane from the start of a frame.
    pub offsets: [u32; 4],
    /// Bytes of one frame.
    pub frame_size: u64,
    /// Distance between frame slots: `frame_size` rounded up to 4096.
    pub frame_stride: u64,
    /// Offset of descriptor 0 (>= `header_size`).
    pub desc_offset: u64,
    /// Offset of frame slot 0 (a multiple of 4096).
    pub data_offset: u64,
    /// Reserved, 0.
    pub reserved1: [u8; 96],
    /// Free labels: `key=value` entries separated by `\n`, NUL-terminated.
    pub labels: [u8; 256],
    /// Atomic. Number of frames published; frame `s` lives in slot `s % depth`.
    pub write_seq: u64,
    /// Atomic. Futex word incremented after every publish and at close; readers wait on it.
    pub wake: u32,
    /// Reserved, 0.
    pub reserved2: u32,
    /// Atomic. CLOCK_MONOTONIC ns of the last publish.
    pub last_publish_ns: u64,
    /// Reserved, 0.
    pub reserved3: [u8; 488],
}

/// Metadata of one frame slot (64 bytes), guarded by its seqlock `lock`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameDesc {
    /// Atomic seqlock: `2*seq + 1` while frame `seq` is being written, `2*seq + 2` once it is
    /// complete, 0 before the slot was ever written.
    pub lock: u64,
    /// Sequence number of the frame (0, 1, 2, ...).
    pub seq: u64,
    /// Presentation timestamp in the writer's timebase (`fps_den/fps_num` unless labelled).
    pub pts: i64,
    /// Capture time, CLOCK_REALTIME ns (0 = unknown).
    pub capture_ns: u64,
    /// Publish time, CLOCK_MONOTONIC ns.
    pub publish_ns: u64,
    /// Bytes of frame data (== `frame_size`).
    pub size: u32,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
    /// Reserved, 0.
    pub reserved: [u8; 16],
}

// Frozen layout (PROTOCOL.md, section "Header"): a change here is a protocol change.
const _: () = {
    assert!(size_of::<FrameRingHeader>() == HEADER_SIZE);
    assert!(offset_of!(FrameRingHeader, proto_version) == 8);
    assert!(offset_of!(FrameRingHeader, header_size) == 12);
    assert!(offset_of!(FrameRingHeader, file_size) == 16);
    assert!(offset_of!(FrameRingHeader, epoch_ns) == 24);
    assert!(offset_of!(FrameRingHeader, writer_pid) == 32);
    assert!(offset_of!(FrameRingHeader, state) == 36);
    assert!(offset_of!(FrameRingHeader, flags) == 40);
    assert!(offset_of!(FrameRingHeader, source_type) == 48);
    assert!(offset_of!(FrameRingHeader, fourcc) == 64);
    assert!(offset_of!(FrameRingHeader, width) == 68);
    assert!(offset_of!(FrameRingHeader, height) == 72);
    assert!(offset_of!(FrameRingHeader, fps_num) == 76);
    assert!(offset_of!(FrameRingHeader, fps_den) == 80);
    assert!(offset_of!(FrameRingHeader, depth) == 84);
    assert!(offset_of!(FrameRingHeader, plane_count) == 88);
    assert!(offset_of!(FrameRingHeader, row_align) == 92);
    assert!(offset_of!(FrameRingHeader, strides) == 96);
    assert!(offset_of!(FrameRingHeader, offsets) == 112);
    assert!(offset_of!(FrameRingHeader, frame_size) == 128);
    assert!(offset_of!(FrameRingHeader, frame_stride) == 136);
    assert!(offset_of!(FrameRingHeader, desc_offset) == 144);
    assert!(offset_of!(FrameRingHeader, data_offset) == 152);
    assert!(offset_of!(FrameRingHeader, reserved1) == 160);
    assert!(offset_of!(FrameRingHeader, labels) == 256);
    assert!(offset_of!(FrameRingHeader, write_seq) == 512);
    assert!(offset_of!(FrameRingHeader, wake) == 520);
    assert!(offset_of!(FrameRingHeader, last_publish_ns) == 528);
    assert!(offset_of!(FrameRingHeader, reserved3) == 536);
    assert!(size_of::<FrameDesc>() == DESC_SIZE);
    assert!(offset_of!(FrameDesc, lock) == 0);
    assert!(offset_of!(FrameDesc, seq) == 8);
    assert!(offset_of!(FrameDesc, pts) == 16);
    assert!(offset_of!(FrameDesc, capture_ns) == 24);
    assert!(offset_of!(FrameDesc, publish_ns) == 32);
    assert!(offset_of!(FrameDesc, size) == 40);
    assert!(offset_of!(FrameDesc, flags) == 44);
    assert!(offset_of!(FrameDesc, reserved) == 48);
};

/// `(name, offset, size)` of every header field, for the conformance tests.
pub const HEADER_FIELDS: &[(&str, usize, usize)] = &[
    ("magic", offset_of!(FrameRingHeader, magic), 8),
    (
        "proto_version",
        offset_of!(FrameRingHeader, proto_version),
        4,
    ),
    ("header_size", offset_of!(FrameRingHeader, header_size), 4),
    ("file_size", offset_of!(FrameRingHeader, file_size), 8),
    ("epoch_ns", offset_of!(FrameRingHeader, epoch_ns), 8),
    ("writer_pid", offset_of!(FrameRingHeader, writer_pid), 4),
    ("state", offset_of!(FrameRingHeader, state), 4),
    ("flags", offset_of!(FrameRingHeader, flags), 4),
    ("reserved0", offset_of!(FrameRingHeader, reserved0), 4),
    ("source_type", offset_of!(FrameRingHeader, source_type), 16),
    ("fourcc", offset_of!(FrameRingHeader, fourcc), 4),
    ("width", offset_of!(FrameRingHeader, width), 4),
    ("height", offset_of!(FrameRingHeader, height), 4),
    ("fps_num", offset_of!(FrameRingHeader, fps_num), 4),
    ("fps_den", offset_of!(FrameRingHeader, fps_den), 4),
    ("depth", offset_of!(FrameRingHeader, depth), 4),
    ("plane_count", offset_of!(FrameRingHeader, plane_count), 4),
    ("row_align", offset_of!(FrameRingHeader, row_align), 4),
    ("strides", offset_of!(FrameRingHeader, strides), 16),
    ("offsets", offset_of!(FrameRingHeader, offsets), 16),
    ("frame_size", offset_of!(FrameRingHeader, frame_size), 8),
    ("frame_stride", offset_of!(FrameRingHeader, frame_stride), 8),
    ("desc_offset", offset_of!(FrameRingHeader, desc_offset), 8),
    ("data_offset", offset_of!(FrameRingHeader, data_offset), 8),
    ("reserved1", offset_of!(FrameRingHeader, reserved1), 96),
    ("labels", offset_of!(FrameRingHeader, labels), 256),
    ("write_seq", offset_of!(FrameRingHeader, write_seq), 8),
    ("wake", offset_of!(FrameRingHeader, wake), 4),
    ("reserved2", offset_of!(FrameRingHeader, reserved2), 4),
    (
        "last_publish_ns",
        offset_of!(FrameRingHeader, last_publish_ns),
        8,
    ),
    ("reserved3", offset_of!(FrameRingHeader, reserved3), 488),
];

/// `(name, offset, size)` of every descriptor field, for the conformance tests.
pub const DESC_FIELDS: &[(&str, usize, usize)] = &[
    ("lock", offset_of!(FrameDesc, lock), 8),
    ("seq", offset_of!(FrameDesc, seq), 8),
    ("pts", offset_of!(FrameDesc, pts), 8),
    ("capture_ns", offset_of!(FrameDesc, capture_ns), 8),
    ("publish_ns", offset_of!(FrameDesc, publish_ns), 8),
    ("size", offset_of!(FrameDesc, size), 4),
    ("flags", offset_of!(FrameDesc, flags), 4),
    ("reserved", offset_of!(FrameDesc, reserved), 16),
];

/// Where everything lives in a slot file of a given geometry and depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Frame geometry.
    pub geometry: FrameGeometry,
    /// Frame slots.
    pub depth: u32,
    /// Distance between frame slots.
    pub frame_stride: u64,
    /// Offset of descriptor 0.
    pub desc_offset: u64,
    /// Offset of frame slot 0.
    pub data_offset: u64,
    /// Bytes of the file.
    pub file_size: u64,
}

impl RingLayout {
    /// The layout a writer creates for `geometry` and `depth`.
    pub fn new(geometry: FrameGeometry, depth: u32) -> Result<RingLayout> {
        if !(MIN_DEPTH..=MAX_DEPTH).contains(&depth) {
            return Err(Error::InvalidArg(format!(
                "ring depth {depth} (must be {MIN_DEPTH}..={MAX_DEPTH})"
            )));
        }
        let desc_offset = HEADER_SIZE as u64;
        let data_offset =
            (desc_offset + u64::from(depth) * DESC_SIZE as u64).next_multiple_of(PAGE);
        let frame_stride = geometry.frame_size.next_multiple_of(PAGE);
        let file_size = frame_stride
            .checked_mul(depth.into())
            .and_then(|d| d.checked_add(data_offset))
            .filter(|&s| s <= isize::MAX as u64)
            .ok_or_else(|| Error::InvalidArg("ring too large".into()))?;
        Ok(RingLayout {
            geometry,
            depth,
            frame_stride,
            desc_offset,
            data_offset,
            file_size,
        })
    }

    /// Offset of the descriptor of frame slot `i`.
    pub fn desc_at(&self, i: u32) -> usize {
        (self.desc_offset + u64::from(i) * DESC_SIZE as u64) as usize
    }

    /// Offset of the data of frame slot `i`.
    pub fn data_at(&self, i: u32) -> usize {
        (self.data_offset + u64::from(i) * self.frame_stride) as usize
    }
}

/// Reads a header out of possibly hostile bytes (no alignment assumed).
pub fn read_header(bytes: &[u8]) -> Result<FrameRingHeader> {
    if bytes.len() < HEADER_SIZE {
        return Err(Error::Truncated(format!(
            "{} bytes, the header needs {HEADER_SIZE}",
            bytes.len()
        )));
    }
    // SAFETY: length checked; FrameRingHeader is plain old data valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FrameRingHeader>()) })
}

/// Validates a frame-ring header against itself and against the real file length, and returns
/// the layout it describes. Every reader runs this before touching anything else, so a
/// truncated, foreign or lying file is an error, never an out-of-bounds access. This is the
/// fuzz target `frame_header`.
pub fn validate(bytes: &[u8], file_len: u64) -> Result<RingLayout> {
    let h = read_header(bytes)?;
    if h.magic != FRAME_MAGIC {
        if h.magic == PACKET_MAGIC {
            return Err(Error::WrongKind("a packet ring, not a frame ring".into()));
        }
        return Err(Error::BadMagic);
    }
    if h.proto_version != FRAME_PROTO_VERSION {
        return Err(Error::Version {
            found: h.proto_version,
            supported: FRAME_PROTO_VERSION,
        });
    }
    let corrupt = |what: &str| Err(Error::Corrupt(what.to_string()));
    if (h.header_size as usize) < HEADER_SIZE || h.header_size % 8 != 0 {
        return corrupt("header_size");
    }
    let format = PixelFormat::from_fourcc(h.fourcc)?;
    if h.fps_den == 0 {
        return corrupt("fps_den is 0");
    }
    if get_cstr(&h.source_type).is_none() || get_cstr(&h.labels).is_none() {
        return corrupt("source_type or labels not NUL-terminated UTF-8");
    }
    let fresh = FrameGeometry::new(format, h.width, h.height, h.row_align)
        .map_err(|e| Error::Corrupt(format!("geometry: {e}")))?;
    let geometry = FrameGeometry {
        plane_count: h.plane_count,
        strides: h.strides,
        offsets: h.offsets,
        frame_size: h.frame_size,
        ..fresh
    };
    if !geometry.is_consistent() {
        return corrupt("plane strides/offsets/frame_size disagree with format and size");
    }
    let expect = RingLayout::new(geometry, h.depth).map_err(|e| Error::Corrupt(e.to_string()))?;
    // Version 1 places descriptors right after the 1024-byte header; a grown header moves them.
    // Checked: a hostile desc_offset near 2^64 must not wrap around the bounds checks below.
    let Some(desc_end) = (u64::from(h.depth) * DESC_SIZE as u64).checked_add(h.desc_offset) else {
        return corrupt("desc_offset");
    };
    if h.frame_stride != expect.frame_stride
        || h.desc_offset < u64::from(h.header_size)
        || h.desc_offset % 8 != 0
        || h.data_offset % PAGE != 0
        || h.data_offset < desc_end
    {
        return corrupt("descriptor/data offsets");
    }
    let file_size = h
        .frame_stride
        .checked_mul(h.depth.into())
        .and_then(|d| d.checked_add(h.data_offset));
    if file_size != Some(h.file_size) {
        return corrupt("file_size disagrees with depth and frame size");
    }
    if h.file_size > file_len {
        return Err(Error::Truncated(format!(
            "header says {} bytes, file has {file_len}",
            h.file_size
        )));
    }
    Ok(RingLayout {
        geometry,
        depth: h.depth,
        frame_stride: h.frame_stride,
        desc_offset: h.desc_offset,
        data_offset: h.data_offset,
        file_size: h.file_size,
    })
}

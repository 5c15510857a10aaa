//! cuframes' control block in shared memory: header, slot descriptors, subscriber slots.
//!
//! `docs/CUFRAMES.md` §2 is normative; the structs are `#[repr(C)]`, exported to
//! `include/framecache.h`, and frozen by the assertions at the end of this file.

use std::mem::{offset_of, size_of};

use framecache_shm::error::{Error, Result};
use framecache_shm::format::{FrameGeometry, PixelFormat};
use framecache_shm::slot::get_cstr;

/// Magic of a cuframes control block.
pub const CUFRAMES_MAGIC: [u8; 8] = *b"FCCUFRMS";
/// Version of the control block's layout (written in its header), and the first version of the
/// socket protocol. Version 2 of the protocol did not change the layout, so it stays 1.
pub const FC_CUFRAMES_PROTO_VERSION: u32 = 1;
/// Highest socket-protocol version this library speaks (2: the packet ring, CUFRAMES.md §10).
pub const FC_CUFRAMES_PROTO_MAX: u32 = 2;
/// Size of [`CuframesHeader`].
pub const FC_CUFRAMES_HEADER_SIZE: usize = 512;
/// Size of one [`CuSlotDesc`].
pub const FC_CUFRAMES_SLOT_DESC_SIZE: usize = 192;
/// Size of one [`CuSubscriberSlot`].
pub const FC_CUFRAMES_SUB_SLOT_SIZE: usize = 128;
/// Size of [`CuFrameMeta`].
pub const FC_CUFRAMES_META_SIZE: usize = 64;
/// Most buffers in a pool (the buffer index lives in 6 bits of `latest`).
pub const FC_CUFRAMES_MAX_BUFFERS: u32 = 64;
/// Fewest buffers in a pool (one being written, one readable).
pub const FC_CUFRAMES_MIN_BUFFERS: u32 = 2;
/// Most subscribers (one bit each in `holders`).
pub const FC_CUFRAMES_MAX_SUBSCRIBERS: u32 = 64;
/// Buffers are whole multiples of this (CUDA's advice for IPC allocations).
pub const FC_CUFRAMES_BUFFER_ALIGN: u64 = 2 << 20;
/// Rows of every plane are padded to a multiple of this.
pub const FC_CUFRAMES_PITCH_ALIGN: u32 = 256;

/// `backend`: CUDA device memory and interprocess events.
pub const FC_CUFRAMES_BACKEND_CUDA: u32 = 1;
/// `backend`: the CPU implementation (memfd buffers), for machines without a GPU.
pub const FC_CUFRAMES_BACKEND_HOST: u32 = 2;

/// `policy`: when no buffer is free, revoke the oldest hold.
pub const FC_CUFRAMES_POLICY_REVOKE: u32 = 1;
/// `policy`: when no buffer is free, skip the frame.
pub const FC_CUFRAMES_POLICY_SKIP: u32 = 2;

/// Header `state`: a publisher runs (or ran, if its lock is gone); the slots' common value.
pub(crate) use framecache_shm::ring::layout::STATE_LIVE as CU_STATE_LIVE;

/// Subscriber slot `state`: free.
pub(crate) const SUB_FREE: u32 = 0;
/// Subscriber slot `state`: claimed, handshake in progress.
pub(crate) const SUB_HANDSHAKING: u32 = 1;
/// Subscriber slot `state`: attached.
pub(crate) const SUB_ACTIVE: u32 = 2;

/// The control block's header (512 bytes) at offset 0 of `KEY.cuframes`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CuframesHeader {
    /// `"FCCUFRMS"`.
    pub magic: [u8; 8],
    /// [`FC_CUFRAMES_PROTO_VERSION`].
    pub proto_version: u32,
    /// 512 in version 1.
    pub header_size: u32,
    /// Bytes of the whole file.
    pub file_size: u64,
    /// N, the number of buffers.
    pub buffer_count: u32,
    /// M, the number of subscriber slots.
    pub max_subscribers: u32,
    /// 192.
    pub slot_desc_size: u32,
    /// 128.
    pub sub_slot_size: u32,
    /// Offset of the slot descriptors.
    pub slots_offset: u32,
    /// Offset of the subscriber slots.
    pub subs_offset: u32,
    /// Pixel format (FourCC).
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Planes in use.
    pub plane_count: u32,
    /// Bytes per row of each plane.
    pub pitches: [u32; 4],
    /// Offset of each plane from the start of a buffer.
    pub plane_offsets: [u64; 4],
    /// Bytes of each buffer allocation (multiple of 2 MiB).
    pub buffer_size: u64,
    /// `FC_CUFRAMES_BACKEND_*`.
    pub backend: u32,
    /// Process id of the publisher.
    pub publisher_pid: u32,
    /// UUID of the publisher's GPU (zeros for the host backend).
    pub device_uuid: [u8; 16],
    /// Random, new at every publisher start.
    pub epoch: u64,
    /// `FC_CUFRAMES_POLICY_*`.
    pub policy: u32,
    /// Zero.
    pub reserved0: u32,
    /// NUL-terminated key.
    pub key: [u8; 64],
    /// Unit of `pts` and `duration`: numerator of the time base in seconds (0 = unknown).
    pub time_base_num: u32,
    /// Denominator of the time base (0 = unknown).
    pub time_base_den: u32,
    /// Nominal frame rate, numerator (0 = unknown or variable).
    pub rate_num: u32,
    /// Nominal frame rate, denominator.
    pub rate_den: u32,
    /// Zero.
    pub reserved1: [u8; 16],
    /// Atomic: 1 live, 2 closed.
    pub state: u32,
    /// Atomic futex word: low 32 bits of the newest frame's seq.
    pub notify: u32,
    /// Atomic: `seq << 6 | buffer` of the newest frame, 0 = none.
    pub latest: u64,
    /// Atomic: frames published.
    pub published: u64,
    /// Atomic: frames skipped for want of a free buffer.
    pub skipped: u64,
    /// Atomic: holds revoked.
    pub revoked: u64,
    /// Zero.
    pub reserved2: [u8; 216],
}

/// Metadata of the frame in a buffer (64 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CuFrameMeta {
    /// Frame number from 1; 0 = the buffer never held a frame.
    pub seq: u64,
    /// Presentation timestamp (`FC_NOPTS` = none).
    pub pts: i64,
    /// Duration, 0 = unknown.
    pub duration: i64,
    /// `CLOCK_MONOTONIC` at publish.
    pub publish_ns: u64,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
    /// Buffer index.
    pub buffer: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format (FourCC).
    pub format: u32,
    /// Zero.
    pub reserved: [u8; 12],
}

/// One buffer's descriptor (192 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CuSlotDesc {
    /// Atomic seqlock generation: odd while the publisher writes the buffer.
    pub seq: u64,
    /// Atomic bitmask of subscriber slots holding the buffer.
    pub holders: u64,
    /// Atomic bitmask of subscriber slots that acquired it since it was last written.
    pub readers: u64,
    /// Zero.
    pub reserved0: [u8; 40],
    /// The frame now in the buffer.
    pub meta: CuFrameMeta,
    /// Zero.
    pub reserved1: [u8; 64],
}

/// One subscriber's slot (128 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CuSubscriberSlot {
    /// Atomic: 0 free, 1 handshaking, 2 active.
    pub state: u32,
    /// Process id of the subscriber.
    pub pid: u32,
    /// `CLOCK_REALTIME` when it became active.
    pub attached_ns: u64,
    /// Atomic: frames acquired.
    pub frames: u64,
    /// Atomic: published frames it never acquired.
    pub missed: u64,
    /// Atomic: its holds revoked by the publisher.
    pub revoked: u64,
    /// Atomic: releases that found the buffer rewritten.
    pub torn: u64,
    /// Atomic: seq of its newest acquired frame.
    pub last_seq: u64,
    /// Zero.
    pub reserved: [u8; 72],
}

// Frozen by docs/CUFRAMES.md §2.
const _: () = {
    assert!(size_of::<CuframesHeader>() == FC_CUFRAMES_HEADER_SIZE);
    assert!(size_of::<CuSlotDesc>() == FC_CUFRAMES_SLOT_DESC_SIZE);
    assert!(size_of::<CuSubscriberSlot>() == FC_CUFRAMES_SUB_SLOT_SIZE);
    assert!(size_of::<CuFrameMeta>() == FC_CUFRAMES_META_SIZE);
    assert!(offset_of!(CuframesHeader, buffer_count) == 24);
    assert!(offset_of!(CuframesHeader, slots_offset) == 40);
    assert!(offset_of!(CuframesHeader, format) == 48);
    assert!(offset_of!(CuframesHeader, pitches) == 64);
    assert!(offset_of!(CuframesHeader, plane_offsets) == 80);
    assert!(offset_of!(CuframesHeader, buffer_size) == 112);
    assert!(offset_of!(CuframesHeader, backend) == 120);
    assert!(offset_of!(CuframesHeader, device_uuid) == 128);
    assert!(offset_of!(CuframesHeader, epoch) == 144);
    assert!(offset_of!(CuframesHeader, policy) == 152);
    assert!(offset_of!(CuframesHeader, key) == 160);
    assert!(offset_of!(CuframesHeader, state) == 256);
    assert!(offset_of!(CuframesHeader, notify) == 260);
    assert!(offset_of!(CuframesHeader, latest) == 264);
    assert!(offset_of!(CuframesHeader, published) == 272);
    assert!(offset_of!(CuframesHeader, skipped) == 280);
    assert!(offset_of!(CuframesHeader, revoked) == 288);
    assert!(offset_of!(CuSlotDesc, seq) == 0);
    assert!(offset_of!(CuSlotDesc, holders) == 8);
    assert!(offset_of!(CuSlotDesc, readers) == 16);
    assert!(offset_of!(CuSlotDesc, meta) == 64);
    assert!(offset_of!(CuFrameMeta, pts) == 8);
    assert!(offset_of!(CuFrameMeta, publish_ns) == 24);
    assert!(offset_of!(CuFrameMeta, flags) == 32);
    assert!(offset_of!(CuFrameMeta, buffer) == 36);
    assert!(offset_of!(CuFrameMeta, format) == 48);
    assert!(offset_of!(CuSubscriberSlot, attached_ns) == 8);
    assert!(offset_of!(CuSubscriberSlot, frames) == 16);
    assert!(offset_of!(CuSubscriberSlot, missed) == 24);
    assert!(offset_of!(CuSubscriberSlot, revoked) == 32);
    assert!(offset_of!(CuSubscriberSlot, torn) == 40);
    assert!(offset_of!(CuSubscriberSlot, last_seq) == 48);
};

/// Byte offsets of the atomics, for `Mapping::atomic_*`.
pub(crate) mod off {
    /// Header `state`.
    pub(crate) const STATE: usize = 256;
    /// Header `notify`.
    pub(crate) const NOTIFY: usize = 260;
    /// Header `latest`.
    pub(crate) const LATEST: usize = 264;
    /// Header `published`.
    pub(crate) const PUBLISHED: usize = 272;
    /// Header `skipped`.
    pub(crate) const SKIPPED: usize = 280;
    /// Header `revoked`.
    pub(crate) const REVOKED: usize = 288;
    /// Slot `seq`.
    pub(crate) const SLOT_SEQ: usize = 0;
    /// Slot `holders`.
    pub(crate) const SLOT_HOLDERS: usize = 8;
    /// Slot `readers`.
    pub(crate) const SLOT_READERS: usize = 16;
    /// Slot `meta`.
    pub(crate) const SLOT_META: usize = 64;
    /// Subscriber `state`.
    pub(crate) const SUB_STATE: usize = 0;
    /// Subscriber `frames`.
    pub(crate) const SUB_FRAMES: usize = 16;
    /// Subscriber `missed`.
    pub(crate) const SUB_MISSED: usize = 24;
    /// Subscriber `revoked`.
    pub(crate) const SUB_REVOKED: usize = 32;
    /// Subscriber `torn`.
    pub(crate) const SUB_TORN: usize = 40;
    /// Subscriber `last_seq`.
    pub(crate) const SUB_LAST_SEQ: usize = 48;
}

/// Pool geometry derived from format and size: pitches padded to 256, buffers to 2 MiB.
pub fn pool_geometry(format: PixelFormat, width: u32, height: u32) -> Result<(FrameGeometry, u64)> {
    let g = FrameGeometry::new(format, width, height, FC_CUFRAMES_PITCH_ALIGN)?;
    let size = g.frame_size.next_multiple_of(FC_CUFRAMES_BUFFER_ALIGN);
    Ok((g, size))
}

/// Size of the control block for `n` buffers and `m` subscribers.
pub fn file_size(n: u32, m: u32) -> u64 {
    let end = FC_CUFRAMES_HEADER_SIZE as u64
        + FC_CUFRAMES_SLOT_DESC_SIZE as u64 * u64::from(n)
        + FC_CUFRAMES_SUB_SLOT_SIZE as u64 * u64::from(m);
    end.next_multiple_of(4096)
}

impl CuframesHeader {
    /// Reads the header from the start of `bytes` (unaligned copy).
    pub fn read(bytes: &[u8]) -> Result<CuframesHeader> {
        if bytes.len() < FC_CUFRAMES_HEADER_SIZE {
            return Err(Error::Truncated(format!(
                "{} bytes, a cuframes header needs {FC_CUFRAMES_HEADER_SIZE}",
                bytes.len()
            )));
        }
        // SAFETY: length checked; the struct is plain old data.
        Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const CuframesHeader) })
    }

    /// Checks every field a subscriber relies on against the file's real length; a header
    /// that lies gives `Corrupt`, never an out-of-range access later.
    pub fn validate(&self, real_len: u64) -> Result<FrameGeometry> {
        if self.magic != CUFRAMES_MAGIC {
            return Err(if &self.magic[..2] == b"FC" {
                Error::WrongKind("not a cuframes control block".into())
            } else {
                Error::BadMagic
            });
        }
        if self.proto_version != FC_CUFRAMES_PROTO_VERSION {
            return Err(Error::Version {
                found: self.proto_version,
                supported: FC_CUFRAMES_PROTO_VERSION,
            });
        }
        let corrupt = |what: &str| Err(Error::Corrupt(format!("cuframes header: {what}")));
        if (self.header_size as usize) < FC_CUFRAMES_HEADER_SIZE {
            return corrupt("header_size");
        }
        if self.file_size != real_len {
            return Err(Error::Truncated(format!(
                "header says {} bytes, file has {real_len}",
                self.file_size
            )));
        }
        let n = self.buffer_count;
        let m = self.max_subscribers;
        if !(FC_CUFRAMES_MIN_BUFFERS..=FC_CUFRAMES_MAX_BUFFERS).contains(&n) {
            return corrupt("buffer_count");
        }
        if !(1..=FC_CUFRAMES_MAX_SUBSCRIBERS).contains(&m) {
            return corrupt("max_subscribers");
        }
        if (self.slot_desc_size as usize) < FC_CUFRAMES_SLOT_DESC_SIZE
            || (self.sub_slot_size as usize) < FC_CUFRAMES_SUB_SLOT_SIZE
            || !self.slot_desc_size.is_multiple_of(64)
            || !self.sub_slot_size.is_multiple_of(64)
        {
            return corrupt("element sizes");
        }
        let slots_end =
            u64::from(self.slots_offset) + u64::from(self.slot_desc_size) * u64::from(n);
        let subs_end = u64::from(self.subs_offset) + u64::from(self.sub_slot_size) * u64::from(m);
        if (self.slots_offset as usize) < FC_CUFRAMES_HEADER_SIZE
            || !self.slots_offset.is_multiple_of(64)
            || !self.subs_offset.is_multiple_of(64)
            || u64::from(self.subs_offset) < slots_end
            || subs_end > real_len
        {
            return corrupt("array offsets");
        }
        if self.backend != FC_CUFRAMES_BACKEND_CUDA && self.backend != FC_CUFRAMES_BACKEND_HOST {
            return corrupt("backend");
        }
        if get_cstr(&self.key).is_none() {
            return corrupt("key");
        }
        let format = PixelFormat::from_fourcc(self.format)
            .map_err(|_| Error::Corrupt("cuframes header: format".into()))?;
        let (mut g, size) = pool_geometry(format, self.width, self.height)
            .map_err(|_| Error::Corrupt("cuframes header: size".into()))?;
        // The publisher may pad more than we would; accept any consistent layout that fits.
        g.strides = self.pitches;
        for i in 0..4 {
            g.offsets[i] = u32::try_from(self.plane_offsets[i])
                .map_err(|_| Error::Corrupt("cuframes header: plane offset".into()))?;
        }
        g.frame_size = format
            .planes(self.width.into(), self.height.into())
            .iter()
            .zip(g.strides)
            .map(|(&(_, rows), stride)| u64::from(stride) * rows)
            .sum();
        if self.plane_count != g.plane_count || !g.is_consistent() {
            return corrupt("plane layout");
        }
        if self.buffer_size < g.frame_size
            || !self.buffer_size.is_multiple_of(FC_CUFRAMES_BUFFER_ALIGN)
            || self.buffer_size > size.max(g.frame_size) * 4
        {
            return corrupt("buffer_size");
        }
        Ok(g)
    }
}

/// Reads the `seq << 6 | buffer` word into its parts.
pub const fn split_latest(v: u64) -> (u64, u32) {
    (v >> 6, (v & 63) as u32)
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// `(name, offset, size)` of every field of `$t`, for the conformance tests.
macro_rules! fields {
    ($t:ty; $($f:ident),* $(,)?) => {
        vec![$((stringify!($f), offset_of!($t, $f), field_size::<$t, _>(|x| &x.$f))),*]
    };
}

/// `(field, offset, size)` rows of one struct.
pub type FieldTable = Vec<(&'static str, usize, usize)>;

/// Layout tables of the four structs (`fc_cuframes_header`, `_slot_desc`, `_frame_meta`,
/// `_sub_slot`), compared by the tests with C's `offsetof` and with docs/CUFRAMES.md.
pub fn field_tables() -> Vec<(&'static str, FieldTable)> {
    vec![
        (
            "fc_cuframes_header",
            fields!(CuframesHeader; magic, proto_version, header_size, file_size, buffer_count,
                max_subscribers, slot_desc_size, sub_slot_size, slots_offset, subs_offset, format,
                width, height, plane_count, pitches, plane_offsets, buffer_size, backend,
                publisher_pid, device_uuid, epoch, policy, reserved0, key, time_base_num,
                time_base_den, rate_num, rate_den, reserved1, state,
                notify, latest, published, skipped, revoked, reserved2),
        ),
        (
            "fc_cuframes_slot_desc",
            fields!(CuSlotDesc; seq, holders, readers, reserved0, meta, reserved1),
        ),
        (
            "fc_cuframes_frame_meta",
            fields!(CuFrameMeta; seq, pts, duration, publish_ns, flags, buffer, width, height,
                format, reserved),
        ),
        (
            "fc_cuframes_sub_slot",
            fields!(CuSubscriberSlot; state, pid, attached_ns, frames, missed, revoked, torn,
                last_seq, reserved),
        ),
    ]
}

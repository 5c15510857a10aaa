//! The frame ring: one writer, any number of read-only readers of raw video frames in a
//! shared-memory slot file.
//!
//! - [`Producer`] creates the slot and publishes frames; it never waits for readers.
//! - [`Consumer`] maps the slot read-only and reads frames with its own cursor, sequentially or
//!   always the latest; it detects frames overwritten during a read (per-frame seqlock), reports a
//!   dead writer and re-attaches when a new writer re-creates the slot.
//!
//! The byte layout is in [`layout`] and `docs/PROTOCOL.md`.

mod consumer;
pub mod layout;
mod producer;

use std::sync::atomic::{AtomicU32, AtomicU64};

pub(crate) use consumer::deadline_after;
pub use consumer::{Consumer, ConsumerConfig, Frame, FrameInfo, ReadMode, StartAt, Stats};
pub use layout::{FrameDesc, FrameRingHeader, RingLayout, FC_FRAME_DISCONTINUITY};
pub use producer::{FrameMeta, FrameWriter, Producer, SlotConfig};

use crate::error::Result;
use crate::lifecycle::RingKind;
use crate::slot::{Mapping, SlotKind};

/// A mapped slot file plus its validated layout; the typed accessors every ring user needs.
struct Ring {
    map: Mapping,
    layout: RingLayout,
}

impl RingKind for Ring {
    const KIND: SlotKind = SlotKind::Frames;
    const HEADER_SIZE: usize = layout::HEADER_SIZE;
    const WRITER_PID: usize = std::mem::offset_of!(FrameRingHeader, writer_pid);
    const STATE: usize = std::mem::offset_of!(FrameRingHeader, state);
    const STATE_CLOSED: u32 = layout::STATE_CLOSED;
    const WAKE: usize = std::mem::offset_of!(FrameRingHeader, wake);
    const WRITE_SEQ: usize = std::mem::offset_of!(FrameRingHeader, write_seq);

    fn open(map: Mapping) -> Result<Ring> {
        let layout = layout::validate(map.bytes(), map.len() as u64)?;
        Ok(Ring { map, layout })
    }

    fn mapping(&self) -> &Mapping {
        &self.map
    }
}

impl Ring {
    fn header(&self) -> *mut FrameRingHeader {
        self.map.ptr().cast()
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.map.atomic_u64(offset)
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.map.atomic_u32(offset)
    }

    fn write_seq(&self) -> &AtomicU64 {
        self.atomic_u64(Self::WRITE_SEQ)
    }

    fn wake(&self) -> &AtomicU32 {
        self.atomic_u32(Self::WAKE)
    }

    fn last_publish_ns(&self) -> &AtomicU64 {
        self.atomic_u64(std::mem::offset_of!(FrameRingHeader, last_publish_ns))
    }

    /// Slot index of frame `seq`.
    fn slot_of(&self, seq: u64) -> u32 {
        (seq % u64::from(self.layout.depth)) as u32
    }

    /// The seqlock word of frame slot `i`.
    fn lock(&self, i: u32) -> &AtomicU64 {
        self.atomic_u64(self.layout.desc_at(i))
    }

    fn desc_ptr(&self, i: u32) -> *mut FrameDesc {
        // SAFETY: validated layout keeps every descriptor inside the mapping.
        unsafe { self.map.ptr().add(self.layout.desc_at(i)).cast() }
    }

    fn data_ptr(&self, i: u32) -> *mut u8 {
        // SAFETY: validated layout keeps every frame slot inside the mapping.
        unsafe { self.map.ptr().add(self.layout.data_at(i)) }
    }

    fn frame_size(&self) -> usize {
        self.layout.geometry.frame_size as usize
    }
}

/// Seqlock value of item `seq` once complete (shared by the rings).
pub(crate) const fn complete(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(2)
}

/// Seqlock value of item `seq` while it is being written.
pub(crate) const fn writing(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(1)
}

/// What `framecache ls`, `fc_slot_info` and `fc_slot_list` report about a frame slot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SlotInfo {
    /// Slot id.
    pub id: String,
    /// Source-type label.
    pub source_type: String,
    /// Pixel format FourCC as text.
    pub format: String,
    /// Pixel format FourCC.
    pub fourcc: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate numerator.
    pub fps_num: u32,
    /// Frame rate denominator.
    pub fps_den: u32,
    /// Ring depth.
    pub depth: u32,
    /// Bytes per frame.
    pub frame_size: u64,
    /// Frames published by the current writer.
    pub frames_written: u64,
    /// Pid recorded by the writer that created the slot.
    pub writer_pid: u32,
    /// Whether that writer is alive.
    pub writer_alive: bool,
    /// Creation time, CLOCK_REALTIME ns.
    pub epoch_ns: u64,
    /// CLOCK_MONOTONIC ns of the last publish (0 = none yet).
    pub last_publish_ns: u64,
    /// Free labels, `key=value` per line.
    pub labels: String,
}

/// Inspects frame slot `id` under `root` without changing anything.
pub fn slot_info(root: &std::path::Path, id: &str) -> crate::Result<SlotInfo> {
    let c = Consumer::open_in(root, id, ConsumerConfig::default())?;
    let h = c.header();
    let alive = c.writer_alive();
    Ok(SlotInfo {
        id: id.to_string(),
        source_type: crate::slot::get_cstr(&h.source_type)
            .unwrap_or_default()
            .to_string(),
        format: crate::format::fourcc_str(h.fourcc),
        fourcc: h.fourcc,
        width: h.width,
        height: h.height,
        fps_num: h.fps_num,
        fps_den: h.fps_den,
        depth: h.depth,
        frame_size: h.frame_size,
        frames_written: c.writer_frames(),
        writer_pid: h.writer_pid,
        writer_alive: alive,
        epoch_ns: h.epoch_ns,
        last_publish_ns: c.last_publish_ns(),
        labels: crate::slot::get_cstr(&h.labels)
            .unwrap_or_default()
            .to_string(),
    })
}

/// Every frame slot under `root`: `(id, info or the error that made it unreadable)`.
pub fn list_slots(root: &std::path::Path) -> crate::Result<Vec<(String, crate::Result<SlotInfo>)>> {
    crate::lifecycle::list(root, SlotKind::Frames, slot_info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_slots_keep_the_lifecycle_contract() {
        crate::lifecycle::check_contract::<Ring>("frames", |root, id, keep| {
            let mut c = SlotConfig::new(crate::PixelFormat::Uyvy, 64, 16);
            c.keep_on_close = keep;
            Ok(Producer::create_in(root, id, &c)?.ring)
        });
    }
}

//! The packet ring: variable-length encoded access units (H.264/HEVC/AAC/Opus/...) of up to 8
//! elementary streams, with their codec parameters in the shared header.
//!
//! - [`PacketWriter`] publishes packets into a byte ring (payloads never wrap) described by a
//!   descriptor ring, and codec parameters with a generation counter.
//! - [`PacketReader`] starts at the most recent keyframe, reads every packet in order, detects
//!   packets overwritten under it (`PacketOverrun`), and when it falls behind moves to the next
//!   keyframe, never mid-GOP.
//!
//! The byte layout is in [`layout`] and `docs/PROTOCOL.md` ("Packet ring").

mod follow;
pub mod layout;
mod reader;
mod writer;

use std::mem::offset_of;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

pub use follow::{Followed, Follower};
pub use layout::*;
pub use reader::{
    PacketInfo, PacketReader, PacketReaderConfig, PacketReaderStats, PacketStart, PacketView,
    StreamInfo,
};
pub use writer::{Packet, PacketSlotConfig, PacketWriter, StreamConfig};

use crate::error::{Error, Result};
use crate::lifecycle::RingKind;
use crate::ring::{complete, writing};
use crate::slot::{Mapping, SlotKind};

/// A mapped packet slot and its validated layout.
struct Ring {
    map: Mapping,
    layout: PacketLayout,
}

impl RingKind for Ring {
    const KIND: SlotKind = SlotKind::Packets;
    const HEADER_SIZE: usize = PACKET_HEADER_SIZE;
    const WRITER_PID: usize = offset_of!(PacketRingHeader, writer_pid);
    const STATE: usize = offset_of!(PacketRingHeader, state);
    const STATE_CLOSED: u32 = crate::ring::layout::STATE_CLOSED;
    const WAKE: usize = offset_of!(PacketRingHeader, wake);
    const WRITE_SEQ: usize = offset_of!(PacketRingHeader, write_seq);

    fn open(map: Mapping) -> Result<Ring> {
        let layout = validate(map.bytes(), map.len() as u64)?;
        Ok(Ring { map, layout })
    }

    fn mapping(&self) -> &Mapping {
        &self.map
    }

    fn missing(id: &str) -> Error {
        Error::NoPacketRing(id.to_string())
    }
}

impl Ring {
    fn atomic(&self, offset: usize) -> &AtomicU64 {
        self.map.atomic_u64(offset)
    }

    fn wake(&self) -> &AtomicU32 {
        self.map.atomic_u32(Self::WAKE)
    }

    fn stream(&self, i: u32) -> StreamDesc {
        // SAFETY: the stream table lies inside the validated mapping.
        unsafe { std::ptr::read_volatile(self.map.ptr().add(self.layout.stream_at(i)).cast()) }
    }

    fn stream_gen(&self, i: u32) -> &AtomicU32 {
        self.map
            .atomic_u32(self.layout.stream_at(i) + offset_of!(StreamDesc, params_gen))
    }

    fn desc_ptr(&self, i: u32) -> *mut PacketDesc {
        // SAFETY: descriptor slots lie inside the validated mapping.
        unsafe { self.map.ptr().add(self.layout.desc_at(i)).cast() }
    }

    fn desc_index(&self, seq: u64) -> u32 {
        (seq % u64::from(self.layout.desc_count)) as u32
    }

    /// The descriptor of packet `seq` if it is complete, sane and its payload is still in the
    /// ring. Fields are checked against the layout, so a damaged file cannot point outside it.
    fn desc(&self, seq: u64) -> Option<PacketDesc> {
        let i = self.desc_index(seq);
        let lock = self.map.atomic_u64(self.layout.desc_at(i));
        let v1 = lock.load(Ordering::Acquire);
        if v1 != complete(seq) {
            return None;
        }
        // SAFETY: inside the mapping; validated by the seqlock below.
        let d: PacketDesc = unsafe { std::ptr::read_volatile(self.desc_ptr(i)) };
        fence(Ordering::Acquire);
        let l = &self.layout;
        let sane = lock.load(Ordering::Relaxed) == v1
            && d.seq == seq
            && d.stream < l.stream_count
            && d.size > 0
            && u64::from(d.size) <= l.max_packet
            && d.pos % l.payload_size + u64::from(d.size) <= l.payload_size;
        (sane && self.payload_intact(d.pos)).then_some(d)
    }

    /// Whether the payload that starts at absolute position `pos` has not been reclaimed.
    fn payload_intact(&self, pos: u64) -> bool {
        let reserve = self
            .atomic(offset_of!(PacketRingHeader, write_reserve))
            .load(Ordering::Acquire);
        reserve <= pos.saturating_add(self.layout.payload_size)
    }

    /// Re-checks a delivered packet after its payload was used.
    fn intact(&self, seq: u64, pos: u64) -> bool {
        fence(Ordering::Acquire);
        let lock = self
            .map
            .atomic_u64(self.layout.desc_at(self.desc_index(seq)));
        lock.load(Ordering::Relaxed) == complete(seq) && self.payload_intact(pos)
    }
}

/// What `framecache ls` and `fc_slot_list` report about a packet slot.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PacketSlotInfo {
    /// Slot id.
    pub id: String,
    /// Source-type label.
    pub source_type: String,
    /// Streams.
    pub streams: Vec<StreamInfo>,
    /// Packets published.
    pub packets_written: u64,
    /// Payload bytes published.
    pub bytes_published: u64,
    /// Payload ring size.
    pub payload_size: u64,
    /// Writer pid.
    pub writer_pid: u32,
    /// Whether the writer is alive.
    pub writer_alive: bool,
    /// Creation time, CLOCK_REALTIME ns.
    pub epoch_ns: u64,
    /// CLOCK_MONOTONIC ns of the last publish.
    pub last_publish_ns: u64,
    /// Labels.
    pub labels: String,
}

/// Timestamp `t` in timebase `tb` (num, den) expressed in units of 1/`hz` s, rounded toward
/// zero; [`FC_NOPTS`] (and a zero denominator) stay [`FC_NOPTS`].
pub fn rescale(t: i64, tb: (u32, u32), hz: i64) -> i64 {
    if t == FC_NOPTS || tb.1 == 0 {
        return FC_NOPTS;
    }
    (i128::from(t) * i128::from(hz) * i128::from(tb.0) / i128::from(tb.1)) as i64
}

/// Inspects packet slot `id` under `root`.
pub fn slot_info(root: &std::path::Path, id: &str) -> crate::Result<PacketSlotInfo> {
    let r = PacketReader::open_in(
        root,
        id,
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )?;
    let h = r.header();
    Ok(PacketSlotInfo {
        id: id.to_string(),
        source_type: crate::slot::get_cstr(&h.source_type)
            .unwrap_or_default()
            .to_string(),
        streams: r.streams(),
        packets_written: r.writer_packets(),
        bytes_published: r.bytes_published(),
        payload_size: h.payload_size,
        writer_pid: h.writer_pid,
        writer_alive: r.writer_alive(),
        epoch_ns: h.epoch_ns,
        last_publish_ns: r.last_publish_ns(),
        labels: crate::slot::get_cstr(&h.labels)
            .unwrap_or_default()
            .to_string(),
    })
}

/// Every packet slot under `root`: `(id, info or the error that made it unreadable)`.
pub fn list_slots(
    root: &std::path::Path,
) -> crate::Result<Vec<(String, crate::Result<PacketSlotInfo>)>> {
    crate::lifecycle::list(root, SlotKind::Packets, slot_info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_slots_keep_the_lifecycle_contract() {
        crate::lifecycle::check_contract::<Ring>("packets", |root, id, keep| {
            let mut c = PacketSlotConfig::new(vec![StreamConfig::new(FC_CODEC_H264)]);
            c.payload_size = 1 << 20;
            c.keep_on_close = keep;
            Ok(PacketWriter::create_in(root, id, &c)?.ring)
        });
    }

    #[test]
    fn rescale_keeps_nopts_and_converts() {
        assert_eq!(rescale(1000, (1, 1000), 90_000), 90_000);
        assert_eq!(rescale(90_000, (1, 90_000), 1000), 1000);
        assert_eq!(rescale(-3, (1, 1000), 90_000), -270);
        assert_eq!(rescale(FC_NOPTS, (1, 1000), 90_000), FC_NOPTS);
        assert_eq!(rescale(5, (1, 0), 90_000), FC_NOPTS);
    }
}

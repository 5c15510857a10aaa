//! The reader side of the packet ring.

use std::mem::offset_of;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use super::layout::*;
use super::{complete, Ring};
use crate::error::{Error, Result};
use crate::lifecycle::{Attached, Waited};
use crate::ring::deadline_after;
use crate::slot::{self, get_cstr};

/// Where a new packet reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PacketStart {
    /// At the most recent keyframe of the primary stream (or the next one if none is in the
    /// ring), so a decoder can start at once. Audio follows from the same point.
    #[default]
    Keyframe,
    /// At the oldest keyframe still in the ring.
    OldestKeyframe,
    /// At the next packet published, whatever it is.
    Next,
}

/// Reader options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketReaderConfig {
    /// Start position.
    pub start: PacketStart,
}

/// A stream as described in the slot header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StreamInfo {
    /// Index.
    pub index: u32,
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// Codec name (`h264`, `aac`, ...).
    pub codec_name: &'static str,
    /// `FC_MEDIA_*`.
    pub media: u32,
    /// Timebase (num, den).
    pub timebase: (u32, u32),
    /// Video width.
    pub width: u32,
    /// Video height.
    pub height: u32,
    /// Video frame rate.
    pub fps: (u32, u32),
    /// Audio sample rate.
    pub sample_rate: u32,
    /// Audio channels.
    pub channels: u32,
    /// Current codec-parameter generation (0 = none).
    pub params_gen: u32,
    /// Tag.
    pub tag: String,
}

/// Metadata of a delivered packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketInfo {
    /// Sequence number.
    pub seq: u64,
    /// Stream index.
    pub stream: u32,
    /// Presentation timestamp.
    pub pts: i64,
    /// Decoding timestamp.
    pub dts: i64,
    /// `FC_PACKET_*` flags.
    pub flags: u32,
    /// Payload bytes.
    pub size: u32,
    /// Codec-parameter generation that applies.
    pub params_gen: u32,
    /// Publish time, CLOCK_MONOTONIC ns.
    pub publish_ns: u64,
    /// Absolute payload position (for overrun checks of views).
    pub pos: u64,
    /// Packets skipped between the previous delivered packet and this one.
    pub skipped: u64,
}

/// Counters of one packet reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PacketReaderStats {
    /// Packets delivered.
    pub packets_read: u64,
    /// Packets passed over (fallen behind, waiting for a keyframe, overruns).
    pub packets_skipped: u64,
    /// Reads found overwritten (copies returning `PacketOverrun`, failed view checks).
    pub overruns: u64,
    /// Re-attachments to a re-created slot.
    pub reattached: u64,
    /// Whether the writer was alive at the last check.
    pub writer_alive: bool,
    /// Packets the writer has published.
    pub writer_packets: u64,
    /// Packets published but not yet read by this reader.
    pub lag: u64,
    /// Publish→read latency of the last packet, ns.
    pub latency_last_ns: u64,
    /// Largest publish→read latency, ns.
    pub latency_max_ns: u64,
}

/// A zero-copy view of a packet's payload in shared memory; check [`PacketView::is_intact`]
/// after using it.
pub struct PacketView<'a> {
    /// Metadata.
    pub info: PacketInfo,
    data: &'a [u8],
    ring: &'a Ring,
}

impl PacketView<'_> {
    /// The payload.
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// Whether neither the descriptor nor the payload bytes were overwritten since delivery.
    pub fn is_intact(&self) -> bool {
        self.ring.intact(self.info.seq, self.info.pos)
    }
}

/// A reader of a packet slot (read-only mapping, no registration).
pub struct PacketReader {
    ring: Attached<Ring>,
    cursor: u64,
    need_key: bool,
    stats: PacketReaderStats,
}

impl std::fmt::Debug for PacketReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketReader")
            .field("id", &self.ring.id())
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl PacketReader {
    /// Opens packet slot `id` under the root directory.
    pub fn open(id: &str, config: PacketReaderConfig) -> Result<PacketReader> {
        Self::open_in(&slot::root_dir(), id, config)
    }

    /// As [`PacketReader::open`], under an explicit root.
    pub fn open_in(root: &Path, id: &str, config: PacketReaderConfig) -> Result<PacketReader> {
        let mut r = PacketReader {
            ring: Attached::open(root, id)?,
            cursor: 0,
            need_key: false,
            stats: PacketReaderStats::default(),
        };
        let ws = r.writer_packets();
        match config.start {
            PacketStart::Next => r.cursor = ws,
            PacketStart::OldestKeyframe => {
                r.resync(0, ws);
                r.stats.packets_skipped = 0;
            }
            PacketStart::Keyframe => {
                let lk = r
                    .ring
                    .atomic(offset_of!(PacketRingHeader, last_keyframe))
                    .load(Ordering::Acquire);
                if lk > 0 && r.ring.desc(lk - 1).is_some() {
                    r.cursor = lk - 1;
                } else {
                    r.cursor = ws;
                    r.need_key = true;
                }
            }
        }
        r.stats.writer_alive = r.writer_alive();
        Ok(r)
    }

    /// The streams of the slot.
    pub fn streams(&self) -> Vec<StreamInfo> {
        (0..self.ring.layout.stream_count)
            .map(|i| {
                let s = self.ring.stream(i);
                StreamInfo {
                    index: i,
                    codec: s.codec,
                    codec_name: codec_name(s.codec),
                    media: s.media,
                    timebase: (s.timebase_num, s.timebase_den),
                    width: s.width,
                    height: s.height,
                    fps: (s.fps_num, s.fps_den),
                    sample_rate: s.sample_rate,
                    channels: s.channels,
                    params_gen: self.ring.stream_gen(i).load(Ordering::Acquire),
                    tag: get_cstr(&s.tag).unwrap_or_default().to_string(),
                }
            })
            .collect()
    }

    /// A copy of the header as mapped.
    pub fn header(&self) -> PacketRingHeader {
        // SAFETY: validated mapping.
        unsafe { std::ptr::read_volatile(self.ring.map.ptr().cast::<PacketRingHeader>()) }
    }

    /// Layout of the attached slot.
    pub fn layout(&self) -> &PacketLayout {
        &self.ring.layout
    }

    /// Packets the writer has published.
    pub fn writer_packets(&self) -> u64 {
        self.ring
            .atomic(offset_of!(PacketRingHeader, write_seq))
            .load(Ordering::Acquire)
    }

    /// Payload bytes the writer has published.
    pub fn bytes_published(&self) -> u64 {
        self.ring
            .atomic(offset_of!(PacketRingHeader, bytes_published))
            .load(Ordering::Relaxed)
    }

    /// CLOCK_MONOTONIC ns of the writer's last publish.
    pub fn last_publish_ns(&self) -> u64 {
        self.ring
            .atomic(offset_of!(PacketRingHeader, last_publish_ns))
            .load(Ordering::Relaxed)
    }

    /// Whether a writer holds the slot.
    pub fn writer_alive(&self) -> bool {
        self.ring.writer_alive()
    }

    /// Counters so far.
    pub fn stats(&mut self) -> PacketReaderStats {
        self.stats.writer_alive = self.writer_alive();
        self.stats.writer_packets = self.writer_packets();
        self.stats.lag = self.stats.writer_packets.saturating_sub(self.cursor);
        self.stats
    }

    /// The codec parameters of `stream`, generation `gen` (0 = the current one), with the
    /// generation they are. `NoCodecParams` if the stream has none or that generation is no
    /// longer kept.
    pub fn codec_params(&self, stream: u32, gen: u32) -> Result<(u32, Vec<u8>)> {
        let l = self.ring.layout;
        if stream >= l.stream_count {
            return Err(Error::InvalidArg(format!(
                "stream {stream} of {}",
                l.stream_count
            )));
        }
        let gen = if gen == 0 {
            self.ring.stream_gen(stream).load(Ordering::Acquire)
        } else {
            gen
        };
        if gen == 0 {
            return Err(Error::NoCodecParams(format!("stream {stream} has none")));
        }
        let at = l.params_at(stream, gen);
        let lock = self.ring.map.atomic_u64(at);
        let v1 = lock.load(Ordering::Acquire);
        if v1 != complete(u64::from(gen)) {
            return Err(Error::NoCodecParams(format!(
                "stream {stream} generation {gen} is not available"
            )));
        }
        // SAFETY: the slot lies inside the mapping; the size is bounded by the capacity below.
        let (size, data) = unsafe {
            let p = self.ring.map.ptr().add(at);
            let size = (std::ptr::read_volatile(p.add(8).cast::<u32>()) as usize)
                .min(l.params_capacity as usize);
            (
                size,
                std::slice::from_raw_parts(p.add(PARAMS_SLOT_HEADER), size).to_vec(),
            )
        };
        fence(Ordering::Acquire);
        if lock.load(Ordering::Relaxed) != v1 || data.len() != size {
            return Err(Error::NoCodecParams(format!(
                "stream {stream} generation {gen} changed while read"
            )));
        }
        Ok((gen, data))
    }

    /// Waits up to `timeout` for the next packet and returns a zero-copy view of its payload.
    pub fn next(&mut self, timeout: Duration) -> Result<PacketView<'_>> {
        let info = self.advance(timeout)?;
        let off =
            (self.ring.layout.payload_offset + info.pos % self.ring.layout.payload_size) as usize;
        // SAFETY: the descriptor was validated: the payload lies inside the ring.
        let data =
            unsafe { std::slice::from_raw_parts(self.ring.map.ptr().add(off), info.size as usize) };
        Ok(PacketView {
            info,
            data,
            ring: &self.ring,
        })
    }

    /// Reports that the view of packet `info` turned out overwritten ([`PacketView::is_intact`]
    /// was false): counts it as an overrun and skipped instead of read, and moves the reader to
    /// the next keyframe, so a decoder fed by this reader never continues mid-GOP.
    pub fn overrun(&mut self, info: &PacketInfo) {
        self.stats.overruns += 1;
        self.stats.packets_read = self.stats.packets_read.saturating_sub(1);
        self.stats.packets_skipped += 1;
        let ws = self.writer_packets();
        self.resync(info.seq + 1, ws);
    }

    /// Checks a view this reader handed out (the C API's `fc_packet_check`); on failure as
    /// [`PacketReader::overrun`].
    #[doc(hidden)]
    pub fn check_view(&mut self, info: &PacketInfo) -> bool {
        let ok = self.ring.intact(info.seq, info.pos);
        if !ok {
            self.overrun(info);
        }
        ok
    }

    /// As [`PacketReader::next_copy`] into a vector that grows to fit the packet (which is
    /// then read again, not lost); a vector that is already large enough is only overwritten.
    pub fn next_vec(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<PacketInfo> {
        loop {
            match self.next_copy(buf, timeout) {
                Err(Error::BufferTooSmall { need, .. }) => buf.resize(need, 0),
                r => return r,
            }
        }
    }

    /// Waits for the next packet and copies its payload into `buf`. A packet overwritten
    /// during the copy gives `PacketOverrun` (the reader then moves to the next keyframe);
    /// `BufferTooSmall` leaves the packet to be read again with a bigger buffer.
    pub fn next_copy(&mut self, buf: &mut [u8], timeout: Duration) -> Result<PacketInfo> {
        let (seq, desc, skipped) = self.find(timeout)?;
        if buf.len() < desc.size as usize {
            // The packet stays at the cursor; what was skipped to reach it stays counted.
            self.stats.packets_skipped += skipped;
            return Err(Error::BufferTooSmall {
                need: desc.size as usize,
                got: buf.len(),
            });
        }
        let l = self.ring.layout;
        let off = (l.payload_offset + desc.pos % l.payload_size) as usize;
        // SAFETY: validated descriptor; buf holds at least size bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ring.map.ptr().add(off),
                buf.as_mut_ptr(),
                desc.size as usize,
            )
        };
        if !self.ring.intact(seq, desc.pos) {
            self.stats.overruns += 1;
            self.stats.packets_skipped += skipped + 1;
            let ws = self.writer_packets();
            self.resync(seq + 1, ws);
            return Err(Error::PacketOverrun);
        }
        Ok(self.deliver(seq, &desc, skipped))
    }

    fn advance(&mut self, timeout: Duration) -> Result<PacketInfo> {
        let (seq, desc, skipped) = self.find(timeout)?;
        Ok(self.deliver(seq, &desc, skipped))
    }

    fn deliver(&mut self, seq: u64, d: &PacketDesc, skipped: u64) -> PacketInfo {
        self.cursor = seq + 1;
        self.stats.packets_read += 1;
        self.stats.packets_skipped += skipped;
        let lat = slot::monotonic_ns().saturating_sub(d.publish_ns);
        self.stats.latency_last_ns = lat;
        self.stats.latency_max_ns = self.stats.latency_max_ns.max(lat);
        PacketInfo {
            seq,
            stream: d.stream,
            pts: d.pts,
            dts: d.dts,
            flags: d.flags,
            size: d.size,
            params_gen: d.params_gen,
            publish_ns: d.publish_ns,
            pos: d.pos,
            skipped,
        }
    }

    /// Moves the cursor to the first intact keyframe of the primary stream at or after `from`;
    /// without one, waits for the next keyframe. Counts what it passes over.
    fn resync(&mut self, from: u64, ws: u64) {
        let oldest = ws.saturating_sub(u64::from(self.ring.layout.desc_count) - 1);
        let start = from.max(oldest);
        let primary = self.ring.layout.primary_stream;
        let found = (start..ws).find(|&s| {
            self.ring
                .desc(s)
                .is_some_and(|d| d.stream == primary && d.flags & FC_PACKET_KEYFRAME != 0)
        });
        let to = found.unwrap_or(ws);
        self.stats.packets_skipped += to.saturating_sub(from.min(to));
        self.cursor = to;
        self.need_key = found.is_none();
    }

    /// Finds the next packet to deliver: `(seq, descriptor, skipped)`; handles waiting,
    /// falling behind, keyframe waits, writer death and re-attach.
    fn find(&mut self, timeout: Duration) -> Result<(u64, PacketDesc, u64)> {
        let deadline = deadline_after(timeout);
        let mut quiet = false;
        let skipped_before = self.stats.packets_skipped;
        loop {
            let ws = self.writer_packets();
            if self.cursor < ws {
                match self.ring.desc(self.cursor) {
                    Some(d) if self.need_key => {
                        if d.stream == self.ring.layout.primary_stream
                            && d.flags & FC_PACKET_KEYFRAME != 0
                        {
                            self.need_key = false;
                        } else {
                            self.cursor += 1;
                            self.stats.packets_skipped += 1;
                            continue;
                        }
                        let skipped = self.take_skipped(skipped_before);
                        return Ok((self.cursor, d, skipped));
                    }
                    Some(d) => {
                        let skipped = self.take_skipped(skipped_before);
                        return Ok((self.cursor, d, skipped));
                    }
                    // Overwritten (fallen behind) or damaged: go to the next keyframe.
                    None => {
                        let c = self.cursor;
                        self.resync(c, ws);
                        continue;
                    }
                }
            }
            let mut alive = self.stats.writer_alive;
            let waited = self.ring.wait(ws, deadline, &mut quiet, &mut alive);
            self.stats.writer_alive = alive;
            if waited? == Waited::Reattached {
                // A new writer re-created the slot: read it from its first keyframe.
                self.cursor = 0;
                self.need_key = true;
                self.stats.reattached += 1;
            }
        }
    }

    /// Skips counted since `before` are reported with the packet, not double-counted.
    fn take_skipped(&mut self, before: u64) -> u64 {
        let n = self.stats.packets_skipped - before;
        self.stats.packets_skipped = before;
        n
    }
}

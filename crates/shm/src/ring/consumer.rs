//! The reader side of the frame ring.

use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use super::layout::FrameRingHeader;
use super::{complete, FrameDesc, Ring};
use crate::error::{Error, Result};
use crate::format::FrameGeometry;
use crate::lifecycle::{Attached, Waited};
use crate::slot::{self, get_cstr};

/// How a reader moves through the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Every frame in order. A reader that falls a whole ring behind jumps to the oldest frame
    /// still valid and counts what it skipped.
    #[default]
    Sequential,
    /// Always the newest frame, counting the frames skipped in between.
    Latest,
}

/// Where a new reader starts. After a re-attach to a re-created slot the reader always starts
/// at the new writer's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The newest published frame (a live join).
    #[default]
    Newest,
    /// The oldest frame still in the ring.
    Oldest,
    /// The next frame the writer publishes.
    Next,
}

/// Reader options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Cursor mode.
    pub mode: ReadMode,
    /// Start position.
    pub start: StartAt,
}

/// Counters of one reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Stats {
    /// Frames delivered (views and copies).
    pub frames_read: u64,
    /// Frames the cursor passed over without delivering (falling behind, `Latest` mode, or a
    /// copy that was overwritten while it was taken).
    pub frames_skipped: u64,
    /// Reads found overwritten during the read (copy retries and failed view checks).
    pub overwritten: u64,
    /// Times the reader re-attached to a re-created slot.
    pub reattached: u64,
    /// Whether the writer was alive at the last check.
    pub writer_alive: bool,
    /// Publish→read latency of the last frame, ns.
    pub latency_last_ns: u64,
    /// Mean publish→read latency, ns.
    pub latency_avg_ns: u64,
    /// Largest publish→read latency seen, ns.
    pub latency_max_ns: u64,
    /// Frames the writer has published into the slot currently attached.
    pub writer_frames: u64,
}

/// Metadata of a delivered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// Sequence number (0 = the writer's first frame).
    pub seq: u64,
    /// Presentation timestamp.
    pub pts: i64,
    /// Capture time, CLOCK_REALTIME ns.
    pub capture_ns: u64,
    /// Publish time, CLOCK_MONOTONIC ns.
    pub publish_ns: u64,
    /// Bytes of frame data.
    pub size: u32,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
    /// Frames skipped between the previous delivered frame and this one.
    pub skipped: u64,
}

/// A zero-copy view of a frame in shared memory. The writer may overwrite it at any time once
/// the ring wraps: use the bytes, then call [`Frame::is_intact`]; only if it says `true` were
/// they the frame of [`Frame::info`].
pub struct Frame<'a> {
    /// Metadata.
    pub info: FrameInfo,
    geometry: FrameGeometry,
    data: &'a [u8],
    lock: &'a std::sync::atomic::AtomicU64,
}

impl Frame<'_> {
    /// The frame's bytes (planes at the geometry's offsets).
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// Geometry of this frame (that of the slot it came from).
    pub fn geometry(&self) -> &FrameGeometry {
        &self.geometry
    }

    /// Whether the frame was not overwritten since it was handed out.
    pub fn is_intact(&self) -> bool {
        fence(Ordering::Acquire);
        self.lock.load(Ordering::Relaxed) == complete(self.info.seq)
    }
}

/// A reader of a frame slot. Readers map the slot read-only and never write to it.
pub struct Consumer {
    ring: Attached<Ring>,
    config: ConsumerConfig,
    cursor: u64,
    stats: Stats,
    latency_sum: u128,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("id", &self.ring.id())
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Consumer {
    /// Opens slot `id` under the root directory for reading.
    pub fn open(id: &str, config: ConsumerConfig) -> Result<Consumer> {
        Self::open_in(&slot::root_dir(), id, config)
    }

    /// As [`Consumer::open`], under an explicit root directory.
    pub fn open_in(root: &Path, id: &str, config: ConsumerConfig) -> Result<Consumer> {
        let mut c = Consumer {
            ring: Attached::open(root, id)?,
            config,
            cursor: 0,
            stats: Stats::default(),
            latency_sum: 0,
        };
        c.stats.writer_alive = c.writer_alive();
        // The start position is taken now, at open: "next" means after the open.
        let ws = c.writer_frames();
        c.cursor = match config.start {
            StartAt::Newest => ws.saturating_sub(1),
            StartAt::Oldest => ws.saturating_sub(u64::from(c.ring.layout.depth) - 1),
            StartAt::Next => ws,
        };
        Ok(c)
    }

    /// Geometry of the frames (may change after a re-attach: check [`Stats::reattached`]).
    pub fn geometry(&self) -> &FrameGeometry {
        &self.ring.layout.geometry
    }

    /// A copy of the slot's header as last mapped.
    pub fn header(&self) -> FrameRingHeader {
        // SAFETY: validated mapping of at least HEADER_SIZE bytes.
        unsafe { std::ptr::read_volatile(self.ring.header()) }
    }

    /// Frame rate of the slot as (num, den).
    pub fn fps(&self) -> (u32, u32) {
        let h = self.header();
        (h.fps_num, h.fps_den)
    }

    /// The slot's source-type label.
    pub fn source_type(&self) -> String {
        get_cstr(&self.header().source_type)
            .unwrap_or_default()
            .to_string()
    }

    /// Counters so far.
    pub fn stats(&mut self) -> Stats {
        self.stats.writer_alive = self.writer_alive();
        self.stats.writer_frames = self.writer_frames();
        self.stats
    }

    /// Frames the writer has published into the attached slot.
    pub fn writer_frames(&self) -> u64 {
        self.ring.write_seq().load(Ordering::Acquire)
    }

    /// CLOCK_MONOTONIC ns of the writer's last publish (0 = none yet).
    pub fn last_publish_ns(&self) -> u64 {
        self.ring.last_publish_ns().load(Ordering::Relaxed)
    }

    /// Whether a writer holds the slot (its lock is held and it did not close).
    pub fn writer_alive(&self) -> bool {
        self.ring.writer_alive()
    }

    /// Waits up to `timeout` for the next frame (by the cursor mode) and returns a zero-copy
    /// view of it. `Timeout` when none came; `WriterGone` when the writer is gone, nothing is
    /// left to read and no new writer re-created the slot within the timeout.
    pub fn read(&mut self, timeout: Duration) -> Result<Frame<'_>> {
        let (seq, skipped) = self.next(timeout)?;
        let i = self.ring.slot_of(seq);
        let info = self.deliver(seq, i, skipped);
        // SAFETY: the frame slot lies inside the validated mapping.
        let data =
            unsafe { std::slice::from_raw_parts(self.ring.data_ptr(i), self.ring.frame_size()) };
        Ok(Frame {
            info,
            geometry: self.ring.layout.geometry,
            data,
            lock: self.ring.lock(i),
        })
    }

    /// Counts a failed [`Frame::is_intact`] of a view this consumer handed out (the C API's
    /// `fc_consumer_check` does this).
    #[doc(hidden)]
    pub fn check_view(&mut self, seq: u64) -> bool {
        fence(Ordering::Acquire);
        let ok = self
            .ring
            .lock(self.ring.slot_of(seq))
            .load(Ordering::Relaxed)
            == complete(seq);
        if !ok {
            self.stats.overwritten += 1;
        }
        ok
    }

    /// Waits for the next frame and copies it into `buf` (at least the frame size), validated:
    /// a frame overwritten while it was copied is never returned; the reader moves on (counting
    /// it) and tries again within the timeout. `BufferTooSmall` (e.g. after a re-attach to a
    /// writer with bigger frames) does not consume the frame: retry with a bigger buffer.
    pub fn read_copy(&mut self, buf: &mut [u8], timeout: Duration) -> Result<FrameInfo> {
        let deadline = deadline_after(timeout);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (seq, skipped) = self.next(left)?;
            // Taken after `next`: a re-attach there may have changed the geometry. Too small a
            // buffer leaves the cursor in place, so a retry with a bigger one gets this frame.
            let size = self.ring.frame_size();
            if buf.len() < size {
                return Err(Error::BufferTooSmall {
                    need: size,
                    got: buf.len(),
                });
            }
            let i = self.ring.slot_of(seq);
            // SAFETY: source is a frame slot inside the mapping; buf holds >= size bytes.
            unsafe { std::ptr::copy_nonoverlapping(self.ring.data_ptr(i), buf.as_mut_ptr(), size) };
            let info = self.read_desc(seq, i, skipped);
            fence(Ordering::Acquire);
            if self.ring.lock(i).load(Ordering::Relaxed) == complete(seq) && info.seq == seq {
                self.cursor = seq + 1;
                return Ok(self.account(info));
            }
            self.stats.overwritten += 1;
            self.stats.frames_skipped += 1 + skipped;
            self.cursor = seq + 1;
        }
    }

    fn deliver(&mut self, seq: u64, i: u32, skipped: u64) -> FrameInfo {
        let info = self.read_desc(seq, i, skipped);
        self.cursor = seq + 1;
        self.account(info)
    }

    fn account(&mut self, info: FrameInfo) -> FrameInfo {
        self.stats.frames_read += 1;
        self.stats.frames_skipped += info.skipped;
        let lat = slot::monotonic_ns().saturating_sub(info.publish_ns);
        self.stats.latency_last_ns = lat;
        self.stats.latency_max_ns = self.stats.latency_max_ns.max(lat);
        self.latency_sum += u128::from(lat);
        self.stats.latency_avg_ns = (self.latency_sum / u128::from(self.stats.frames_read)) as u64;
        info
    }

    fn read_desc(&self, seq: u64, i: u32, skipped: u64) -> FrameInfo {
        let d = self.ring.desc_ptr(i);
        // SAFETY: descriptor inside the mapping; values are checked by the seqlock afterwards.
        let desc: FrameDesc = unsafe { std::ptr::read_volatile(d) };
        FrameInfo {
            seq: if desc.seq == seq { seq } else { u64::MAX },
            pts: desc.pts,
            capture_ns: desc.capture_ns,
            publish_ns: desc.publish_ns,
            size: self.ring.frame_size() as u32,
            flags: desc.flags,
            skipped,
        }
    }

    /// Finds the next frame to deliver: `(seq, frames skipped to get there)`.
    fn next(&mut self, timeout: Duration) -> Result<(u64, u64)> {
        let deadline = deadline_after(timeout);
        let mut quiet = false;
        loop {
            let ws = self.ring.write_seq().load(Ordering::Acquire);
            let depth = u64::from(self.ring.layout.depth);
            if ws > self.cursor {
                let mut skipped = 0;
                let target = match self.config.mode {
                    ReadMode::Latest => ws - 1,
                    // The slot of `ws - depth` may be under rewrite: the oldest safe frame is one later.
                    ReadMode::Sequential if ws - self.cursor >= depth => ws - depth + 1,
                    ReadMode::Sequential => self.cursor,
                };
                skipped += target - self.cursor;
                let lock = self
                    .ring
                    .lock(self.ring.slot_of(target))
                    .load(Ordering::Acquire);
                if lock == complete(target) {
                    return Ok((target, skipped));
                }
                // Overwritten between our look at write_seq and now (or a damaged descriptor):
                // count it and move on, so the cursor always makes progress.
                self.stats.frames_skipped += skipped + 1;
                self.cursor = target + 1;
                continue;
            }
            let mut alive = self.stats.writer_alive;
            let waited = self.ring.wait(ws, deadline, &mut quiet, &mut alive);
            self.stats.writer_alive = alive;
            if waited? == Waited::Reattached {
                // A new writer re-created the slot: read it from its first frame.
                self.cursor = 0;
                self.stats.reattached += 1;
            }
        }
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365))
}

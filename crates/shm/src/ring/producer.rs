//! The writer side of the frame ring.

use std::path::Path;
use std::sync::atomic::{fence, Ordering};

use super::layout::{self, FrameRingHeader, RingLayout, FRAME_MAGIC, FRAME_PROTO_VERSION};
use super::{complete, writing, FrameDesc, Ring};
use crate::error::{Error, Result};
use crate::format::{FrameGeometry, PixelFormat};
use crate::futex;
use crate::lifecycle::Owned;
use crate::slot;

/// What a writer declares when it creates a frame slot.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate numerator (0 = unknown).
    pub fps_num: u32,
    /// Frame rate denominator (must not be 0).
    pub fps_den: u32,
    /// Frame slots in the ring (default 120).
    pub depth: u32,
    /// File mode of the slot (default 0660).
    pub mode: u32,
    /// Row alignment in bytes, a power of two (default 1 = tight rows, as ffmpeg's rawvideo).
    pub row_align: u32,
    /// Short source-type label (at most 15 bytes kept), e.g. `testsrc`.
    pub source_type: String,
    /// Free `key=value` labels (at most 255 bytes kept in total).
    pub labels: Vec<(String, String)>,
    /// Leave the slot file in place when the writer closes (default: unlink it; readers that
    /// have it open keep reading what is left).
    pub keep_on_close: bool,
}

impl SlotConfig {
    /// A config with the defaults: 30 fps, depth 120, mode 0660, tight rows.
    pub fn new(format: PixelFormat, width: u32, height: u32) -> SlotConfig {
        SlotConfig {
            format,
            width,
            height,
            fps_num: 30,
            fps_den: 1,
            depth: layout::DEFAULT_DEPTH,
            mode: slot::DEFAULT_MODE,
            row_align: 1,
            source_type: String::new(),
            labels: Vec::new(),
            keep_on_close: false,
        }
    }
}

/// Per-frame metadata given at publish time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Presentation timestamp in the writer's timebase.
    pub pts: i64,
    /// Capture wall-clock time, CLOCK_REALTIME ns (0 = use the publish time).
    pub capture_ns: u64,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
}

/// The single writer of a frame slot. Dropping it closes the slot (see
/// [`SlotConfig::keep_on_close`]). Not `Sync`: one thread writes at a time.
pub struct Producer {
    pub(super) ring: Owned<Ring>,
    next_seq: u64,
    acquired: bool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("path", &self.ring.path())
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Producer {
    /// Creates slot `id` under the root directory ([`slot::root_dir`]). A stale slot (its
    /// writer died) is replaced; a live one gives [`Error::Busy`].
    pub fn create(id: &str, config: &SlotConfig) -> Result<Producer> {
        Self::create_in(&slot::root_dir(), id, config)
    }

    /// As [`Producer::create`], under an explicit root directory.
    pub fn create_in(root: &Path, id: &str, config: &SlotConfig) -> Result<Producer> {
        slot::validate_id(id)?;
        if config.fps_den == 0 {
            return Err(Error::InvalidArg("fps_den is 0".into()));
        }
        let geometry =
            FrameGeometry::new(config.format, config.width, config.height, config.row_align)?;
        let layout = RingLayout::new(geometry, config.depth)?;
        let labels = slot::labels_text(&config.labels)?;
        let ring = Owned::create(
            root,
            id,
            layout.file_size,
            config.mode,
            config.keep_on_close,
            |bytes| {
                init_header(bytes, &layout, config, &labels);
                Ok(())
            },
            |map| Ring { map, layout },
        )?;
        Ok(Producer {
            ring,
            next_seq: 0,
            acquired: false,
        })
    }

    /// Geometry of the frames this slot carries.
    pub fn geometry(&self) -> &FrameGeometry {
        &self.ring.layout.geometry
    }

    /// Full layout of the slot file.
    pub fn layout(&self) -> &RingLayout {
        &self.ring.layout
    }

    /// Frames published so far.
    pub fn frames_written(&self) -> u64 {
        self.next_seq
    }

    /// Path of the slot file.
    pub fn path(&self) -> &Path {
        self.ring.path()
    }

    /// Copies one whole frame (`data.len()` must equal the frame size) into the ring and
    /// publishes it. Returns its sequence number.
    pub fn write(&mut self, data: &[u8], meta: FrameMeta) -> Result<u64> {
        let size = self.ring.frame_size();
        if data.len() != size {
            return Err(Error::InvalidArg(format!(
                "frame is {} bytes, slot frames are {size}",
                data.len()
            )));
        }
        let dst = self.begin()?;
        // SAFETY: dst points at a frame slot of `size` bytes that only this writer writes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, size) };
        self.commit(meta)
    }

    /// Starts writing the next frame in place; the returned guard gives the frame's memory and
    /// publishes it on [`FrameWriter::commit`]. Dropping the guard without committing abandons
    /// the frame (the slot's previous frame is already invalidated).
    pub fn acquire(&mut self) -> Result<FrameWriter<'_>> {
        let ptr = self.begin()?;
        let len = self.ring.frame_size();
        Ok(FrameWriter {
            producer: self,
            ptr,
            len,
            done: false,
        })
    }

    /// Low-level half of [`Producer::acquire`] used by the C API: marks the next frame slot as
    /// being written and returns its memory.
    #[doc(hidden)]
    pub fn begin(&mut self) -> Result<*mut u8> {
        if self.acquired {
            return Err(Error::State("a frame is already acquired"));
        }
        let seq = self.next_seq;
        let i = self.ring.slot_of(seq);
        // Readers of the frame that lived in this slot now see it overwritten.
        self.ring.lock(i).store(writing(seq), Ordering::Relaxed);
        fence(Ordering::Release);
        self.acquired = true;
        Ok(self.ring.data_ptr(i))
    }

    /// Low-level half of [`FrameWriter::commit`]: publishes the acquired frame.
    #[doc(hidden)]
    pub fn commit(&mut self, meta: FrameMeta) -> Result<u64> {
        if !self.acquired {
            return Err(Error::State("no frame is acquired"));
        }
        let seq = self.next_seq;
        let i = self.ring.slot_of(seq);
        let now = slot::monotonic_ns();
        let desc = FrameDesc {
            lock: writing(seq),
            seq,
            pts: meta.pts,
            capture_ns: if meta.capture_ns == 0 {
                slot::realtime_ns()
            } else {
                meta.capture_ns
            },
            publish_ns: now,
            size: self.ring.frame_size() as u32,
            flags: meta.flags,
            reserved: [0; 16],
        };
        let d = self.ring.desc_ptr(i);
        // SAFETY: the descriptor is inside the mapping; fields after `lock` are plain data
        // guarded by the seqlock, so volatile writes keep the compiler from caching them.
        unsafe {
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*d).seq), desc.seq);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*d).pts), desc.pts);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*d).capture_ns), desc.capture_ns);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*d).publish_ns), desc.publish_ns);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*d).size), desc.size);
            std::ptr::write_volatile(std::ptr::addr_of_mut!((*d).flags), desc.flags);
        }
        self.ring.lock(i).store(complete(seq), Ordering::Release);
        self.ring.write_seq().store(seq + 1, Ordering::Release);
        self.ring.last_publish_ns().store(now, Ordering::Relaxed);
        self.ring.wake().fetch_add(1, Ordering::Release);
        futex::wake_all(self.ring.wake());
        self.acquired = false;
        self.next_seq = seq + 1;
        Ok(seq)
    }

    /// Abandons an acquired frame without publishing it.
    #[doc(hidden)]
    pub fn abort(&mut self) {
        self.acquired = false;
    }
}

/// A frame being written in place; see [`Producer::acquire`].
pub struct FrameWriter<'a> {
    producer: &'a mut Producer,
    ptr: *mut u8,
    len: usize,
    done: bool,
}

impl FrameWriter<'_> {
    /// The frame's memory in the ring (`frame_size` bytes, planes at the geometry's offsets).
    pub fn data(&mut self) -> &mut [u8] {
        // SAFETY: the slot is reserved for this writer until commit.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Publishes the frame; returns its sequence number.
    pub fn commit(mut self, meta: FrameMeta) -> Result<u64> {
        self.done = true;
        self.producer.commit(meta)
    }
}

impl Drop for FrameWriter<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.abort();
        }
    }
}

fn init_header(bytes: &mut [u8], l: &RingLayout, c: &SlotConfig, labels: &str) {
    // SAFETY: the new file is zero-filled, page-aligned and at least HEADER_SIZE long.
    let h = unsafe { &mut *bytes.as_mut_ptr().cast::<FrameRingHeader>() };
    let g = &l.geometry;
    h.magic = FRAME_MAGIC;
    h.proto_version = FRAME_PROTO_VERSION;
    h.header_size = layout::HEADER_SIZE as u32;
    h.file_size = l.file_size;
    h.epoch_ns = slot::realtime_ns();
    h.writer_pid = std::process::id();
    h.state = layout::STATE_LIVE;
    slot::put_cstr(&mut h.source_type, &c.source_type);
    h.fourcc = g.format.fourcc();
    h.width = g.width;
    h.height = g.height;
    h.fps_num = c.fps_num;
    h.fps_den = c.fps_den;
    h.depth = l.depth;
    h.plane_count = g.plane_count;
    h.row_align = c.row_align.max(1);
    h.strides = g.strides;
    h.offsets = g.offsets;
    h.frame_size = g.frame_size;
    h.frame_stride = l.frame_stride;
    h.desc_offset = l.desc_offset;
    h.data_offset = l.data_offset;
    slot::put_cstr(&mut h.labels, labels);
}

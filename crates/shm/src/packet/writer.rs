//! The writer side of the packet ring.

use std::mem::offset_of;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

use super::layout::*;
use super::{complete, writing, Ring};
use crate::error::{Error, Result};
use crate::futex;
use crate::lifecycle::Owned;
use crate::ring::layout::STATE_LIVE;
use crate::slot;

/// One elementary stream of a packet slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// Timebase of pts/dts as (num, den), e.g. (1, 90000).
    pub timebase: (u32, u32),
    /// Video width (0 = unknown).
    pub width: u32,
    /// Video height (0 = unknown).
    pub height: u32,
    /// Video frame rate (0/1 = unknown).
    pub fps: (u32, u32),
    /// Audio sample rate (0 = unknown).
    pub sample_rate: u32,
    /// Audio channels (0 = unknown).
    pub channels: u32,
    /// Language or name tag (at most 15 bytes kept).
    pub tag: String,
}

impl StreamConfig {
    /// A stream of `codec` with timebase 1/90000 and nothing else known.
    pub fn new(codec: u32) -> StreamConfig {
        StreamConfig {
            codec,
            timebase: (1, 90_000),
            width: 0,
            height: 0,
            fps: (0, 1),
            sample_rate: 0,
            channels: 0,
            tag: String::new(),
        }
    }
}

/// What a writer declares when it creates a packet slot.
#[derive(Debug, Clone)]
pub struct PacketSlotConfig {
    /// The streams (1..=8).
    pub streams: Vec<StreamConfig>,
    /// Payload ring bytes (default 32 MiB; a multiple of 4096).
    pub payload_size: u64,
    /// Packet descriptors (default 16384).
    pub desc_count: u32,
    /// Bytes per codec-parameter slot (default 4096).
    pub params_capacity: u32,
    /// File mode (default 0660).
    pub mode: u32,
    /// Source-type label.
    pub source_type: String,
    /// Free `key=value` labels.
    pub labels: Vec<(String, String)>,
    /// Keep the file when the writer closes.
    pub keep_on_close: bool,
}

impl PacketSlotConfig {
    /// Defaults for the given streams.
    pub fn new(streams: Vec<StreamConfig>) -> PacketSlotConfig {
        PacketSlotConfig {
            streams,
            payload_size: DEFAULT_PAYLOAD_SIZE,
            desc_count: DEFAULT_DESC_COUNT,
            params_capacity: DEFAULT_PARAMS_CAPACITY,
            mode: slot::DEFAULT_MODE,
            source_type: String::new(),
            labels: Vec::new(),
            keep_on_close: false,
        }
    }
}

/// A packet to publish.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Stream index.
    pub stream: u32,
    /// Presentation timestamp in the stream's timebase ([`FC_NOPTS`] = none).
    pub pts: i64,
    /// Decoding timestamp ([`FC_NOPTS`] = none).
    pub dts: i64,
    /// `FC_PACKET_*` flags (keyframe, discontinuity, corrupt; config-change is set by the writer).
    pub flags: u32,
    /// The payload (H.264/HEVC: an Annex-B access unit; AAC: one raw frame).
    pub data: &'a [u8],
}

/// The single writer of a packet slot. Dropping it closes the slot.
pub struct PacketWriter {
    pub(super) ring: Owned<Ring>,
    next_seq: u64,
    pos: u64,
    last_gen: [u32; MAX_STREAMS],
    /// Publishes leave the readers' wake-up to [`PacketWriter::wake_readers`].
    defer_wake: bool,
    /// Something was published since the last wake-up.
    unwoken: bool,
}

impl std::fmt::Debug for PacketWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketWriter")
            .field("path", &self.ring.path())
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl PacketWriter {
    /// Creates packet slot `id` under the root directory. A stale slot is replaced; a live one
    /// gives [`Error::Busy`].
    pub fn create(id: &str, config: &PacketSlotConfig) -> Result<PacketWriter> {
        Self::create_in(&slot::root_dir(), id, config)
    }

    /// As [`PacketWriter::create`], under an explicit root.
    pub fn create_in(root: &Path, id: &str, config: &PacketSlotConfig) -> Result<PacketWriter> {
        slot::validate_id(id)?;
        for (i, s) in config.streams.iter().enumerate() {
            if codec_media(s.codec).is_none() {
                return Err(Error::InvalidArg(format!(
                    "stream {i}: unknown codec {}",
                    s.codec
                )));
            }
            if s.timebase.0 == 0 || s.timebase.1 == 0 {
                return Err(Error::InvalidArg(format!(
                    "stream {i}: timebase {}/{}",
                    s.timebase.0, s.timebase.1
                )));
            }
        }
        let primary = config
            .streams
            .iter()
            .position(|s| codec_media(s.codec) == Some(FC_MEDIA_VIDEO))
            .unwrap_or(0) as u32;
        let count = u32::try_from(config.streams.len()).unwrap_or(u32::MAX);
        let layout = PacketLayout::new(
            count,
            primary,
            config.payload_size,
            config.desc_count,
            config.params_capacity,
        )?;
        let labels = slot::labels_text(&config.labels)?;
        let ring = Owned::create(
            root,
            id,
            layout.file_size,
            config.mode,
            config.keep_on_close,
            |bytes| {
                init(bytes, &layout, config, &labels);
                Ok(())
            },
            |map| Ring { map, layout },
        )?;
        Ok(PacketWriter {
            ring,
            next_seq: 0,
            pos: 0,
            last_gen: [0; MAX_STREAMS],
            defer_wake: false,
            unwoken: false,
        })
    }

    /// Layout of the slot file.
    pub fn layout(&self) -> &PacketLayout {
        &self.ring.layout
    }

    /// Path of the slot file.
    pub fn path(&self) -> &Path {
        self.ring.path()
    }

    /// Packets published so far.
    pub fn packets_written(&self) -> u64 {
        self.next_seq
    }

    /// Seq of the newest keyframe of the primary stream, `None` before the first.
    pub fn last_keyframe(&self) -> Option<u64> {
        let v = self
            .ring
            .atomic(offset_of!(PacketRingHeader, last_keyframe))
            .load(Ordering::Acquire);
        v.checked_sub(1)
    }

    /// Publishes new codec parameters for `stream` (H.264/HEVC: Annex-B parameter sets; AAC:
    /// AudioSpecificConfig; Opus: OpusHead) and returns their generation (1, 2, ...). The next
    /// packet of the stream carries `FC_PACKET_CONFIG_CHANGE`. Readers keep access to the last
    /// [`PARAMS_HISTORY`] generations.
    pub fn set_codec_params(&mut self, stream: u32, data: &[u8]) -> Result<u32> {
        let l = self.ring.layout;
        if stream >= l.stream_count {
            return Err(Error::InvalidArg(format!(
                "stream {stream} of {}",
                l.stream_count
            )));
        }
        if data.len() > l.params_capacity as usize {
            return Err(Error::Oversized {
                size: data.len() as u64,
                max: u64::from(l.params_capacity),
            });
        }
        let gen_word = self.ring.stream_gen(stream);
        let gen = gen_word.load(Ordering::Relaxed).wrapping_add(1).max(1);
        let at = l.params_at(stream, gen);
        let lock = self.ring.map.atomic_u64(at);
        lock.store(writing(u64::from(gen)), Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: the slot (header + capacity bytes) lies inside the mapping by the layout.
        unsafe {
            let p = self.ring.map.ptr().add(at);
            std::ptr::write_volatile(p.add(8).cast::<u32>(), data.len() as u32);
            std::ptr::write_volatile(p.add(12).cast::<u32>(), gen);
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(PARAMS_SLOT_HEADER), data.len());
        }
        lock.store(complete(u64::from(gen)), Ordering::Release);
        gen_word.store(gen, Ordering::Release);
        Ok(gen)
    }

    /// Publishes one packet and returns its sequence number. Never waits for readers: the
    /// oldest packets are overwritten. Audio and data packets are always sync points
    /// (`FC_PACKET_KEYFRAME` is added).
    pub fn publish(&mut self, p: &Packet) -> Result<u64> {
        self.publish_gather(p.stream, p.pts, p.dts, p.flags, &[p.data])
    }

    /// [`PacketWriter::publish`] of a packet whose data is `parts` back to back (say codec
    /// parameters and a frame), without joining them first.
    pub fn publish_gather(
        &mut self,
        stream: u32,
        pts: i64,
        dts: i64,
        flags: u32,
        parts: &[&[u8]],
    ) -> Result<u64> {
        let l = self.ring.layout;
        if stream >= l.stream_count {
            return Err(Error::InvalidArg(format!(
                "stream {} of {}",
                stream, l.stream_count
            )));
        }
        let len: u64 = parts.iter().map(|d| d.len() as u64).sum();
        if len == 0 {
            return Err(Error::InvalidArg("empty packet".into()));
        }
        if len > l.max_packet {
            return Err(Error::Oversized {
                size: len,
                max: l.max_packet,
            });
        }
        // Payloads never wrap: a packet that would cross the end starts at the ring's start.
        let mut pos = self.pos;
        let off = pos % l.payload_size;
        if off + len > l.payload_size {
            pos += l.payload_size - off;
        }
        let seq = self.next_seq;
        let di = (seq % u64::from(l.desc_count)) as u32;
        let lock = self.ring.map.atomic_u64(l.desc_at(di));
        // Invalidate the descriptor and claim the bytes before touching them, so readers of
        // what lived there see the overrun.
        lock.store(writing(seq), Ordering::Relaxed);
        self.ring
            .atomic(offset_of!(PacketRingHeader, write_reserve))
            .store(pos + len, Ordering::Relaxed);
        fence(Ordering::Release);
        // SAFETY: [pos % size, + len) lies inside the payload ring (no wrap, checked above).
        unsafe {
            let dst = self
                .ring
                .map
                .ptr()
                .add((l.payload_offset + pos % l.payload_size) as usize);
            let mut at = 0;
            for d in parts {
                std::ptr::copy_nonoverlapping(d.as_ptr(), dst.add(at), d.len());
                at += d.len();
            }
        }
        let desc_stream = self.ring.stream(stream);
        let mut flags = flags & !FC_PACKET_CONFIG_CHANGE;
        if desc_stream.media != FC_MEDIA_VIDEO {
            flags |= FC_PACKET_KEYFRAME;
        }
        let gen = self.ring.stream_gen(stream).load(Ordering::Relaxed);
        if gen != self.last_gen[stream as usize] {
            flags |= FC_PACKET_CONFIG_CHANGE;
            self.last_gen[stream as usize] = gen;
        }
        let now = slot::monotonic_ns();
        let desc = PacketDesc {
            lock: writing(seq),
            seq,
            pts,
            dts,
            pos,
            size: len as u32,
            flags,
            stream,
            params_gen: gen,
            publish_ns: now,
        };
        // SAFETY: descriptor inside the mapping; guarded by the seqlock.
        unsafe { std::ptr::write_volatile(self.ring.desc_ptr(di), desc) };
        lock.store(complete(seq), Ordering::Release);
        self.ring
            .atomic(offset_of!(PacketRingHeader, write_seq))
            .store(seq + 1, Ordering::Release);
        if stream == l.primary_stream && flags & FC_PACKET_KEYFRAME != 0 {
            self.ring
                .atomic(offset_of!(PacketRingHeader, last_keyframe))
                .store(seq + 1, Ordering::Release);
        }
        self.ring
            .atomic(offset_of!(PacketRingHeader, last_publish_ns))
            .store(now, Ordering::Relaxed);
        self.ring
            .atomic(offset_of!(PacketRingHeader, bytes_published))
            .fetch_add(len, Ordering::Relaxed);
        self.pos = pos + len;
        self.next_seq = seq + 1;
        self.unwoken = true;
        if !self.defer_wake {
            self.wake_readers();
        }
        Ok(seq)
    }

    /// Batches wake-ups: while `on`, publishing does not wake waiting readers; the caller
    /// calls [`PacketWriter::wake_readers`] after each batch. A source that delivers in
    /// bursts (one socket read every few ms) saves a system call per packet. Readers that
    /// are not woken still see the packets within their 100 ms liveness slice.
    pub fn set_defer_wake(&mut self, on: bool) {
        self.defer_wake = on;
        if !on && self.unwoken {
            self.wake_readers();
        }
    }

    /// Wakes the readers waiting for a packet, if anything was published since the last call.
    pub fn wake_readers(&mut self) {
        if std::mem::take(&mut self.unwoken) {
            let wake = self.ring.wake();
            wake.fetch_add(1, Ordering::Release);
            futex::wake_all(wake);
        }
    }
}

fn init(bytes: &mut [u8], l: &PacketLayout, c: &PacketSlotConfig, labels: &str) {
    // SAFETY: the new file is zero-filled, page-aligned and larger than header + stream table.
    let h = unsafe { &mut *bytes.as_mut_ptr().cast::<PacketRingHeader>() };
    h.magic = PACKET_MAGIC;
    h.proto_version = PACKET_PROTO_VERSION;
    h.header_size = PACKET_HEADER_SIZE as u32;
    h.file_size = l.file_size;
    h.epoch_ns = slot::realtime_ns();
    h.writer_pid = std::process::id();
    h.state = STATE_LIVE;
    h.stream_count = l.stream_count;
    slot::put_cstr(&mut h.source_type, &c.source_type);
    h.desc_count = l.desc_count;
    h.params_capacity = l.params_capacity;
    h.params_history = PARAMS_HISTORY;
    h.primary_stream = l.primary_stream;
    h.payload_size = l.payload_size;
    h.streams_offset = l.streams_offset;
    h.params_offset = l.params_offset;
    h.desc_offset = l.desc_offset;
    h.payload_offset = l.payload_offset;
    h.max_packet = l.max_packet;
    slot::put_cstr(&mut h.labels, labels);
    for (i, s) in c.streams.iter().enumerate() {
        let at = l.stream_at(i as u32);
        // SAFETY: the stream table lies inside the new file.
        let d = unsafe { &mut *bytes.as_mut_ptr().add(at).cast::<StreamDesc>() };
        d.codec = s.codec;
        d.media = codec_media(s.codec).unwrap_or(FC_MEDIA_DATA);
        d.timebase_num = s.timebase.0;
        d.timebase_den = s.timebase.1;
        d.width = s.width;
        d.height = s.height;
        d.fps_num = s.fps.0;
        d.fps_den = s.fps.1;
        d.sample_rate = s.sample_rate;
        d.channels = s.channels;
        slot::put_cstr(&mut d.tag, &s.tag);
    }
}

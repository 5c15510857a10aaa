//! The packet-slot side of an ingest: source-neutral media in, packet ring out.
//!
//! Every source (RTMP, SRT, UDP, HLS, files, another slot) becomes [`Media`] events. The sink
//! buffers them until each announced track has shown its codec parameters, creates the slot
//! (its stream table is fixed at creation), and then publishes access units. Timestamps are
//! rescaled to 90 kHz and shifted so that they keep rising across reconnects and input
//! switches; the first packet of each stream after a switch carries `FC_PACKET_DISCONTINUITY`.
//! Video keyframes without in-band parameter sets get them prepended, so every keyframe in an
//! ingest slot is decodable on its own.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use framecache_media::codec::{self, nal_units};
use framecache_media::{FrameRef, Media, Track};
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::*;
use framecache_shm::slot;

/// Stream properties reported once a slot is created (or re-created).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// The slot.
    pub slot: String,
    /// The streams as declared in the slot.
    pub streams: Vec<StreamConfig>,
}

/// What an ingest reports through its callback. Every event names its slot.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// An input connected (or a pusher was accepted); `input` is its URL or peer address.
    Connected {
        /// The slot it feeds.
        slot: String,
        /// The input.
        input: String,
    },
    /// The slot was created with these streams.
    MediaInfo(MediaInfo),
    /// A packet was published (only delivered while packet events are switched on:
    /// [`crate::Engine::set_packet_events`]).
    Packet {
        /// The slot.
        slot: String,
        /// Stream index in the slot.
        stream: u32,
        /// Payload bytes.
        size: usize,
        /// Keyframe flag.
        keyframe: bool,
        /// Presentation time, 90 kHz (`FC_NOPTS` = none).
        pts: i64,
        /// Decoding time, 90 kHz.
        dts: i64,
    },
    /// The input went away.
    Disconnected {
        /// The slot it fed.
        slot: String,
        /// The input.
        input: String,
        /// Why.
        reason: String,
    },
    /// A pull input failed before it delivered media: it did not open or connect, was
    /// refused, or ended empty. The ingest retries (with backoff) or fails over.
    InputFailed {
        /// The slot it would feed.
        slot: String,
        /// Its URL (no password).
        input: String,
        /// Its place in the slot's input list (0 = highest priority).
        priority: usize,
        /// Why.
        reason: String,
    },
    /// A pusher was refused: unknown key, key in use, wrong mode.
    Refused {
        /// The slot of the key, empty when the key is unknown.
        slot: String,
        /// The pusher: protocol, peer address and key.
        input: String,
        /// Why.
        reason: String,
    },
}

impl IngestEvent {
    /// The slot the event is about.
    pub fn slot(&self) -> &str {
        match self {
            IngestEvent::Connected { slot, .. }
            | IngestEvent::Packet { slot, .. }
            | IngestEvent::Disconnected { slot, .. }
            | IngestEvent::InputFailed { slot, .. }
            | IngestEvent::Refused { slot, .. } => slot,
            IngestEvent::MediaInfo(m) => &m.slot,
        }
    }
}

/// Receives [`IngestEvent`]s; called on the ingest's own threads, so keep it short.
pub type EventCallback = Arc<dyn Fn(&IngestEvent) + Send + Sync>;

/// Counters of one ingest, readable from any thread.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Payload bytes published.
    pub bytes: AtomicU64,
    /// Packets published.
    pub packets: AtomicU64,
    /// Units dropped (oversized, before parameters, unknown track...).
    pub dropped: AtomicU64,
    /// Bits per second over the last full second.
    pub bitrate: AtomicU64,
    /// `CLOCK_REALTIME` ns of the last packet (0 = none yet).
    pub last_packet_ns: AtomicU64,
    /// Times an input (re)connected after the first.
    pub reconnects: AtomicU64,
    /// Index of the input in use (pull ingests with several inputs).
    pub current_input: AtomicUsize,
    /// An input is connected and delivering.
    pub connected: AtomicBool,
    /// `CLOCK_REALTIME` ns when the current input connected (0 = none yet).
    pub since_ns: AtomicU64,
    window_start_ns: AtomicU64,
    window_bytes: AtomicU64,
    /// The current input: its URL, or protocol, peer and key for a pusher (no secrets).
    input: std::sync::Mutex<String>,
}

impl IngestStats {
    /// Notes that `input` connected now.
    pub fn connected_input(&self, input: &str) {
        self.since_ns.store(slot::realtime_ns(), Ordering::Relaxed);
        *self.input.lock().unwrap_or_else(|e| e.into_inner()) = input.to_string();
    }

    /// The input that connected last (see [`IngestStats::connected_input`]).
    pub fn input(&self) -> String {
        self.input.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, size: usize) {
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
        let now = slot::monotonic_ns();
        self.last_packet_ns
            .store(slot::realtime_ns(), Ordering::Relaxed);
        let start = self.window_start_ns.load(Ordering::Relaxed);
        let wb = self.window_bytes.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
        if start == 0 {
            self.window_start_ns.store(now, Ordering::Relaxed);
        } else if now - start >= 1_000_000_000 {
            let bps = wb as u128 * 8 * 1_000_000_000 / u128::from(now - start);
            self.bitrate.store(bps as u64, Ordering::Relaxed);
            self.window_start_ns.store(now, Ordering::Relaxed);
            self.window_bytes.store(0, Ordering::Relaxed);
        }
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes: self.bytes.load(Ordering::Relaxed),
            packets: self.packets.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bitrate: self.bitrate.load(Ordering::Relaxed),
            last_packet_ns: self.last_packet_ns.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            current_input: self.current_input.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}

/// A copy of [`IngestStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Payload bytes published.
    pub bytes: u64,
    /// Packets published.
    pub packets: u64,
    /// Units dropped.
    pub dropped: u64,
    /// Bits per second over the last full second.
    pub bitrate: u64,
    /// `CLOCK_REALTIME` ns of the last packet.
    pub last_packet_ns: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// Input in use.
    pub current_input: usize,
    /// An input is connected.
    pub connected: bool,
}

/// How the sink creates its slot.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Payload ring bytes.
    pub payload_size: u64,
    /// Source-type label written into the slot (`rtmp`, `srt`, `udp`...).
    pub source_type: String,
    /// Keep the slot file after the sink closes.
    pub keep_on_close: bool,
    /// Buffer at most this many units while waiting for every track's parameters.
    pub max_pending: usize,
    /// While set, every published packet is reported ([`IngestEvent::Packet`]); the engine
    /// shares one switch among its sinks. None: packet events as [`SlotSink::set_events`]
    /// says.
    pub packet_events: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            payload_size: DEFAULT_PAYLOAD_SIZE,
            source_type: "ingest".into(),
            keep_on_close: false,
            max_pending: 600,
            packet_events: None,
        }
    }
}

struct TrackState {
    track: Track,
    params: Option<Vec<u8>>,
    seen_frame: bool,
}

/// Publishes [`Media`] into one packet slot; see the module documentation.
pub struct SlotSink {
    id: String,
    root: std::path::PathBuf,
    opts: SinkOptions,
    tracks: Vec<TrackState>,
    /// Track declared complete by the source (PMT / metadata) rather than discovered.
    announced: bool,
    pending: Vec<Media>,
    writer: Option<PacketWriter>,
    /// Source track → slot stream.
    map: Vec<Option<u32>>,
    /// Codecs of the slot's streams (to decide whether a new session can reuse it).
    slot_codecs: Vec<u32>,
    /// 90 kHz offset added to this session's timestamps.
    offset: Option<i64>,
    /// Highest dts (90 kHz, after offset) published so far.
    last_dts: Option<i64>,
    /// Streams whose next packet gets the discontinuity flag.
    disc: Vec<bool>,
    stats: Arc<IngestStats>,
    events: Option<EventCallback>,
    packet_events: Arc<std::sync::atomic::AtomicBool>,
    /// Readers are woken by [`SlotSink::flush`], not by every packet.
    defer_wake: bool,
}

impl std::fmt::Debug for SlotSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotSink").field("id", &self.id).finish()
    }
}

fn needs_params(codec: u32) -> bool {
    matches!(codec, FC_CODEC_H264 | FC_CODEC_HEVC | FC_CODEC_AAC)
}

/// Whether an Annex-B unit carries its own SPS.
fn has_sps(codec: u32, au: &[u8]) -> bool {
    nal_units(au).iter().any(|n| {
        !n.is_empty()
            && if codec == FC_CODEC_H264 {
                n[0] & 0x1F == 7
            } else {
                (n[0] >> 1) & 0x3F == 33
            }
    })
}

impl SlotSink {
    /// A sink for slot `id` under `root` (None = the default root directory); nothing is
    /// created until media arrive.
    pub fn new(
        root: Option<&std::path::Path>,
        id: &str,
        opts: SinkOptions,
        stats: Arc<IngestStats>,
    ) -> Result<SlotSink> {
        let root = root.map_or_else(slot::root_dir, std::path::Path::to_path_buf);
        slot::validate_id(id)?;
        let packet_events = opts.packet_events.clone().unwrap_or_default();
        Ok(SlotSink {
            id: id.to_string(),
            root,
            opts,
            tracks: Vec::new(),
            announced: false,
            pending: Vec::new(),
            writer: None,
            map: Vec::new(),
            slot_codecs: Vec::new(),
            offset: None,
            last_dts: None,
            disc: Vec::new(),
            stats,
            events: None,
            packet_events,
            defer_wake: false,
        })
    }

    /// Reports events to `cb`; `packets` also reports every published packet (unless the
    /// options gave a switch, which then decides).
    pub fn set_events(&mut self, cb: Option<EventCallback>, packets: bool) {
        self.events = cb;
        if self.opts.packet_events.is_none() {
            self.packet_events = Arc::new(packets.into());
        }
    }

    /// Reports packets while `on` is set (a switch the host flips at any time).
    pub fn set_packet_switch(&mut self, on: Arc<std::sync::atomic::AtomicBool>) {
        self.packet_events = on;
    }

    /// The slot id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The slot exists and is being written.
    pub fn is_open(&self) -> bool {
        self.writer.is_some()
    }

    fn emit(&self, ev: IngestEvent) {
        if let Some(cb) = &self.events {
            cb(&ev);
        }
    }

    /// Starts a new input session: track ids restart, timestamps get a new offset, and the
    /// next packet of each stream is flagged as a discontinuity. The slot stays open when the
    /// new session's tracks have the same codecs.
    pub fn begin_session(&mut self) {
        self.tracks.clear();
        self.announced = false;
        self.pending.clear();
        self.map.clear();
        self.offset = None;
        self.disc.iter_mut().for_each(|d| *d = true);
    }

    /// Ends the session; `close` also closes the slot (readers see the writer gone).
    pub fn end_session(&mut self, close: bool) {
        self.pending.clear();
        if close {
            self.writer = None;
            self.slot_codecs.clear();
            self.last_dts = None;
        }
    }

    /// Takes one media event. Errors are those of the slot (creation refused, slot busy);
    /// units that cannot be placed are dropped and counted.
    pub fn push(&mut self, m: Media) -> Result<()> {
        match &m {
            Media::Tracks(t) => {
                self.tracks = t
                    .iter()
                    .map(|&track| TrackState {
                        track,
                        params: None,
                        seen_frame: false,
                    })
                    .collect();
                self.announced = true;
                if self.writer.is_some() && !self.compatible() {
                    // Different streams: the slot is re-created once they are known.
                    self.writer = None;
                }
                self.map.clear();
                return self.pump(None);
            }
            Media::AddTrack(track) => {
                self.tracks.push(TrackState {
                    track: *track,
                    params: None,
                    seen_frame: false,
                });
                // The writer stays while tracks are being discovered: a session that turns
                // out to have the slot's streams keeps the slot (readers stay attached); one
                // that does not re-creates it once it is ready (see `pump`).
                self.map.clear();
                return self.pump(None);
            }
            Media::Params { track, data } => {
                if let Some(t) = self.tracks.get_mut(*track) {
                    t.params = Some(data.clone());
                }
            }
            Media::Frame { track, .. } => {
                if let Some(t) = self.tracks.get_mut(*track) {
                    t.seen_frame = true;
                } else {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        self.pump(Some(m))
    }

    /// Takes one access unit, borrowed: as [`SlotSink::push`] of a [`Media::Frame`], with no
    /// copy beyond the one into the slot once the slot exists.
    pub fn push_frame(&mut self, f: FrameRef<'_>) -> Result<()> {
        if let Some(t) = self.tracks.get_mut(f.track) {
            t.seen_frame = true;
        } else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.writer.is_none() || self.map.is_empty() {
            return self.pump(Some(f.to_media()));
        }
        self.publish_frame(f)
    }

    /// Batches reader wake-ups: while `on`, packets do not wake waiting readers one by one;
    /// [`SlotSink::flush`] does, once per batch (see [`PacketWriter::set_defer_wake`]).
    pub fn set_defer_wake(&mut self, on: bool) {
        self.defer_wake = on;
        if let Some(w) = &mut self.writer {
            w.set_defer_wake(on);
        }
    }

    /// Wakes the slot's readers if packets were published since the last flush.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.writer {
            w.wake_readers();
        }
    }

    /// Whether the open slot's streams match the current tracks (same codecs, same order).
    /// Track indices in slot order: video first, then the rest, in arrival order otherwise
    /// (sources that discover tracks may show audio first; slots always list video first).
    fn slot_order(&self) -> Vec<usize> {
        let is_video =
            |i: &usize| matches!(self.tracks[*i].track.codec, FC_CODEC_H264 | FC_CODEC_HEVC);
        let (mut v, a): (Vec<usize>, Vec<usize>) = (0..self.tracks.len()).partition(is_video);
        v.extend(a);
        v.truncate(MAX_STREAMS);
        v
    }

    /// Source track → slot stream for `order`.
    fn map_for(&self, order: &[usize]) -> Vec<Option<u32>> {
        let mut map = vec![None; self.tracks.len()];
        for (pos, &t) in order.iter().enumerate() {
            map[t] = Some(pos as u32);
        }
        map
    }

    /// Whether the open slot's streams match the current tracks (same codecs, same order).
    fn compatible(&self) -> bool {
        self.writer.is_some()
            && self
                .slot_order()
                .iter()
                .map(|&i| self.tracks[i].track.codec)
                .eq(self.slot_codecs.iter().copied())
    }

    fn ready(&self) -> bool {
        if self.tracks.is_empty() {
            return false;
        }
        if self.pending.len() >= self.opts.max_pending {
            return true;
        }
        // Discovered tracks (RTMP): wait until both kinds showed up or enough was buffered,
        // since audio may start later than video.
        let all = self
            .tracks
            .iter()
            .all(|t| t.seen_frame && (!needs_params(t.track.codec) || t.params.is_some()));
        if self.announced {
            return all;
        }
        let has_video = self
            .tracks
            .iter()
            .any(|t| matches!(t.track.codec, FC_CODEC_H264 | FC_CODEC_HEVC));
        let has_audio = self.tracks.len() > usize::from(has_video);
        all && has_video && has_audio || all && self.pending.len() >= self.opts.max_pending / 4
    }

    fn pump(&mut self, m: Option<Media>) -> Result<()> {
        if self.writer.is_none() || self.map.is_empty() {
            if let Some(m) = m {
                self.pending.push(m);
            }
            if self.writer.is_none() {
                if !self.ready() {
                    return Ok(());
                }
                self.create()?;
            } else if self.compatible() {
                self.map = self.map_for(&self.slot_order());
            } else if self.ready() {
                // This session's streams differ from the slot's: a new slot.
                self.writer = None;
                self.create()?;
            } else {
                return Ok(());
            }
            for m in std::mem::take(&mut self.pending) {
                self.publish(m)?;
            }
            return Ok(());
        }
        match m {
            Some(m) => self.publish(m),
            None => Ok(()),
        }
    }

    fn create(&mut self) -> Result<()> {
        let order = self.slot_order();
        let mut cfgs = Vec::new();
        for t in order.iter().map(|&i| &self.tracks[i]) {
            let mut c = StreamConfig::new(t.track.codec);
            match (t.track.codec, &t.params) {
                (FC_CODEC_H264, Some(p)) => {
                    if let Some(i) = codec::h264_sps_info(p) {
                        (c.width, c.height) = (i.width, i.height);
                        if let Some(fps) = i.fps {
                            c.fps = ((fps * 1000.0).round() as u32, 1000);
                        }
                    }
                }
                (FC_CODEC_AAC, Some(p)) => {
                    if let Some((rate, ch)) = codec::aac_config_info(p) {
                        (c.sample_rate, c.channels) = (rate, u32::from(ch));
                    }
                }
                (FC_CODEC_OPUS, Some(p)) if p.len() >= 19 && p.starts_with(b"OpusHead") => {
                    c.channels = u32::from(p[9]);
                    c.sample_rate = 48_000;
                }
                _ => {}
            }
            cfgs.push(c);
        }
        let mut cfg = PacketSlotConfig::new(cfgs.clone());
        cfg.payload_size = self.opts.payload_size;
        cfg.source_type = self.opts.source_type.clone();
        cfg.keep_on_close = self.opts.keep_on_close;
        // Drop the old writer first: the same id is re-created.
        self.writer = None;
        let mut w = PacketWriter::create_in(&self.root, &self.id, &cfg)?;
        w.set_defer_wake(self.defer_wake);
        for (pos, t) in order.iter().map(|&i| &self.tracks[i]).enumerate() {
            if let Some(p) = &t.params {
                w.set_codec_params(pos as u32, p)?;
            }
        }
        self.map = self.map_for(&order);
        self.slot_codecs = order.iter().map(|&i| self.tracks[i].track.codec).collect();
        self.disc = vec![false; self.slot_codecs.len()];
        self.last_dts = None;
        self.writer = Some(w);
        self.emit(IngestEvent::MediaInfo(MediaInfo {
            slot: self.id.clone(),
            streams: cfgs,
        }));
        Ok(())
    }

    fn publish(&mut self, m: Media) -> Result<()> {
        match m {
            Media::Tracks(_) | Media::AddTrack(_) => Ok(()),
            Media::Params { track, data } => {
                let Some(Some(stream)) = self.map.get(track).copied() else {
                    return Ok(());
                };
                let w = self.writer.as_mut().expect("open");
                match w.set_codec_params(stream, &data) {
                    Ok(_) => Ok(()),
                    Err(Error::Oversized { .. }) | Err(Error::InvalidArg(_)) => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Media::Frame {
                track,
                pts,
                dts,
                keyframe,
                discontinuity,
                data,
            } => self.publish_frame(FrameRef {
                track,
                pts,
                dts,
                keyframe,
                discontinuity,
                data: &data,
            }),
        }
    }

    fn publish_frame(&mut self, f: FrameRef<'_>) -> Result<()> {
        let FrameRef {
            track,
            pts,
            dts,
            keyframe,
            discontinuity,
            data,
        } = f;
        let Some(Some(stream)) = self.map.get(track).copied() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let t = &self.tracks[track];
        let codec = t.track.codec;
        let (mut pts, mut dts) = (
            rescale(pts, t.track.timebase, 90_000),
            rescale(dts, t.track.timebase, 90_000),
        );
        if dts == FC_NOPTS {
            dts = pts;
        }
        if dts != FC_NOPTS {
            let off = *self.offset.get_or_insert_with(|| match self.last_dts {
                // Continue 1/30 s after the last packet of the previous session.
                Some(last) => last + 3000 - dts,
                None => 0,
            });
            dts += off;
            if pts != FC_NOPTS {
                pts += off;
            }
            self.last_dts = Some(self.last_dts.map_or(dts, |l| l.max(dts)));
        }
        let mut flags = if keyframe { FC_PACKET_KEYFRAME } else { 0 };
        let d = &mut self.disc[stream as usize];
        if discontinuity || *d {
            flags |= FC_PACKET_DISCONTINUITY;
            *d = false;
        }
        // A keyframe without its parameter sets gets them in front (written as two parts,
        // not joined), so a reader joining there can decode.
        let mut parts: [&[u8]; 2] = [&[], data];
        if keyframe && matches!(codec, FC_CODEC_H264 | FC_CODEC_HEVC) && !has_sps(codec, data) {
            if let Some(p) = &t.params {
                parts[0] = p;
            }
        }
        let size = parts[0].len() + parts[1].len();
        let w = self.writer.as_mut().expect("open");
        match w.publish_gather(stream, pts, dts, flags, &parts) {
            Ok(_) => {
                self.stats.count(size);
                if self.packet_events.load(Ordering::Relaxed) {
                    self.emit(IngestEvent::Packet {
                        slot: self.id.clone(),
                        stream,
                        size,
                        keyframe,
                        pts,
                        dts,
                    });
                }
                Ok(())
            }
            Err(Error::Oversized { .. }) | Err(Error::InvalidArg(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

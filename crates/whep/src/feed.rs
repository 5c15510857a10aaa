//! One reader of a packet slot per stream, fanned out to every WebRTC viewer of it.
//!
//! The feed reads the ring on its own thread (the ring read blocks on a futex), turns access
//! units into RTP payloads once (H.264 packetisation, AAC → Opus) and broadcasts them. It keeps
//! the units since the last keyframe, so a viewer that joins gets that keyframe with its
//! parameter sets at once and catches up to the live edge.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tokio::sync::broadcast;

use super::audio::{opus_available, AacToOpus};
use framecache_shm::packet::{
    rescale, Follower, PacketReader, PacketReaderConfig, PacketStart, StreamInfo, FC_CODEC_AAC,
    FC_CODEC_H264, FC_CODEC_OPUS, FC_MEDIA_AUDIO, FC_MEDIA_VIDEO, FC_PACKET_DISCONTINUITY,
    FC_PACKET_KEYFRAME,
};
use framecache_shm::Error;

/// RTP payload size: below every path MTU a loopback or LAN viewer meets, with room for SRTP.
pub(crate) const RTP_MTU: usize = 1200;
/// The most units kept for one GOP; a longer GOP is not cached (viewers then wait for the next
/// keyframe) so a source with keyframes far apart cannot make the feed grow without bound.
const GOP_CACHE_MAX: usize = 2000;
/// Units a viewer may fall behind before it is moved to the next keyframe.
pub(crate) const BROADCAST_DEPTH: usize = 1024;

/// What a viewer sends.
#[derive(Debug)]
pub(crate) enum Unit {
    /// One H.264 access unit as RTP payloads; `ts90` is its pts at 90 kHz.
    Video {
        ts90: i64,
        key: bool,
        payloads: Vec<Bytes>,
    },
    /// One Opus packet; `ts48` is its pts at 48 kHz.
    Audio { ts48: i64, payload: Bytes },
    /// The source stopped; viewers are torn down.
    End(String),
}

/// The audio a feed sends, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPlan {
    /// No audio stream in the slot.
    None,
    /// Opus, passed through.
    Opus,
    /// AAC transcoded to Opus.
    AacToOpus,
    /// An audio stream WebRTC cannot carry here (the reason); video is sent alone.
    Unsupported(String),
}

/// Codec facts of a slot that decide the SDP answer.
#[derive(Debug, Clone)]
pub struct FeedInfo {
    /// Video stream index.
    pub video_stream: u32,
    /// `profile-level-id` from the SPS (6 hex digits), if known.
    pub profile_level_id: Option<String>,
    /// Video size.
    pub width: u32,
    /// Video size.
    pub height: u32,
    /// Audio stream index and plan.
    pub audio_stream: Option<u32>,
    /// What happens to audio.
    pub audio: AudioPlan,
}

/// Why a slot cannot be fed to WebRTC viewers.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// No packet slot of that id, or it has no live writer.
    NotLive(String),
    /// Live but without a video stream we can send (the reason).
    NoCodec(String),
    /// Live, with video browsers cannot play as it is (B-frames, HEVC), which a transcoded
    /// rendition could serve (the reason).
    NeedsTranscode(String),
    /// Anything else.
    Other(String),
}

struct Shared {
    gop: Vec<Arc<Unit>>,
    /// False while the current GOP exceeded the cache (new viewers wait for a keyframe).
    gop_valid: bool,
    ended: Option<String>,
}

/// Counters of one feed (and so of one stream's WebRTC egress).
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Access units read from the ring.
    pub units: AtomicU64,
    /// Bytes read from the ring.
    pub bytes: AtomicU64,
    /// Packets the ring reader skipped (it fell behind the writer).
    pub ring_skipped: AtomicU64,
    /// Units viewers skipped because they fell behind the feed.
    pub viewer_skipped: AtomicU64,
    /// AAC frames that failed to decode.
    pub audio_errors: AtomicU64,
    /// Whether the slot carries B-frames (pts ≠ dts seen).
    pub bframes: AtomicBool,
}

/// The current GOP and the live units after it.
pub(crate) type Subscription = (Vec<Arc<Unit>>, broadcast::Receiver<Arc<Unit>>);

/// A running feed of one slot.
pub(crate) struct Feed {
    pub(crate) id: String,
    pub(crate) info: FeedInfo,
    shared: Mutex<Shared>,
    tx: broadcast::Sender<Arc<Unit>>,
    stop: AtomicBool,
    pub(crate) counters: FeedCounters,
}

impl Feed {
    /// Opens the slot, checks its codecs and starts the reading thread. `threads` counts live
    /// feed threads (for the leak checks). With `switch`, a source that turns to B-frames
    /// mid-stream is replaced by its rendition (else the feed goes on as it is).
    pub(crate) fn start(
        root: &Path,
        id: &str,
        threads: Arc<AtomicUsize>,
        switch: Option<Switch>,
    ) -> Result<Arc<Feed>, FeedError> {
        let reader = PacketReader::open_in(
            root,
            id,
            PacketReaderConfig {
                start: PacketStart::Keyframe,
            },
        )
        .map_err(|e| match e {
            Error::NotFound(_) | Error::WrongKind(_) | Error::NoPacketRing(_) => {
                FeedError::NotLive(e.to_string())
            }
            e => FeedError::Other(e.to_string()),
        })?;
        if !reader.writer_alive() {
            return Err(FeedError::NotLive(format!("slot {id} has no live writer")));
        }
        let streams = reader.streams();
        let info = plan(&reader, &streams)?;
        let (tx, _) = broadcast::channel(BROADCAST_DEPTH);
        let feed = Arc::new(Feed {
            id: id.to_string(),
            info,
            shared: Mutex::new(Shared {
                gop: Vec::new(),
                gop_valid: true,
                ended: None,
            }),
            tx,
            stop: AtomicBool::new(false),
            counters: FeedCounters::default(),
        });
        let f = feed.clone();
        threads.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("whep-feed-{id}"))
            .spawn(move || {
                let reason = f.run(reader, &streams, switch);
                f.end(reason);
                threads.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            return Err(FeedError::Other(format!("cannot start feed thread: {e}")));
        }
        Ok(feed)
    }

    /// Subscribes a viewer: the units of the current GOP (empty when none is cached: the viewer
    /// then waits for a keyframe) and the live units after them, with nothing lost in between.
    /// `Err` with the reason when the feed has ended.
    pub(crate) fn subscribe(&self) -> Result<Subscription, String> {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &s.ended {
            return Err(r.clone());
        }
        let gop = if s.gop_valid {
            s.gop.clone()
        } else {
            Vec::new()
        };
        Ok((gop, self.tx.subscribe()))
    }

    /// Asks the thread to stop (the last viewer left); it ends within 200 ms.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the feed has ended, and why.
    pub(crate) fn ended(&self) -> Option<String> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ended
            .clone()
    }

    fn end(&self, reason: String) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.gop.clear();
        s.ended = Some(reason.clone());
        let _ = self.tx.send(Arc::new(Unit::End(reason)));
    }

    fn send(&self, u: Unit) {
        let key = matches!(u, Unit::Video { key: true, .. });
        let video = matches!(u, Unit::Video { .. });
        let u = Arc::new(u);
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if key {
            s.gop.clear();
            s.gop_valid = true;
        }
        // Audio is not cached: a joining viewer starts its sound at the live edge.
        if video && s.gop_valid {
            if s.gop.len() < GOP_CACHE_MAX {
                s.gop.push(u.clone());
            } else {
                s.gop.clear();
                s.gop_valid = false;
            }
        }
        let _ = self.tx.send(u);
    }

    /// The reading loop; returns why it ended.
    fn run(&self, reader: PacketReader, streams: &[StreamInfo], switch: Option<Switch>) -> String {
        let info = self.info.clone();
        let mut src = Source::new(self, reader, streams, &info);
        let mut payloader = H264Payloader::default();
        let mut sps_pps: Vec<u8> = Vec::new();
        let mut buf = Vec::new();
        // The viewers' timeline stays continuous across a switch of source: units of the new
        // source are shifted so that its first keyframe comes as long after the last unit sent
        // as the switch took. (Continuing at +1 frame instead made Chromium's timing see every
        // later frame as late by the switch's duration: 3 freezes a second after it.)
        let mut shift90: i64 = 0;
        let mut last90: Option<(i64, std::time::Instant)> = None;
        let mut rebase = false;
        let mut switch = switch;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return "feed stopped".into();
            }
            let f = match src.follower.next(&mut buf, Duration::from_millis(200)) {
                Ok(f) => f,
                Err(Error::Timeout) => continue,
                Err(Error::WriterGone) => return "the source stopped".into(),
                Err(e) => return format!("slot read failed: {e}"),
            };
            let pi = f.info;
            if pi.skipped > 0 {
                self.counters
                    .ring_skipped
                    .fetch_add(pi.skipped, Ordering::Relaxed);
            }
            // The buffer becomes the unit's bytes; the next read gets a fresh one.
            buf.truncate(pi.size as usize);
            let data = Bytes::from(std::mem::take(&mut buf));
            self.counters.units.fetch_add(1, Ordering::Relaxed);
            self.counters
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if pi.stream == src.video {
                let key = pi.flags & FC_PACKET_KEYFRAME != 0;
                if let Some(p) = f.params {
                    // New parameters that bring B-frames: browsers would freeze on them, so
                    // the viewers move to the host's rendition of the stream.
                    if let Some(sw) = switch.as_ref().filter(|_| reorders(&p)) {
                        let why = "the stream's H.264 switched to B-frames (frames out of \
                                   decoding order), which browsers do not play over WebRTC";
                        log::info!(
                            "whep: {}: {why}; moving its viewers to a rendition",
                            self.id
                        );
                        let name = match (sw.make)(&sw.stream, why) {
                            Ok(n) => n,
                            Err(e) => return format!("{why}; {e}"),
                        };
                        let reader = match PacketReader::open_in(
                            &sw.root,
                            &name,
                            PacketReaderConfig {
                                start: PacketStart::Keyframe,
                            },
                        ) {
                            Ok(r) => r,
                            Err(e) => return format!("rendition {name}: {e}"),
                        };
                        let st = reader.streams();
                        if !st
                            .iter()
                            .any(|s| s.media == FC_MEDIA_VIDEO && s.codec == FC_CODEC_H264)
                        {
                            return format!("rendition {name} has no H.264 video");
                        }
                        src = Source::new(self, reader, &st, &info);
                        switch = None;
                        rebase = true;
                        sps_pps.clear();
                        payloader = H264Payloader::default();
                        continue;
                    }
                    sps_pps = p;
                }
                if pi.pts != pi.dts && !self.counters.bframes.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "whep: {}: the source has B-frames; they are sent in decode order \
                         with pts as RTP time (encode with -bf 0 for the smoothest playback)",
                        self.id
                    );
                }
                let ts90 = rescale(pi.pts, src.vtb, 90_000);
                if rebase {
                    if !key {
                        continue;
                    }
                    let gap = last90.map_or(0, |(l, at)| {
                        l + (at.elapsed().as_micros() as i64 * 9 / 100).max(3000)
                    });
                    shift90 = gap - ts90;
                    rebase = false;
                }
                // A keyframe must carry its parameter sets: a joining decoder starts there.
                let au = if key && !has_sps(&data) && !sps_pps.is_empty() {
                    let mut v = Vec::with_capacity(sps_pps.len() + data.len());
                    v.extend_from_slice(&sps_pps);
                    v.extend_from_slice(&data);
                    Bytes::from(v)
                } else {
                    data
                };
                let payloads = match payloader.payload(RTP_MTU, &au) {
                    Ok(p) if !p.is_empty() => p,
                    _ => continue,
                };
                last90 = Some((ts90 + shift90, std::time::Instant::now()));
                self.send(Unit::Video {
                    ts90: ts90 + shift90,
                    key,
                    payloads,
                });
            } else if Some(pi.stream) == src.audio && !rebase {
                let ts48 = rescale(pi.pts, src.atb, 48_000) + shift90 * 48_000 / 90_000;
                match info.audio {
                    AudioPlan::Opus => self.send(Unit::Audio {
                        ts48,
                        payload: data,
                    }),
                    AudioPlan::AacToOpus => {
                        if let Some(t) = src.aac.as_mut() {
                            if pi.flags & FC_PACKET_DISCONTINUITY != 0 {
                                t.reset();
                            }
                            let before = t.errors();
                            for f in t.push(&data, ts48) {
                                self.send(Unit::Audio {
                                    ts48: f.ts48,
                                    payload: Bytes::from(f.data),
                                });
                            }
                            let e = t.errors() - before;
                            if e > 0 {
                                self.counters.audio_errors.fetch_add(e, Ordering::Relaxed);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Where a passthrough feed goes when its source turns to B-frames mid-stream.
pub(crate) struct Switch {
    /// Slot root.
    pub(crate) root: std::path::PathBuf,
    /// The stream (the name its rendition is asked for by).
    pub(crate) stream: String,
    /// The host's renditions.
    pub(crate) make: crate::Renditions,
}

/// The slot a feed reads and where its streams are.
struct Source {
    follower: Follower,
    video: u32,
    vtb: (u32, u32),
    audio: Option<u32>,
    atb: (u32, u32),
    aac: Option<AacToOpus>,
}

impl Source {
    fn new(feed: &Feed, reader: PacketReader, streams: &[StreamInfo], info: &FeedInfo) -> Source {
        let v = streams
            .iter()
            .find(|s| s.media == FC_MEDIA_VIDEO)
            .map_or((info.video_stream, (1, 90_000)), |s| (s.index, s.timebase));
        // The audio plan was made for the first source; a rendition copies its audio.
        let a = streams
            .iter()
            .find(|s| s.media == FC_MEDIA_AUDIO)
            .filter(|_| info.audio_stream.is_some());
        let aac = match (&info.audio, a) {
            (AudioPlan::AacToOpus, Some(a)) if a.codec == FC_CODEC_AAC => {
                let p = reader
                    .codec_params(a.index, 0)
                    .map(|(_, d)| d)
                    .unwrap_or_default();
                match AacToOpus::new(&p, 96_000) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        log::warn!("whep: {}: audio not sent: {e}", feed.id);
                        None
                    }
                }
            }
            _ => None,
        };
        Source {
            follower: Follower::new(reader),
            video: v.0,
            vtb: v.1,
            audio: a.map(|a| a.index),
            atb: a.map_or((1, 48_000), |a| a.timebase),
            aac,
        }
    }
}

/// Whether Annex-B parameter sets say the H.264 has frames out of decoding order.
fn reorders(params: &[u8]) -> bool {
    framecache_media::codec::h264_sps_info(params).and_then(|i| i.reorders()) == Some(true)
}

fn has_sps(au: &[u8]) -> bool {
    framecache_media::codec::nal_units(au)
        .iter()
        .any(|n| n.first().is_some_and(|h| h & 0x1f == 7))
}

/// Decides what a slot's streams become in WebRTC.
fn plan(reader: &PacketReader, streams: &[StreamInfo]) -> Result<FeedInfo, FeedError> {
    let video = streams.iter().find(|s| s.media == FC_MEDIA_VIDEO);
    let v = match video {
        Some(v) if v.codec == FC_CODEC_H264 => v,
        Some(v) if v.codec == framecache_shm::packet::FC_CODEC_HEVC => {
            return Err(FeedError::NeedsTranscode(format!(
                "the stream's video is {}; WebRTC egress sends H.264 only",
                v.codec_name
            )))
        }
        Some(v) => {
            return Err(FeedError::NoCodec(format!(
                "the stream's video is {}; WebRTC egress sends H.264 only",
                v.codec_name
            )))
        }
        None => return Err(FeedError::NoCodec("the stream has no video".into())),
    };
    let params = reader.codec_params(v.index, 0).ok().map(|(_, p)| p);
    let profile_level_id = params.as_deref().and_then(profile_level_id);
    // Browsers' WebRTC H.264 decoders are not made for frames out of decoding order: a source
    // with B-frames froze in Chromium (20 of 469 frames decoded). It needs a rendition (the
    // host's transcoder), else a refusal that names the fix.
    let sps = params
        .as_deref()
        .and_then(framecache_media::codec::h264_sps_info);
    log::debug!(
        "whep: B-frames in the video: {:?}",
        sps.as_ref().map(|i| i.reorders())
    );
    if sps.as_ref().and_then(|i| i.reorders()) == Some(true) {
        return Err(FeedError::NeedsTranscode(
            "the stream's H.264 has B-frames (frames out of decoding order), which browsers do \
             not play over WebRTC"
                .into(),
        ));
    }
    let audio_s = streams.iter().find(|s| s.media == FC_MEDIA_AUDIO);
    let (audio_stream, audio) = match audio_s {
        None => (None, AudioPlan::None),
        Some(a) if a.codec == FC_CODEC_OPUS => (Some(a.index), AudioPlan::Opus),
        Some(a) if a.codec == FC_CODEC_AAC => {
            if opus_available() {
                (Some(a.index), AudioPlan::AacToOpus)
            } else {
                (
                    None,
                    AudioPlan::Unsupported("AAC needs libopus to become Opus".into()),
                )
            }
        }
        Some(a) => (
            None,
            AudioPlan::Unsupported(format!("{} audio is not transcoded", a.codec_name)),
        ),
    };
    Ok(FeedInfo {
        video_stream: v.index,
        profile_level_id,
        width: v.width,
        height: v.height,
        audio_stream,
        audio,
    })
}

/// `profile-level-id` (RFC 6184) from the first SPS in Annex-B parameter sets.
pub(crate) fn profile_level_id(params: &[u8]) -> Option<String> {
    let sps = framecache_media::codec::nal_units(params)
        .into_iter()
        .find(|n| n.first().is_some_and(|h| h & 0x1f == 7))?;
    if sps.len() < 4 {
        return None;
    }
    Some(format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_level_id_comes_from_the_sps() {
        let p = [
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xaa, 0, 0, 0, 1, 0x68, 0xce,
        ];
        assert_eq!(profile_level_id(&p).as_deref(), Some("42c01e"));
        assert_eq!(profile_level_id(&[0, 0, 0, 1, 0x68, 1, 2, 3]), None);
        assert_eq!(profile_level_id(&[]), None);
    }
}

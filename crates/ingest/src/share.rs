//! One slot fed by several inputs by priority: a push key (`publish://KEY`) and pull URLs in
//! one [`crate::Engine::add`] list, e.g. the encoder's push first and a UDP feed or a file
//! slate as backup. The highest-priority live input writes; the others keep running (hot
//! standby, so a takeover needs no connect) and their media are dropped. When the writer ends,
//! the next live input takes over at its next keyframe; when a better one returns, the slot
//! fails back to it at its first keyframe. Each switch is a new session of the slot's sink:
//! timestamps keep rising and the first packet of each stream is flagged
//! `FC_PACKET_DISCONTINUITY`.
//!
//! [`Arbiter`] is the policy (sans-IO: media in, media out); [`SlotShare`] puts it in front of
//! one [`SlotSink`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use framecache_media::{Media, Track};
use framecache_shm::error::Result;
use framecache_shm::packet::*;

use crate::sink::SlotSink;

/// What one input said last: its tracks and their codec parameters, replayed to the sink when
/// it takes over.
#[derive(Debug, Default, Clone)]
struct Source {
    live: bool,
    /// Tracks came one by one ([`Media::AddTrack`], RTMP) rather than announced.
    discovered: bool,
    tracks: Vec<Track>,
    params: BTreeMap<usize, Vec<u8>>,
}

impl Source {
    fn has_video(&self) -> bool {
        self.tracks.iter().any(|t| is_video(t.codec))
    }
}

fn is_video(codec: u32) -> bool {
    matches!(codec, FC_CODEC_H264 | FC_CODEC_HEVC)
}

/// What the sink must do with one input's media item.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Start a new session first (another input takes over).
    pub begin_session: bool,
    /// Media to push, in order (a takeover replays the input's tracks and parameters).
    pub media: Vec<Media>,
}

/// The priority policy of a shared slot (0 = highest priority).
#[derive(Debug, Default)]
pub struct Arbiter {
    sources: BTreeMap<usize, Source>,
    active: Option<usize>,
    waiting_key: bool,
    /// Source time (90 kHz) of the keyframe the active input started at: its units from
    /// before it (audio interleaved behind the video) are dropped, so every stream continues
    /// after what the slot had.
    start_90k: Option<i64>,
}

fn at_90k(t: i64, tb: (u32, u32)) -> i64 {
    if t == FC_NOPTS || tb.1 == 0 {
        return t;
    }
    (i128::from(t) * 90_000 * i128::from(tb.0) / i128::from(tb.1)) as i64
}

impl Arbiter {
    /// No input live.
    pub fn new() -> Arbiter {
        Arbiter::default()
    }

    /// The input writing now.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Input `prio` started (a pusher was accepted, a pull input connected or restarted, as a
    /// looping file does). It takes over at its first keyframe if no better input is live;
    /// if it was writing already, its restart is a new session all the same.
    pub fn claim(&mut self, prio: usize) {
        let s = self.sources.entry(prio).or_default();
        *s = Source {
            live: true,
            ..Source::default()
        };
        if self.active == Some(prio) {
            self.active = None;
        }
    }

    /// Input `prio` ended. If it was writing, the next live input takes over with its next
    /// media.
    pub fn release(&mut self, prio: usize) {
        self.sources.remove(&prio);
        if self.active == Some(prio) {
            self.active = None;
        }
    }

    /// Whether any input is live.
    pub fn any_live(&self) -> bool {
        self.sources.values().any(|s| s.live)
    }

    /// One media item of input `prio`.
    pub fn offer(&mut self, prio: usize, m: Media) -> Verdict {
        let s = self.sources.entry(prio).or_insert_with(|| Source {
            live: true,
            ..Source::default()
        });
        match &m {
            Media::Tracks(t) => {
                s.tracks = t.clone();
                s.discovered = false;
                s.params.clear();
            }
            Media::AddTrack(t) => {
                s.tracks.push(*t);
                s.discovered = true;
            }
            Media::Params { track, data } => {
                s.params.insert(*track, data.clone());
            }
            Media::Frame { .. } => {}
        }
        let none = Verdict {
            begin_session: false,
            media: Vec::new(),
        };
        // A better input is live: this one stands by.
        if self.sources.range(..prio).any(|(_, s)| s.live) {
            return none;
        }
        let mut v = none;
        if self.active != Some(prio) {
            let s = &self.sources[&prio];
            if s.tracks.is_empty() {
                // Nothing to replay yet: wait for its tracks.
                return v;
            }
            // Take over: a new session with this input's tracks and parameters.
            self.active = Some(prio);
            self.waiting_key = s.has_video();
            self.start_90k = None;
            v.begin_session = true;
            // As the input said them: announced, or discovered one by one (then the sink
            // waits for the rest before it decides about the slot).
            if s.discovered {
                v.media.extend(s.tracks.iter().map(|&t| Media::AddTrack(t)));
            } else {
                v.media.push(Media::Tracks(s.tracks.clone()));
            }
            for (&track, data) in &s.params {
                v.media.push(Media::Params {
                    track,
                    data: data.clone(),
                });
            }
            if !matches!(m, Media::Frame { .. }) {
                return v; // already in the replay
            }
        }
        if let Media::Frame {
            track,
            keyframe,
            dts,
            pts,
            ..
        } = &m
        {
            let t = self.sources[&prio].tracks.get(*track).copied();
            let video = t.is_some_and(|t| is_video(t.codec));
            let time = t.map_or(FC_NOPTS, |t| {
                at_90k(if *dts == FC_NOPTS { *pts } else { *dts }, t.timebase)
            });
            if self.waiting_key {
                if !(video && *keyframe) {
                    return v; // from its first video keyframe on
                }
                self.waiting_key = false;
                self.start_90k = (time != FC_NOPTS).then_some(time);
            } else if let Some(start) = self.start_90k {
                if time != FC_NOPTS && time < start {
                    return v; // from before the keyframe it started at
                }
            }
        }
        v.media.push(m);
        v
    }
}

/// A slot shared by inputs of different priority: the [`Arbiter`] in front of one sink.
pub struct SlotShare {
    inner: Mutex<(Arbiter, SlotSink)>,
}

impl std::fmt::Debug for SlotShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotShare").finish_non_exhaustive()
    }
}

impl SlotShare {
    /// A share writing through `sink`.
    pub fn new(sink: SlotSink) -> Arc<SlotShare> {
        Arc::new(SlotShare {
            inner: Mutex::new((Arbiter::new(), sink)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Arbiter, SlotSink)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`Arbiter::claim`].
    pub fn claim(&self, prio: usize) {
        self.lock().0.claim(prio);
    }

    /// See [`Arbiter::release`]. The slot stays open: another input, or this one again, takes
    /// it over; it closes when the share is dropped.
    pub fn release(&self, prio: usize) {
        let mut g = self.lock();
        g.0.release(prio);
        if !g.0.any_live() {
            g.1.end_session(false);
        }
    }

    /// One media item of input `prio`: written if that input writes now.
    pub fn offer(&self, prio: usize, m: Media) -> Result<()> {
        let mut g = self.lock();
        let (arb, sink) = &mut *g;
        let v = arb.offer(prio, m);
        if v.begin_session {
            sink.begin_session();
        }
        for m in v.media {
            sink.push(m)?;
        }
        Ok(())
    }

    /// The input writing now.
    pub fn active(&self) -> Option<usize> {
        self.lock().0.active()
    }

    /// Wakes the slot's readers (see [`SlotSink::flush`]).
    pub fn flush(&self) {
        self.lock().1.flush();
    }
}

/// An input's place in a shared slot.
#[derive(Clone)]
pub struct SharedFeed {
    /// The slot.
    pub share: Arc<SlotShare>,
    /// The input's priority (0 = highest).
    pub priority: usize,
}

impl std::fmt::Debug for SharedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedFeed(priority {})", self.priority)
    }
}

impl PartialEq for SharedFeed {
    fn eq(&self, o: &SharedFeed) -> bool {
        Arc::ptr_eq(&self.share, &o.share) && self.priority == o.priority
    }
}

impl Eq for SharedFeed {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracks() -> Media {
        Media::Tracks(vec![
            Track {
                codec: FC_CODEC_H264,
                timebase: (1, 90000),
            },
            Track {
                codec: FC_CODEC_AAC,
                timebase: (1, 48000),
            },
        ])
    }

    fn frame(track: usize, keyframe: bool, pts: i64) -> Media {
        Media::Frame {
            track,
            pts,
            dts: pts,
            keyframe,
            discontinuity: false,
            data: vec![1],
        }
    }

    fn params() -> Media {
        Media::Params {
            track: 0,
            data: vec![0, 0, 0, 1, 0x67],
        }
    }

    #[test]
    fn the_best_live_input_writes_and_the_others_stand_by() {
        let mut a = Arbiter::new();
        // The backup (priority 1) runs alone: it writes from its first video keyframe.
        a.claim(1);
        assert!(a.offer(1, tracks()).begin_session);
        assert_eq!(a.active(), Some(1));
        assert_eq!(a.offer(1, params()).media.len(), 1);
        assert!(
            a.offer(1, frame(1, true, 0)).media.is_empty(),
            "audio before the keyframe"
        );
        assert!(
            a.offer(1, frame(0, false, 0)).media.is_empty(),
            "a P frame first"
        );
        assert_eq!(a.offer(1, frame(0, true, 90)).media.len(), 1);
        assert!(
            a.offer(1, frame(1, true, 47)).media.is_empty(),
            "audio from before the keyframe (47/48000 s < 90/90000 s)"
        );
        assert_eq!(a.offer(1, frame(1, true, 48)).media.len(), 1);

        // The push (priority 0) arrives: it takes over with a new session, replaying its
        // tracks and parameters, from its first keyframe; the backup is dropped meanwhile.
        a.claim(0);
        let v = a.offer(0, tracks());
        assert!(v.begin_session);
        assert_eq!(v.media, vec![tracks()]);
        assert!(
            a.offer(1, frame(0, true, 2)).media.is_empty(),
            "standing by"
        );
        let v = a.offer(0, params());
        assert_eq!((v.begin_session, v.media.len()), (false, 1));
        assert!(a.offer(0, frame(0, false, 5)).media.is_empty());
        assert_eq!(a.offer(0, frame(0, true, 6)).media.len(), 1);
        assert_eq!(a.active(), Some(0));

        // The push drops: the backup's next media take over, replaying what it said before.
        a.release(0);
        assert_eq!(a.active(), None);
        let v = a.offer(1, frame(0, false, 3));
        assert!(v.begin_session);
        assert_eq!(
            v.media,
            vec![tracks(), params()],
            "replay, then wait for a keyframe"
        );
        let v = a.offer(1, frame(0, true, 4));
        assert_eq!((v.begin_session, v.media.len()), (false, 1));
        assert_eq!(a.active(), Some(1));

        // The writing input restarts (a file loops): a new session too.
        a.claim(1);
        let v = a.offer(1, tracks());
        assert!(v.begin_session);
        assert_eq!(v.media, vec![tracks()]);
    }

    #[test]
    fn an_input_without_tracks_yet_waits_and_audio_only_needs_no_keyframe() {
        let mut a = Arbiter::new();
        a.claim(0);
        assert!(
            a.offer(0, frame(0, true, 0)).media.is_empty(),
            "no tracks: nothing to write"
        );
        assert_eq!(a.active(), None);
        let audio = Media::Tracks(vec![Track {
            codec: FC_CODEC_AAC,
            timebase: (1, 48000),
        }]);
        assert!(a.offer(0, audio).begin_session);
        assert_eq!(a.offer(0, frame(0, true, 1)).media.len(), 1);
        assert!(a.any_live());
        a.release(0);
        assert!(!a.any_live());

        // Tracks discovered one by one (RTMP) are replayed the same way.
        a.claim(2);
        let video = Track {
            codec: FC_CODEC_H264,
            timebase: (1, 1000),
        };
        let v = a.offer(2, Media::AddTrack(video));
        assert!(v.begin_session);
        assert_eq!(v.media, vec![Media::AddTrack(video)]);
    }
}

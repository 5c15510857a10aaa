//! The timing of one WHEP viewer, sans-IO: what RTP time each unit gets, which units are
//! skipped, and when the viewer is given up. Driven by the units of the feed, the peer
//! connection's state and `now`; the async task in `lib.rs` only moves bytes and waits.
//!
//! - Catch-up: a new viewer first gets the cached GOP, from its keyframe, squeezed one RTP tick
//!   apart so the decoder reaches the live edge at once.
//! - Live: video keeps its spacing, shifted by one offset fixed at the first live frame; audio
//!   takes the same shift in 48 kHz units (lip sync holds) and waits for that first frame.
//! - A viewer that fell behind the feed (lagged) resumes at the next keyframe, never mid-GOP.
//! - Disconnected (ICE consent lost) for longer than the timeout: given up. Back to connected
//!   before that: goes on. Failed or closed: given up at once.

use std::time::{Duration, Instant};

use webrtc::peer_connection::RTCPeerConnectionState as State;

/// The RTP timing and liveness of one viewer.
#[derive(Debug, Clone)]
pub struct ViewerClock {
    last_out: u32,
    offset: Option<i64>,
    started: bool,
    disconnected_since: Option<Instant>,
    disconnect_timeout: Duration,
}

impl ViewerClock {
    /// A viewer whose first RTP timestamp follows `rtp_start` (random per viewer, as RFC 3550
    /// asks), given up after `disconnect_timeout` without consent.
    pub fn new(rtp_start: u32, disconnect_timeout: Duration) -> ViewerClock {
        ViewerClock {
            last_out: rtp_start,
            offset: None,
            started: false,
            disconnected_since: None,
            disconnect_timeout,
        }
    }

    /// RTP time of a unit of the cached GOP (`None`: skip it, it comes before a keyframe).
    pub fn catch_up_video(&mut self, key: bool) -> Option<u32> {
        if !self.started && !key {
            return None;
        }
        self.started = true;
        self.last_out = self.last_out.wrapping_add(1);
        Some(self.last_out)
    }

    /// RTP time of a live video unit with 90 kHz time `ts90` (`None`: skip it, the viewer waits
    /// for a keyframe).
    pub fn live_video(&mut self, ts90: i64, key: bool) -> Option<u32> {
        if !self.started && !key {
            return None;
        }
        self.started = true;
        let last = self.last_out;
        let off = *self
            .offset
            .get_or_insert_with(|| ts90 - (last.wrapping_add(1) as i64));
        self.last_out = (ts90 - off) as u32;
        Some(self.last_out)
    }

    /// RTP time of a live audio unit with 48 kHz time `ts48` (`None`: no video went out live
    /// yet, so there is no shift to keep lip sync with).
    pub fn live_audio(&self, ts48: i64) -> Option<u32> {
        let off = self.offset?;
        Some((ts48 - off * 48_000 / 90_000) as u32)
    }

    /// The viewer fell behind the feed and lost units: video resumes at the next keyframe.
    pub fn lagged(&mut self) {
        self.started = false;
    }

    /// The peer connection's state changed at `now`. Returns why the viewer is given up, if it
    /// is.
    pub fn connection(&mut self, now: Instant, state: State) -> Option<&'static str> {
        match state {
            State::Failed | State::Closed => Some("connection failed"),
            State::Disconnected => {
                self.disconnected_since.get_or_insert(now);
                None
            }
            State::Connected => {
                self.disconnected_since = None;
                None
            }
            _ => None,
        }
    }

    /// When the viewer is given up unless its connection comes back.
    pub fn deadline(&self) -> Option<Instant> {
        self.disconnected_since.map(|t| t + self.disconnect_timeout)
    }

    /// Whether the viewer is given up at `now` (disconnected too long).
    pub fn expired(&self, now: Instant) -> Option<&'static str> {
        self.deadline()
            .filter(|d| now >= *d)
            .map(|_| "disconnected too long")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_squeezes_the_gop_from_its_keyframe_then_live_keeps_spacing() {
        let mut c = ViewerClock::new(1000, Duration::from_secs(5));
        // A GOP cached mid-way: the units before the keyframe are skipped.
        assert_eq!(c.catch_up_video(false), None);
        assert_eq!(c.catch_up_video(true), Some(1001));
        assert_eq!(c.catch_up_video(false), Some(1002));
        assert_eq!(c.catch_up_video(false), Some(1003));
        // Live at 90 kHz, 3000 apart (30 fps): the first follows the catch-up by one tick,
        // the rest keep their spacing.
        assert_eq!(c.live_video(900_000, false), Some(1004));
        assert_eq!(c.live_video(903_000, false), Some(4004));
        assert_eq!(c.live_video(906_000, true), Some(7004));
        // Audio at 48 kHz takes the same shift: the offset 900_000 - 1004 = 898_996 at 90 kHz
        // is 479_464 at 48 kHz, so the audio of the first live frame's instant lands at 536.
        assert_eq!(c.live_audio(480_000), Some(536));
    }

    #[test]
    fn audio_waits_for_live_video_and_wraps_like_rtp() {
        let mut c = ViewerClock::new(u32::MAX - 1, Duration::from_secs(5));
        assert_eq!(c.live_audio(48_000), None, "no shift yet");
        assert_eq!(c.live_video(10, false), None, "waits for a keyframe");
        assert_eq!(c.live_video(10, true), Some(u32::MAX));
        assert_eq!(c.live_video(3010, false), Some(2999), "wraps at 2^32");
        assert!(c.live_audio(48_000).is_some());
    }

    #[test]
    fn a_lagging_viewer_resumes_at_a_keyframe_on_the_same_timeline() {
        let mut c = ViewerClock::new(0, Duration::from_secs(5));
        assert_eq!(c.live_video(90_000, true), Some(1));
        assert_eq!(c.live_video(93_000, false), Some(3001));
        c.lagged();
        assert_eq!(c.live_video(96_000, false), None);
        assert_eq!(c.live_video(99_000, false), None);
        assert_eq!(
            c.live_video(102_000, true),
            Some(12_001),
            "same offset as before"
        );
        assert_eq!(c.live_video(105_000, false), Some(15_001));
    }

    #[test]
    fn disconnected_too_long_is_given_up_reconnected_is_not() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = ViewerClock::new(0, 5 * s);
        assert_eq!(c.connection(t0, State::Connected), None);
        assert_eq!(c.deadline(), None);
        assert_eq!(c.connection(t0 + s, State::Disconnected), None);
        assert_eq!(c.deadline(), Some(t0 + 6 * s));
        // A second Disconnected does not move the deadline.
        assert_eq!(c.connection(t0 + 3 * s, State::Disconnected), None);
        assert_eq!(c.expired(t0 + 5 * s), None);
        assert_eq!(
            c.connection(t0 + 5 * s, State::Connected),
            None,
            "consent is back"
        );
        assert_eq!(c.deadline(), None);
        assert_eq!(c.expired(t0 + 60 * s), None);
        c.connection(t0 + 10 * s, State::Disconnected);
        assert_eq!(c.expired(t0 + 15 * s), Some("disconnected too long"));
        assert_eq!(c.connection(t0, State::Failed), Some("connection failed"));
        assert_eq!(c.connection(t0, State::Closed), Some("connection failed"));
    }
}

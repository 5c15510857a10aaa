//! RTP depacketising for WebRTC publishers (WHIP), sans-IO: RTP packets and `now` in,
//! [`Media`] out. H.264 in packetization-mode 1 (RFC 6184: single NAL units, STAP-A, FU-A)
//! becomes Annex-B access units with their parameter sets as codec parameters; Opus
//! (RFC 7587) one packet per unit with an `OpusHead`.
//!
//! [`Depack`] puts each track's packets back in order (a short wait for a missing one, then
//! it is given up), starts video at a keyframe and after a loss waits for the next one (telling
//! the caller to ask the publisher for it), and maps each track's RTP clock onto one timeline
//! from the arrival of its first packet. Hostile payloads give no output, never a panic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::time::Unwrapper;
use crate::{Media, Track};
use framecache_shm::packet::{FC_CODEC_H264, FC_CODEC_OPUS};

/// How long a missing packet is waited for before the packets after it go on without it.
pub const REORDER_WAIT: Duration = Duration::from_millis(150);
/// Packets held while waiting for a missing one, at most.
const MAX_HELD: usize = 1024;
/// Largest access unit rebuilt (the rest of a bigger one is dropped with it).
pub const MAX_AU: usize = 8 << 20;
/// RTP clock of H.264 (and of track 0).
pub const VIDEO_CLOCK: u32 = 90_000;
/// RTP clock of Opus (and of track 1).
pub const OPUS_CLOCK: u32 = 48_000;

/// One RTP packet as the depacketiser needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Marker bit (last packet of a video frame).
    pub marker: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Puts one track's packets back in sequence order.
#[derive(Debug)]
struct Reorder {
    seq: Unwrapper,
    next: Option<i64>,
    held: BTreeMap<i64, (Instant, RtpIn)>,
}

impl Reorder {
    fn new() -> Reorder {
        Reorder {
            seq: Unwrapper::new(16),
            next: None,
            held: BTreeMap::new(),
        }
    }

    fn push(&mut self, now: Instant, p: RtpIn) {
        let s = self.seq.unwrap(p.seq as i64);
        let next = *self.next.get_or_insert(s);
        // Late (given up already) or a duplicate: dropped.
        if s >= next {
            self.held.entry(s).or_insert((now, p));
        }
    }

    /// The next packet in order, and whether packets were given up before it.
    fn pop(&mut self, now: Instant) -> Option<(RtpIn, bool)> {
        let next = self.next?;
        if let Some((_, p)) = self.held.remove(&next) {
            self.next = Some(next + 1);
            return Some((p, false));
        }
        let (&first, (since, _)) = self.held.iter().next()?;
        if now.saturating_duration_since(*since) < REORDER_WAIT && self.held.len() <= MAX_HELD {
            return None;
        }
        let (_, p) = self.held.remove(&first)?;
        self.next = Some(first + 1);
        Some((p, true))
    }
}

/// Rebuilds H.264 access units (Annex-B) from RTP payloads in order (RFC 6184, mode 1).
#[derive(Debug, Default)]
struct H264Au {
    ts: Option<u32>,
    /// Arrival of the unit's first packet.
    arrived: Option<Instant>,
    au: Vec<u8>,
    fu: Option<Vec<u8>>,
    broken: bool,
}

impl H264Au {
    fn take(&mut self) -> Option<Unit> {
        let ts = self.ts.take()?;
        self.fu = None;
        Some(Unit {
            ts,
            arrived: self.arrived.take()?,
            au: std::mem::take(&mut self.au),
            broken: std::mem::take(&mut self.broken),
        })
    }

    fn nal(&mut self, n: &[u8]) {
        if n.is_empty() {
            return;
        }
        if self.au.len() + n.len() + 4 > MAX_AU {
            self.broken = true;
            return;
        }
        self.au.extend_from_slice(&[0, 0, 0, 1]);
        self.au.extend_from_slice(n);
    }

    /// One packet; the access units it completes (the previous one when the timestamp moved
    /// on without a marker, this one at its marker), each with "broken" (data missing).
    fn push(&mut self, now: Instant, p: &RtpIn, lost_before: bool, done: &mut Vec<Unit>) {
        if self.ts.is_some_and(|t| t != p.ts) {
            done.extend(self.take());
        }
        self.arrived.get_or_insert(now);
        if lost_before {
            // The loss may have taken the end of the last unit (already out: flagged by the
            // caller) or the start of this one.
            self.broken = true;
        }
        self.ts = Some(p.ts);
        let d = &p.payload[..];
        match d.first().map(|b| b & 0x1f) {
            Some(1..=23) => self.nal(d),
            Some(24) => {
                // STAP-A: 16-bit sizes, each followed by a NAL unit.
                let mut i = 1;
                while i < d.len() {
                    let Some(sz) = d.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
                        self.broken = true;
                        break;
                    };
                    let Some(n) = d.get(i + 2..i + 2 + sz as usize) else {
                        self.broken = true;
                        break;
                    };
                    self.nal(n);
                    i += 2 + sz as usize;
                }
            }
            Some(28) if d.len() >= 2 => {
                let (start, end) = (d[1] & 0x80 != 0, d[1] & 0x40 != 0);
                if start {
                    if self.fu.is_some() {
                        self.broken = true;
                    }
                    self.fu = Some(vec![(d[0] & 0xe0) | (d[1] & 0x1f)]);
                }
                match self.fu.as_mut() {
                    Some(fu) if fu.len() + d.len() <= MAX_AU => fu.extend_from_slice(&d[2..]),
                    _ => {
                        self.fu = None;
                        self.broken = true;
                    }
                }
                if end {
                    if let Some(fu) = self.fu.take() {
                        self.nal(&fu);
                    }
                }
            }
            // Empty, STAP-B/MTAP/FU-B (not in mode 1), reserved: nothing to take.
            _ => {}
        }
        if p.marker {
            done.extend(self.take());
        }
    }
}

/// A rebuilt access unit.
#[derive(Debug)]
struct Unit {
    ts: u32,
    arrived: Instant,
    au: Vec<u8>,
    /// Data of it was lost.
    broken: bool,
}

/// One track's RTP clock on the session's timeline.
#[derive(Debug)]
struct Clock {
    rate: u32,
    ts: Unwrapper,
    /// (first unwrapped RTP time, its place on the timeline in `rate` ticks).
    base: Option<(i64, i64)>,
}

impl Clock {
    fn new(rate: u32) -> Clock {
        Clock {
            rate,
            ts: Unwrapper::new(32),
            base: None,
        }
    }

    fn pts(&mut self, origin: Instant, arrived: Instant, rtp: u32) -> i64 {
        let t = self.ts.unwrap(rtp as i64);
        let (first, at) = *self.base.get_or_insert_with(|| {
            let since = arrived.saturating_duration_since(origin);
            (t, (since.as_micros() as i64) * self.rate as i64 / 1_000_000)
        });
        at + (t - first)
    }
}

/// What [`Depack::push_video`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// Send the publisher a picture loss indication: video waits for a keyframe.
    pub keyframe: bool,
}

/// The media of one WHIP publisher, sans-IO: RTP in, [`Media`] out (track 0 H.264 at 90 kHz,
/// track 1 Opus at 48 kHz when the offer had audio).
#[derive(Debug)]
pub struct Depack {
    origin: Option<Instant>,
    video: Reorder,
    au: H264Au,
    vclock: Clock,
    audio: Option<(Reorder, Clock)>,
    params: Option<Vec<u8>>,
    need_key: bool,
    loss: bool,
}

/// `OpusHead` (RFC 7845 §5.1) for a WebRTC Opus stream: 2 channels, 48 kHz, no pre-skip.
pub fn opus_head() -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(2); // channels
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&OPUS_CLOCK.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // mapping family
    h
}

impl Depack {
    /// A depacketiser; its first items (tracks, Opus parameters) go to `out` at once.
    pub fn new(audio: bool, out: &mut Vec<Media>) -> Depack {
        let mut tracks = vec![Track {
            codec: FC_CODEC_H264,
            timebase: (1, VIDEO_CLOCK),
        }];
        if audio {
            tracks.push(Track {
                codec: FC_CODEC_OPUS,
                timebase: (1, OPUS_CLOCK),
            });
        }
        out.push(Media::Tracks(tracks));
        if audio {
            out.push(Media::Params {
                track: 1,
                data: opus_head(),
            });
        }
        Depack {
            origin: None,
            video: Reorder::new(),
            au: H264Au::default(),
            vclock: Clock::new(VIDEO_CLOCK),
            audio: audio.then(|| (Reorder::new(), Clock::new(OPUS_CLOCK))),
            params: None,
            need_key: true,
            loss: false,
        }
    }

    fn origin(&mut self, now: Instant) -> Instant {
        *self.origin.get_or_insert(now)
    }

    /// One video packet.
    pub fn push_video(&mut self, now: Instant, p: RtpIn, out: &mut Vec<Media>) -> Want {
        self.origin(now);
        self.video.push(now, p);
        self.drain_video(now, out)
    }

    /// One audio packet (ignored when the offer had no audio).
    pub fn push_audio(&mut self, now: Instant, p: RtpIn, out: &mut Vec<Media>) {
        let origin = self.origin(now);
        let Some((r, _)) = self.audio.as_mut() else {
            return;
        };
        r.push(now, p);
        self.drain_audio(origin, now, out);
    }

    /// Lets packets held for a missing one go once it is given up; call now and then.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Media>) -> Want {
        if let Some(origin) = self.origin {
            self.drain_audio(origin, now, out);
        }
        self.drain_video(now, out)
    }

    fn drain_audio(&mut self, origin: Instant, now: Instant, out: &mut Vec<Media>) {
        let Some((r, clock)) = self.audio.as_mut() else {
            return;
        };
        while let Some((p, lost)) = r.pop(now) {
            if p.payload.is_empty() {
                continue;
            }
            let pts = clock.pts(origin, now, p.ts);
            out.push(Media::Frame {
                track: 1,
                pts,
                dts: pts,
                keyframe: true,
                discontinuity: lost,
                data: p.payload,
            });
        }
    }

    fn drain_video(&mut self, now: Instant, out: &mut Vec<Media>) -> Want {
        let mut done = Vec::new();
        while let Some((p, lost)) = self.video.pop(now) {
            if lost {
                self.loss = true;
                self.need_key = true;
            }
            self.au.push(now, &p, lost, &mut done);
        }
        for u in done {
            self.unit(u, out);
        }
        Want {
            keyframe: self.need_key,
        }
    }

    fn unit(&mut self, u: Unit, out: &mut Vec<Media>) {
        let Unit {
            ts,
            arrived,
            au,
            broken,
        } = u;
        if broken {
            self.loss = true;
            self.need_key = true;
            return;
        }
        let nals = crate::codec::nal_units(&au);
        let idr = nals
            .iter()
            .any(|n| n.first().is_some_and(|b| b & 0x1f == 5));
        if self.need_key && !idr {
            return;
        }
        let mut ps = Vec::new();
        for n in nals
            .iter()
            .filter(|n| matches!(n.first().map(|b| b & 0x1f), Some(7 | 8)))
        {
            ps.extend_from_slice(&[0, 0, 0, 1]);
            ps.extend_from_slice(n);
        }
        if idr && ps.is_empty() && self.params.is_none() {
            // A keyframe without parameter sets cannot start a stream.
            return;
        }
        if !ps.is_empty() && self.params.as_ref() != Some(&ps) {
            self.params = Some(ps.clone());
            out.push(Media::Params { track: 0, data: ps });
        }
        let origin = self.origin.unwrap_or(arrived);
        let pts = self.vclock.pts(origin, arrived, ts);
        out.push(Media::Frame {
            track: 0,
            pts,
            dts: pts,
            keyframe: idr,
            discontinuity: std::mem::take(&mut self.loss),
            data: au,
        });
        if idr {
            self.need_key = false;
        }
    }
}

/// Fuzzing entry point: `data` is a run of records `[kind, seq:2, ts:4, flags, len, payload]`
/// (kind bit 0: audio; flags bit 0: marker, bits 1..: milliseconds to advance the clock).
/// Checks that every frame names an announced track and that video starts at a keyframe.
#[doc(hidden)]
pub fn fuzz_packets(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut out = Vec::new();
    let audio = data.first().is_some_and(|b| b & 1 == 1);
    let mut d = Depack::new(audio, &mut out);
    let tracks = if audio { 2 } else { 1 };
    assert!(matches!(&out[0], Media::Tracks(t) if t.len() == tracks));
    out.clear();
    let mut video_started = false;
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 9 {
        let (h, tail) = rest.split_at(9);
        let n = (h[8] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        now += Duration::from_millis((h[7] >> 1) as u64);
        let p = RtpIn {
            seq: u16::from_be_bytes([h[1], h[2]]),
            ts: u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
            marker: h[7] & 1 == 1,
            payload: payload.to_vec(),
        };
        if h[0] & 1 == 1 {
            d.push_audio(now, p, &mut out);
        } else {
            d.push_video(now, p, &mut out);
        }
        d.poll(now, &mut out);
        for m in out.drain(..) {
            match m {
                Media::Frame {
                    track, keyframe, ..
                } => {
                    assert!(track < tracks, "frame of track {track}");
                    if track == 0 {
                        assert!(video_started || keyframe, "video starts at a keyframe");
                        video_started = true;
                    }
                }
                Media::Params { track, .. } => assert!(track < tracks),
                Media::Tracks(_) | Media::AddTrack(_) => panic!("tracks announced twice"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> RtpIn {
        RtpIn {
            seq,
            ts,
            marker,
            payload: payload.to_vec(),
        }
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![24];
        for n in nals {
            v.extend_from_slice(&(n.len() as u16).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    /// A keyframe as STAP-A (SPS, PPS) + an IDR in three FU-A fragments.
    fn keyframe(seq: u16, ts: u32) -> Vec<RtpIn> {
        vec![
            pkt(seq, ts, false, &stap(&[SPS, PPS])),
            pkt(seq + 1, ts, false, &[0x7c, 0x85, 1, 2]),
            pkt(seq + 2, ts, false, &[0x7c, 0x05, 3, 4]),
            pkt(seq + 3, ts, true, &[0x7c, 0x45, 5]),
        ]
    }

    fn frames(out: &[Media]) -> Vec<(usize, i64, bool, bool, Vec<u8>)> {
        out.iter()
            .filter_map(|m| match m {
                Media::Frame {
                    track,
                    pts,
                    keyframe,
                    discontinuity,
                    data,
                    ..
                } => Some((*track, *pts, *keyframe, *discontinuity, data.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rebuilds_keyframes_and_deltas_in_order_and_out_of_order() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut d = Depack::new(true, &mut out);
        assert!(matches!(&out[0], Media::Tracks(t) if t.len() == 2));
        assert_eq!(
            out[1],
            Media::Params {
                track: 1,
                data: opus_head()
            }
        );
        out.clear();
        // A delta before any keyframe is not taken; a keyframe is wanted.
        assert!(
            d.push_video(t0, pkt(9, 1000, true, &[0x41, 9]), &mut out)
                .keyframe
        );
        let mut kf = keyframe(10, 4000);
        kf.swap(1, 2); // FU-A fragments out of order
        for p in kf {
            d.push_video(t0, p, &mut out);
        }
        let w = d.push_video(t0, pkt(14, 7000, true, &[0x41, 7]), &mut out);
        assert!(!w.keyframe);
        let mut ps = vec![0, 0, 0, 1];
        ps.extend_from_slice(SPS);
        ps.extend_from_slice(&[0, 0, 0, 1]);
        ps.extend_from_slice(PPS);
        assert_eq!(
            out[0],
            Media::Params {
                track: 0,
                data: ps.clone()
            }
        );
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        let mut idr = ps.clone();
        idr.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2, 3, 4, 5]);
        assert_eq!(f[0], (0, 0, true, false, idr));
        assert_eq!(f[1], (0, 3000, false, false, vec![0, 0, 0, 1, 0x41, 7]));
    }

    #[test]
    fn a_loss_waits_then_skips_to_the_next_keyframe_and_flags_it() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut d = Depack::new(false, &mut out);
        for p in keyframe(100, 0) {
            d.push_video(t0, p, &mut out);
        }
        out.clear();
        // 104 is lost; 105 waits for it, then goes on without it and waits for a keyframe.
        assert!(
            !d.push_video(t0, pkt(105, 6000, true, &[0x41, 1]), &mut out)
                .keyframe
        );
        assert!(out.is_empty());
        let later = t0 + REORDER_WAIT + Duration::from_millis(1);
        assert!(d.poll(later, &mut out).keyframe, "asks for a keyframe");
        assert!(
            frames(&out).is_empty(),
            "a delta after a loss is not delivered"
        );
        for p in keyframe(106, 9000) {
            d.push_video(later, p, &mut out);
        }
        let f = frames(&out);
        assert_eq!(f.len(), 1);
        assert!(f[0].2 && f[0].3, "keyframe with the discontinuity flag");
        assert_eq!(f[0].1, 9000);
        // A duplicate or a packet given up on is dropped.
        out.clear();
        d.push_video(later, pkt(104, 3000, true, &[0x41, 2]), &mut out);
        assert!(frames(&out).is_empty());
    }

    #[test]
    fn audio_maps_onto_the_video_timeline_by_arrival() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut d = Depack::new(true, &mut out);
        out.clear();
        for p in keyframe(1, 123_456) {
            d.push_video(t0, p, &mut out);
        }
        let t1 = t0 + Duration::from_millis(100);
        d.push_audio(t1, pkt(50, 999_000, true, &[0xfc, 1, 2]), &mut out);
        d.push_audio(t1, pkt(51, 999_960, true, &[0xfc, 3]), &mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].0, f[0].1), (0, 0));
        assert_eq!(
            (f[1].0, f[1].1),
            (1, 4800),
            "100 ms after the video, at 48 kHz"
        );
        assert_eq!((f[2].0, f[2].1), (1, 5760));
        assert_eq!(f[1].4, vec![0xfc, 1, 2]);
    }

    #[test]
    fn the_fuzz_entry_point_takes_any_bytes() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..300usize {
            let data: Vec<u8> = (0..n * 7)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            fuzz_packets(&data);
        }
    }

    #[test]
    fn hostile_payloads_never_panic() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut d = Depack::new(true, &mut out);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u32 {
            let n = (next() % 40) as usize;
            let payload: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            let p = pkt(next() as u16, next() as u32, next() % 2 == 0, &payload);
            let now = t0 + Duration::from_millis(i as u64);
            if i % 3 == 0 {
                d.push_audio(now, p, &mut out);
            } else {
                d.push_video(now, p, &mut out);
            }
            d.poll(now, &mut out);
            out.clear();
        }
    }
}

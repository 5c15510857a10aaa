//! Timestamps that wrap (MPEG-TS's 33 bits at 90 kHz, RTMP/FLV's 32 bits of milliseconds)
//! unwrapped onto one rising timeline.

/// Unwraps `bits`-bit timestamps against the last one seen, so a stream (or all streams of a
/// source, when they share one) keeps rising across the wrap. Each value is taken as the one
/// nearest to the last; a jump by more than an eighth of the range (TS: 2^30 ticks, about
/// 3.3 h; FLV: 2^29 ms, about 6 days) is followed only once a second timestamp agrees with it,
/// so one corrupt timestamp does not move the timeline.
#[derive(Debug, Clone)]
pub struct Unwrapper {
    range: i64,
    last: Option<i64>,
    /// A big jump not yet confirmed.
    jump: Option<i64>,
}

impl Unwrapper {
    /// An unwrapper of `bits`-bit timestamps (1..=62) that has seen nothing yet.
    pub fn new(bits: u32) -> Unwrapper {
        Unwrapper {
            range: 1 << bits.clamp(1, 62),
            last: None,
            jump: None,
        }
    }

    /// The value of the wrapped `raw` nearest to `near`.
    fn nearest(&self, near: i64, raw: i64) -> i64 {
        let r = self.range;
        let mut d = raw.rem_euclid(r) - near.rem_euclid(r);
        if d > r / 2 {
            d -= r;
        } else if d < -r / 2 {
            d += r;
        }
        near.saturating_add(d)
    }

    /// The unwrapped value of `raw`.
    pub fn unwrap(&mut self, raw: i64) -> i64 {
        let Some(last) = self.last else {
            self.last = Some(raw);
            return raw;
        };
        let limit = self.range / 8;
        let v = self.nearest(last, raw);
        if (v - last).abs() < limit {
            self.last = Some(v);
            self.jump = None;
            return v;
        }
        // Follow a jump (new timeline) once a second timestamp agrees with it.
        if let Some(j) = self.jump {
            let w = self.nearest(j, raw);
            if (w - j).abs() < limit {
                self.last = Some(w);
                self.jump = None;
                return w;
            }
        }
        self.jump = Some(v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_milliseconds_wrap_at_32_bits_both_ways() {
        let mut u = Unwrapper::new(32);
        let w = 1i64 << 32;
        assert_eq!(u.unwrap(w - 40), w - 40);
        assert_eq!(u.unwrap(0), w, "past the wrap");
        assert_eq!(u.unwrap(40), w + 40);
        assert_eq!(
            u.unwrap(w - 20),
            w - 20,
            "a late packet from before the wrap"
        );
        assert_eq!(u.unwrap(80), w + 80);
        // A slightly earlier timestamp at the start stays slightly earlier, not 49 days later.
        let mut u = Unwrapper::new(32);
        assert_eq!(u.unwrap(100), 100);
        assert_eq!(u.unwrap(w - 296), -296);
    }

    #[test]
    fn one_wild_timestamp_does_not_move_the_timeline_two_do() {
        let mut u = Unwrapper::new(33);
        let w = 1i64 << 33;
        assert_eq!(u.unwrap(1000), 1000);
        let wild = u.unwrap(w / 2);
        assert!((wild - 1000).abs() <= w / 2);
        assert_eq!(u.unwrap(4000), 4000, "back on the timeline");
        u.unwrap(w / 2);
        assert_eq!(
            u.unwrap(w / 2 + 3000),
            w / 2 + 3000,
            "a confirmed jump is followed"
        );
    }
}

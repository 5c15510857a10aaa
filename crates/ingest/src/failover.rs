//! The failover policy of a pull ingest, sans-IO: which input runs, when to retry, which
//! higher-priority input to probe and when to fail back. Driven by `now` and by what the inputs
//! did; the worker in `engine.rs` does the I/O (runs inputs, probes them on a thread, sleeps).
//!
//! The rules:
//! - Inputs are in priority order. The first runs; when the running one ends, the next one runs
//!   at once (fail over).
//! - When the last one ends, the policy waits a backoff (250 ms, doubling up to the maximum;
//!   back to 250 ms once an input delivered media) and starts again from the first.
//! - While a lower-priority input runs, the higher ones are probed: at once, then every probe
//!   interval after a round of probes ends. The first healthy one stops the running input and
//!   runs next (fail back).

use std::ops::Range;
use std::time::{Duration, Instant};

/// First wait after every input failed; doubles each round up to the maximum.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// What the worker should do next when no input runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run input `i` now.
    Run(usize),
    /// Wait until this instant, then ask again.
    WaitUntil(Instant),
}

/// The policy's state.
#[derive(Debug, Clone)]
pub struct Failover {
    inputs: usize,
    current: usize,
    backoff: Duration,
    max_backoff: Duration,
    probe_interval: Duration,
    retry_at: Option<Instant>,
    /// While an input runs: when the next round of probes is due (`None`: nothing to probe,
    /// or a round is under way).
    next_probe: Option<Instant>,
    failback: Option<usize>,
}

impl Failover {
    /// A policy over `inputs` inputs (at least one).
    pub fn new(inputs: usize, probe_interval: Duration, max_backoff: Duration) -> Failover {
        Failover {
            inputs: inputs.max(1),
            current: 0,
            backoff: MIN_BACKOFF,
            max_backoff: max_backoff.max(MIN_BACKOFF),
            probe_interval,
            retry_at: None,
            next_probe: None,
            failback: None,
        }
    }

    /// The input that runs or will run next.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The wait the next failed round will cost.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// What to do now that no input runs.
    pub fn next(&mut self, now: Instant) -> Next {
        match self.retry_at {
            Some(at) if now < at => Next::WaitUntil(at),
            _ => {
                self.retry_at = None;
                Next::Run(self.current)
            }
        }
    }

    /// The worker started the current input: probing of the higher ones is due at once.
    pub fn started(&mut self, now: Instant) {
        self.failback = None;
        self.next_probe = (self.current > 0).then_some(now);
    }

    /// The higher-priority inputs to probe now, if a round is due (the round is then under way
    /// until [`Failover::probes_done`] or [`Failover::probe_healthy`]).
    pub fn probes_due(&mut self, now: Instant) -> Option<Range<usize>> {
        match self.next_probe {
            Some(at) if now >= at && self.failback.is_none() => {
                self.next_probe = None;
                Some(0..self.current)
            }
            _ => None,
        }
    }

    /// A round of probes found nothing healthy; the next is due one interval from `now`.
    pub fn probes_done(&mut self, now: Instant) {
        if self.failback.is_none() && self.current > 0 {
            self.next_probe = Some(now + self.probe_interval);
        }
    }

    /// Probe of input `i` delivered media. Returns whether the running input must be stopped
    /// (so that `i` runs next): only for an input of higher priority than the running one.
    pub fn probe_healthy(&mut self, i: usize) -> bool {
        if i < self.current && self.failback.is_none() {
            self.failback = Some(i);
            self.next_probe = None;
            true
        } else {
            false
        }
    }

    /// The input it failed back to, if the running input was stopped for that.
    pub fn failing_back(&self) -> Option<usize> {
        self.failback
    }

    /// The running input ended (failed, ended or was stopped for a failback) at `now`;
    /// `got_media` says whether it delivered anything.
    pub fn ended(&mut self, now: Instant, got_media: bool) {
        self.next_probe = None;
        if got_media {
            self.backoff = MIN_BACKOFF;
        }
        if let Some(i) = self.failback.take() {
            self.current = i;
        } else if self.current + 1 < self.inputs {
            self.current += 1;
        } else {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.max_backoff);
            self.current = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fails_over_at_once_then_backs_off_doubling_to_the_maximum() {
        let t0 = Instant::now();
        let mut f = Failover::new(3, 2 * S, 8 * S);
        assert_eq!(f.next(t0), Next::Run(0));
        f.started(t0);
        assert_eq!(f.probes_due(t0), None, "nothing above the first input");
        f.ended(t0, false);
        assert_eq!(f.next(t0), Next::Run(1), "the next input at once");
        f.ended(t0, false);
        assert_eq!(f.next(t0), Next::Run(2));
        f.ended(t0, false);
        // Every input failed: wait 250 ms, then from the first again.
        assert_eq!(f.next(t0), Next::WaitUntil(t0 + ms(250)));
        assert_eq!(f.next(t0 + ms(249)), Next::WaitUntil(t0 + ms(250)));
        let mut now = t0 + ms(250);
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert_eq!(f.next(now), Next::Run(0));
            for _ in 0..3 {
                f.started(now);
                f.ended(now, false);
            }
            let Next::WaitUntil(at) = f.next(now) else {
                panic!("no wait")
            };
            waits.push(at - now);
            now = at;
        }
        assert_eq!(
            waits,
            [ms(500), S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S],
            "doubling, capped at the maximum"
        );
    }

    #[test]
    fn media_resets_the_backoff() {
        let t0 = Instant::now();
        let mut f = Failover::new(1, S, 8 * S);
        for _ in 0..4 {
            f.ended(t0, false);
        }
        assert_eq!(f.backoff(), 4 * S);
        f.ended(t0, true);
        assert_eq!(
            f.next(t0),
            Next::WaitUntil(t0 + MIN_BACKOFF),
            "reset before this wait"
        );
        assert_eq!(f.backoff(), ms(500));
    }

    #[test]
    fn probes_higher_inputs_while_a_lower_one_runs_and_fails_back() {
        let t0 = Instant::now();
        let mut f = Failover::new(3, 2 * S, 8 * S);
        f.started(t0);
        f.ended(t0, false); // input 0 failed
        f.started(t0);
        f.ended(t0, false); // input 1 failed
        assert_eq!(f.next(t0), Next::Run(2));
        f.started(t0);
        // A round at once: inputs 0 and 1, in priority order.
        assert_eq!(f.probes_due(t0), Some(0..2));
        assert_eq!(f.probes_due(t0), None, "one round at a time");
        let after_round = t0 + ms(300);
        f.probes_done(after_round);
        assert_eq!(f.probes_due(after_round + ms(1999)), None);
        assert_eq!(f.probes_due(after_round + 2 * S), Some(0..2));
        // Input 1 is healthy again: stop input 2, run 1 next, without a backoff.
        assert!(f.probe_healthy(1));
        assert_eq!(f.failing_back(), Some(1));
        assert!(!f.probe_healthy(0), "the first healthy probe decides");
        f.ended(after_round + 2 * S, true);
        assert_eq!(f.next(after_round + 2 * S), Next::Run(1));
        f.started(after_round + 2 * S);
        assert_eq!(f.probes_due(after_round + 2 * S), Some(0..1));
        assert!(!f.probe_healthy(1), "not above the running input");
        assert!(f.probe_healthy(0));
        f.ended(after_round + 3 * S, true);
        assert_eq!(f.next(after_round + 3 * S), Next::Run(0));
        f.started(after_round + 3 * S);
        assert_eq!(
            f.probes_due(after_round + 10 * S),
            None,
            "nothing above input 0"
        );
    }
}

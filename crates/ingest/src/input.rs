//! What every pull input shares: where its media go, how it is stopped, its time limits, and
//! the datagram loop of the TS-over-UDP/SRT inputs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecache_media::ts::TsToMedia;
pub use framecache_media::MediaOut;
use framecache_shm::error::{Error, Result};

/// What stops an input besides failures.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(pub Arc<AtomicBool>);

impl StopFlag {
    /// Stop requested.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Requests the stop.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
}

/// Limits of one input.
#[derive(Debug, Clone, Copy)]
pub struct InputTimeouts {
    /// Connect / first byte.
    pub connect: Duration,
    /// No data for this long is a failure.
    pub idle: Duration,
}

impl Default for InputTimeouts {
    fn default() -> Self {
        InputTimeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(5),
        }
    }
}

/// Demuxes MPEG-TS datagrams that `recv` delivers (`Ok(None)`: none before its own short
/// timeout) until `stop`, an error, or no data for `t.connect` before the first datagram and
/// `t.idle` after one; then flushes the demuxer, which holds the last unit of each stream
/// until the next one starts.
pub fn demux_datagrams(
    buf_size: usize,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
    mut recv: impl FnMut(&mut [u8]) -> Result<Option<usize>>,
) -> Result<()> {
    let mut ts = TsToMedia::new();
    let mut buf = vec![0u8; buf_size];
    let mut last = Instant::now();
    let mut first = true;
    let r = loop {
        if stop.is_set() {
            break Ok(());
        }
        match recv(&mut buf) {
            Ok(Some(n)) => {
                last = Instant::now();
                first = false;
                if let Err(e) = ts.push(&buf[..n], out) {
                    break Err(e);
                }
            }
            Ok(None) => {
                let limit = if first { t.connect } else { t.idle };
                if last.elapsed() > limit {
                    break Err(Error::Timeout);
                }
            }
            Err(e) => break Err(e),
        }
    };
    ts.flush(out)?;
    r
}

//! What the frame benchmarks' writers and readers share, whatever transport they drive
//! (framecache in `frame_ring.rs`, iceoryx2 in `anchors/iox_anchor.rs`): the source frames, the
//! pacing, the page touch of readers, the writer's in-place fill and the readers' tally.
//! It uses std and libc only, so the anchors' separate workspace can include it.

use super::{get, percentile, say, sleep_until, Kv};

/// Touch one byte per page of every frame, so the reader really reads the pages.
pub const PAGE: usize = 4096;
/// Source frames of a writer rotate over at least this many bytes, so they come from DRAM
/// (the L3 of the test machines is 32 MiB), like a capture card's fresh DMA buffers.
pub const SOURCE_BYTES: usize = 64 << 20;

/// CLOCK_MONOTONIC in ns (the clock framecache stamps frames with).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Distinct, pre-faulted source frames covering at least [`SOURCE_BYTES`] (at most 16).
pub fn sources(size: usize) -> Vec<Vec<u8>> {
    let count = SOURCE_BYTES.div_ceil(size).clamp(1, 16);
    (0..count).map(|i| vec![0x10 + i as u8; size]).collect()
}

/// Reads one byte per page; volatile so the loads are not optimised away.
pub fn touch(data: &[u8]) -> u8 {
    let mut acc = 0u8;
    for i in (0..data.len()).step_by(PAGE) {
        // SAFETY: i < data.len().
        acc ^= unsafe { std::ptr::read_volatile(data.as_ptr().add(i)) };
    }
    std::hint::black_box(acc)
}

/// The zero-copy writers' work on frame `i`: fill the whole frame in place, as a producer
/// that renders or decodes into the shared buffer writes every byte (memset speed).
///
/// # Safety
/// `p` is valid for `len` writable bytes.
pub unsafe fn fill_in_place(p: *mut u8, len: usize, i: u64) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_bytes(p, 0x20 + (i % 64) as u8, len) };
}

/// Writer schedule: flat out (`fps=0`) or paced on absolute deadlines, and optionally capped
/// in time (`max_ms`), so every case runs about as long whatever its speed.
pub struct Pacer {
    period_ns: u64,
    cap_ns: u64,
    t0: u64,
}

impl Pacer {
    pub fn new(kv: &Kv, t0: u64) -> Pacer {
        let fps: u64 = get(kv, "fps");
        let max_ms: u64 = get(kv, "max_ms");
        Pacer {
            period_ns: 1_000_000_000u64.checked_div(fps).unwrap_or(0),
            cap_ns: if max_ms == 0 {
                u64::MAX
            } else {
                max_ms * 1_000_000
            },
            t0,
        }
    }

    /// Waits for frame `i`'s turn; false once the time cap is reached.
    pub fn next(&self, i: u64) -> bool {
        if self.period_ns != 0 {
            sleep_until(self.t0 + i * self.period_ns);
        }
        mono_ns() - self.t0 < self.cap_ns
    }
}

/// What every reader reports.
#[derive(Default)]
pub struct ReaderTally {
    pub delivered: u64,
    pub skipped: u64,
    pub torn: u64,
    pub last_ns: u64,
    pub lat: Vec<u64>,
}

impl ReaderTally {
    pub fn report(mut self, warmup: usize, cpu: u64) {
        // Warm-up samples include first-touch page faults of the reader's mappings.
        let mut lat = self.lat.split_off(warmup.min(self.lat.len()));
        lat.sort_unstable();
        say(&format!(
            "result delivered={} skipped={} torn={} last_ns={} cpu_ns={cpu} samples={} \
             p50={} p99={} p999={} max={}",
            self.delivered,
            self.skipped,
            self.torn,
            self.last_ns,
            lat.len(),
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            percentile(&lat, 99.9),
            lat.last().copied().unwrap_or(0),
        ));
    }
}

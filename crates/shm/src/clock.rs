//! Clocks and random numbers: the times the ring headers stamp (wall clock for capture and
//! creation, `CLOCK_MONOTONIC` for publish→read latency across processes) and the kernel's
//! random bits for ids that must not be guessed.

use std::time::{SystemTime, UNIX_EPOCH};

/// 64 random bits from the kernel, for values that must not be guessed or repeat across
/// starts (WHEP resource ids and ETags, cuframes epochs).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom into a local buffer of the given length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n != 8 {
        // Fall back to time and address entropy; ids stay unique through the counter.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (&b as *const _ as u64).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

/// Wall-clock time in ns since the Unix epoch.
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `CLOCK_MONOTONIC` in ns: the same clock in every process of the host, so publish→read
/// latency can be measured across processes.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

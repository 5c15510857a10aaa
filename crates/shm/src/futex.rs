//! Cross-process wake-ups on a 32-bit word in shared memory (Linux futex).
//!
//! Shared (not `FUTEX_PRIVATE`) futexes key on the file page, so a writer and readers that map
//! the same slot file meet on the same word. Readers map the slot read-only: `FUTEX_WAIT` only
//! reads the word, which the kernel allows on read-only shared mappings.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Blocks while `*word == expected`, at most `timeout`. Returns on wake, value change, timeout
/// or signal; callers re-check their condition either way.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process waiting on `word`.
pub fn wake_all(word: &AtomicU32) {
    // SAFETY: as above; FUTEX_WAKE does not touch the word's contents.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Longest single wait of a reader: bounds how late it notices a writer killed by SIGKILL
/// (which wakes nobody).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(100);
/// Poll period while the writer is gone and a reader waits for a new one.
pub(crate) const REATTACH_POLL: Duration = Duration::from_millis(10);

/// A reader's wait for the next publish, shared by both rings: sleeps on `wake` for at most
/// one liveness slice (and at most `left`) unless `write_seq` already moved past `seen`.
/// Returns whether the slice was quiet (no publish or close woke it), which is when a reader
/// should make the full liveness check.
pub(crate) fn wait_for_publish(
    wake: &AtomicU32,
    write_seq: &AtomicU64,
    seen: u64,
    left: Duration,
) -> bool {
    // Read `wake` before re-checking `write_seq`: a publish in between changes `wake`, so the
    // wait returns at once (no lost wake-up).
    let w = wake.load(Ordering::Acquire);
    if write_seq.load(Ordering::Acquire) != seen {
        return false;
    }
    wait(wake, w, LIVENESS_SLICE.min(left));
    wake.load(Ordering::Acquire) == w
}

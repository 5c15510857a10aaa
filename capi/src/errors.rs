//! Errors and the version: `fc_strerror`, `fc_last_error`, `fc_version`.

use std::ffi::{c_char, c_int};

use framecache_shm::error;

use crate::LAST_ERROR;

/// The static, NUL-terminated name of an `FC_*` code. Never NULL; the string lives forever.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn fc_strerror(code: c_int) -> *const c_char {
    error::strerror(code).as_ptr().cast()
}

/// Detail of the last failed call on this thread (empty if none). Valid until the next
/// framecache call on this thread; do not free.
#[no_mangle]
pub extern "C" fn fc_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Library version, e.g. `"0.1.0"`. Static; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn fc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

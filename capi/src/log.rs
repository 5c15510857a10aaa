//! `fc_set_log_callback`: the library's diagnostics (a publisher that disconnected, a tag that
//! was dropped, an input that failed over) delivered to the host's logger instead of stderr.
//!
//! The library crates log through the `log` facade and never print. This module is the one
//! `log::Log` of `libframecache.so`: with no callback installed nothing is formatted and nothing
//! is written, so a host's stderr stays its own.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Once, RwLock};

use framecache_shm::error::Error;

use crate::boundary;

/// Log level: errors (the library could not do what was asked).
pub const FC_LOG_ERROR: c_int = 1;
/// Log level: warnings (something was lost or refused, the library goes on).
pub const FC_LOG_WARN: c_int = 2;
/// Log level: what happened (a publisher connected or ended, a viewer joined).
pub const FC_LOG_INFO: c_int = 3;
/// Log level: detail for debugging.
pub const FC_LOG_DEBUG: c_int = 4;
/// Log level: very verbose detail.
pub const FC_LOG_TRACE: c_int = 5;

/// Receives one log message. `level` is `FC_LOG_*`; `target` names the part of the library
/// (e.g. `"framecache_ingest::pump"`); `message` is one line without a newline. Both strings are
/// NUL-terminated and valid only during the call. Called on whichever thread logs (the
/// engines' own threads included), possibly on several at once: keep it short and thread-safe.
/// It must not call `fc_set_log_callback` (that call fails with `FC_ERR_STATE`); messages logged
/// while it runs on the same thread are dropped.
pub type fc_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: c_int,
        target: *const c_char,
        message: *const c_char,
    ),
>;

struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, c_int, *const c_char, *const c_char),
    user_data: *mut c_void,
    max: log::LevelFilter,
}

// SAFETY: `user_data` is only handed back to the host's callback, which the host promises may be
// called from any thread (documented on fc_set_log_callback).
unsafe impl Send for Sink {}
// SAFETY: as above; the sink itself is immutable once installed.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    /// Set while this thread runs the host's callback: no recursion, no re-entry.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

struct CallbackLogger;

impl log::Log for CallbackLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if IN_CALLBACK.with(Cell::get) {
            return;
        }
        // Held while the callback runs, so that once fc_set_log_callback returns no thread is
        // still inside the callback it replaced (the host may then free its user data).
        let guard = SINK.read().unwrap_or_else(|e| e.into_inner());
        let Some(sink) = guard.as_ref() else { return };
        if record.level() > sink.max {
            return;
        }
        let text = |s: String| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let target = text(record.target().to_string());
        let message = text(record.args().to_string());
        IN_CALLBACK.with(|c| c.set(true));
        // SAFETY: the host gave this function pointer and user data for exactly this use; the
        // strings live until the call returns.
        unsafe {
            (sink.callback)(
                sink.user_data,
                record.level() as c_int,
                target.as_ptr(),
                message.as_ptr(),
            )
        };
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn flush(&self) {}
}

fn level_filter(min_level: c_int) -> log::LevelFilter {
    match min_level {
        i32::MIN..=0 => log::LevelFilter::Off,
        FC_LOG_ERROR => log::LevelFilter::Error,
        FC_LOG_WARN => log::LevelFilter::Warn,
        FC_LOG_INFO => log::LevelFilter::Info,
        FC_LOG_DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Routes the library's log messages to `callback`: every message of level `min_level` or more
/// severe (`FC_LOG_ERROR` = 1 … `FC_LOG_TRACE` = 5; 0 = none) is passed to it with `user_data`.
/// A NULL `callback` (or `min_level` 0) silences the library, which is also the state before
/// the first call: the library never writes to stderr or stdout by itself.
///
/// Replaces any earlier callback. Thread-safe, callable from any thread at any time; when it
/// returns, no thread is inside the previous callback any more, so its user data may be freed.
/// Calling it from inside the callback gives `FC_ERR_STATE`.
#[no_mangle]
pub extern "C" fn fc_set_log_callback(
    min_level: c_int,
    callback: fc_log_fn,
    user_data: *mut c_void,
) -> c_int {
    if IN_CALLBACK.with(Cell::get) {
        return boundary(|| Err(Error::State("fc_set_log_callback inside the log callback")));
    }
    boundary(|| {
        static INSTALL: Once = Once::new();
        // The library's own copy of `log` (libframecache.so links it privately): this is the
        // only logger it ever gets.
        INSTALL.call_once(|| {
            let _ = log::set_logger(&CallbackLogger);
        });
        let sink = callback.map(|callback| Sink {
            callback,
            user_data,
            max: level_filter(min_level),
        });
        let max = sink.as_ref().map_or(log::LevelFilter::Off, |s| s.max);
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
        log::set_max_level(max);
        Ok(())
    })
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_log.rs"));

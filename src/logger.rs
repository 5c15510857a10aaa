//! The CLI's logger: the library's `log` messages on stderr, one line each, as
//! `framecache: LEVEL: message`. `-v` adds detail, `-q` keeps only errors. Messages of the
//! libraries underneath (webrtc-rs's ICE agent, rustls, …) are shown only when they are errors,
//! or with `-vv`.

use std::io::Write;

struct Stderr {
    /// Show other crates' messages at the same level as framecache's.
    everything: bool,
}

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        let ours = m.target().starts_with("framecache");
        m.level() <= log::max_level() && (ours || self.everything || m.level() <= log::Level::Error)
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        // One write per line, so lines of concurrent threads do not interleave.
        let line = format!("framecache: {level}: {}\n", r.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger: info and above by default (what the library printed before it
/// logged), each `-v` one level more (`-vv` also the libraries underneath), `-q` errors only.
pub fn init(verbose: u8, quiet: bool) {
    let level = if quiet {
        log::LevelFilter::Error
    } else {
        match verbose {
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        }
    };
    let logger: &'static Stderr = Box::leak(Box::new(Stderr {
        everything: verbose >= 2,
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

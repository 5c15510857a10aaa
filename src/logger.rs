//! The CLI's logger: the library's `log` messages on stderr, one line each, as
//! `framecache: LEVEL: message`. `-v` adds detail, `-q` keeps only errors.

use std::io::Write;

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
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
/// logged), each `-v` one level more, `-q` errors only.
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
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level);
    }
}

//! The 2-minute version of `tools/soak.py`: `serve` with an RTMP push, an SRT push, a pulled
//! file, an RTSP camera (when GStreamer's server is installed) and a slot failing over between a
//! UDP feed and a slate every 20 s, RTMP and SRT play readers, and batches of aiortc WHEP viewers
//! joining and leaving. Fails when open fds or threads grow across the viewer cycles (by more
//! than a small slack) or shm files grow at all; never on timings. The 30-minute run and its
//! table are in the README.

mod common;

use std::path::Path;
use std::process::Command;

use common::skip;

#[test]
fn two_minutes_of_serve_leave_no_growth_of_fds_threads_or_shm_files() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/soak.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--minutes", "2", "--sample-s", "15", "--viewers", "4"])
        .args(["--watch-s", "8", "--failover-s", "40", "--check"])
        .args(["--framecache", env!("CARGO_BIN_EXE_framecache")])
        .output()
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&out.stderr);
    eprintln!("{said}{}", String::from_utf8_lossy(&out.stdout));
    match out.status.code() {
        Some(2) => skip(&format!(
            "soak: {}",
            said.lines().last().unwrap_or("a peer is missing")
        )),
        Some(0) => assert!(said.contains("check: no growth"), "{said}"),
        c => panic!("the soak found growth or failed ({c:?}): {said}"),
    }
}

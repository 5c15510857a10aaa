//! Test helpers shared by the framecache workspace's tests and benchmarks (never published):
//! private slot roots, child processes killed on drop, and RTMP bytes written by rml_rtmp (an
//! implementation we did not write).
#![allow(clippy::print_stderr, clippy::print_stdout)]

pub mod rml_publisher;

use std::path::{Path, PathBuf};
use std::process::Child;

/// Kills the child on drop, so a failing test leaves no server behind.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private slot root (under /dev/shm when it exists), removed on drop.
pub struct TempRoot(pub PathBuf);

impl TempRoot {
    /// A fresh, empty root named after the process and `name`.
    pub fn new(name: &str) -> TempRoot {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("fc-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What rml_rtmp (an implementation we did not write) sends for video messages `(timestamp,
/// payload)` on message stream 1 after a Set Chunk Size of `chunk_size`, headers compressed.
pub fn rml_video_wire(chunk_size: u32, msgs: &[(u32, Vec<u8>)]) -> Vec<u8> {
    use rml_rtmp::{chunk_io::ChunkSerializer, messages::MessagePayload, time::RtmpTimestamp};
    let mut ser = ChunkSerializer::new();
    let mut wire = ser
        .set_max_chunk_size(chunk_size, RtmpTimestamp::new(0))
        .unwrap()
        .bytes;
    for (ts, data) in msgs {
        let p = MessagePayload {
            timestamp: RtmpTimestamp::new(*ts),
            type_id: 9,
            message_stream_id: 1,
            data: bytes::Bytes::from(data.clone()),
        };
        wire.extend(ser.serialize(&p, false, false).unwrap().bytes);
    }
    wire
}

/// Reports that the running test cannot do its work on this machine (a peer program, a library
/// or a GPU is missing) and returns to let it pass: prints `SKIPPED test: reason` and, when
/// `FC_SKIP_LOG` names a file, appends `test: reason` to it, so `scripts/test.sh` can count the
/// skips and say why. The test's name is its thread's (libtest names each test's thread).
pub fn skip(reason: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os("FC_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: tests run in parallel.
            let _ = f.write_all(format!("{test}: {reason}\n").as_bytes());
        }
    }
}

/// The child processes of `pid` (those of all its threads), from /proc.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// The command line of process `pid`, arguments separated by spaces ("" when it is gone).
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

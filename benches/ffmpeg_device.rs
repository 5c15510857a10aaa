//! ffmpeg taking 1080p UYVY frames from a frame slot (`-f framecache -i SLOT`) against the same
//! frames through a pipe (`-f rawvideo -i pipe:`, what users did before), in the same run.
//! Both feed `-f null -`; the writer is this process, at full speed, in both cases (the pipe
//! writer is held back by the pipe, the slot writer never waits and the reader skips).
//! ffmpeg's CPU comes from wait4; frames/s from the wall time of the whole ffmpeg run.
//!
//!   cargo bench --bench ffmpeg_device -- [FRAMES] [RUNS]
//!
//! Needs a patched ffmpeg: `$FC_PATCHED_FFMPEG` (a directory) or what
//! `ffmpeg-patches/build.sh 5.1` (or 7.1) built under target/.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use framecache::format::PixelFormat;
use framecache::ring::{FrameMeta, Producer, SlotConfig};

const W: u32 = 1920;
const H: u32 = 1080;

fn find_ffmpeg() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FC_PATCHED_FFMPEG") {
        return Some(PathBuf::from(d).join("ffmpeg"));
    }
    let t = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    ["5.1", "7.1"]
        .iter()
        .map(|v| t.join(format!("ffmpeg-{v}/bin/ffmpeg")))
        .find(|p| p.exists())
}

struct Result {
    fps: f64,
    ffmpeg_cpu_ms_per_frame: f64,
    ffmpeg_cpu_pct: f64,
    writer_cpu_pct: f64,
}

/// Waits for `child`; returns its user + system CPU seconds (wait4's rusage).
fn reap(child: std::process::Child) -> f64 {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid of our own unwaited child.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert!(
        r > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ffmpeg failed"
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn frames() -> Vec<Vec<u8>> {
    let g = framecache::format::FrameGeometry::new(PixelFormat::Uyvy, W, H, 1).unwrap();
    (0..8)
        .map(|seq| {
            let mut f = vec![0u8; g.frame_size as usize];
            framecache::testsrc::fill(&g, seq, &mut f);
            f
        })
        .collect()
}

fn pipe_case(ffmpeg: &Path, frames: &[Vec<u8>], n: usize) -> Result {
    let mut child = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args([
            "-f",
            "rawvideo",
            "-pix_fmt",
            "uyvy422",
            "-s",
            "1920x1080",
            "-r",
            "60",
        ])
        .args([
            "-i",
            "pipe:",
            "-frames:v",
            &n.to_string(),
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run ffmpeg");
    let mut stdin = child.stdin.take().unwrap();
    // SAFETY: a valid pipe descriptor; F_SETPIPE_SZ only resizes its buffer.
    unsafe { libc::fcntl(stdin.as_raw_fd(), common::F_SETPIPE_SZ, common::STREAM_BUF) };
    let cpu0 = common::cpu_ns();
    let t0 = std::time::Instant::now();
    for i in 0..n {
        if stdin.write_all(&frames[i % frames.len()]).is_err() {
            break;
        }
    }
    drop(stdin);
    let cpu = reap(child);
    let rtime = t0.elapsed().as_secs_f64();
    let writer = (common::cpu_ns() - cpu0) as f64 / 1e9;
    Result {
        fps: n as f64 / rtime,
        ffmpeg_cpu_ms_per_frame: cpu * 1e3 / n as f64,
        ffmpeg_cpu_pct: cpu / rtime * 100.0,
        writer_cpu_pct: writer / rtime * 100.0,
    }
}

fn slot_case(ffmpeg: &Path, root: &Path, frames: &[Vec<u8>], n: usize) -> Result {
    let mut cfg = SlotConfig::new(PixelFormat::Uyvy, W, H);
    (cfg.fps_num, cfg.fps_den, cfg.depth, cfg.row_align) = (60, 1, 120, 1);
    let mut p = Producer::create_in(root, "bench", &cfg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let frames2 = frames.to_vec();
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let cpu0 = thread_cpu_ns();
        let t0 = std::time::Instant::now();
        let mut seq = 0i64;
        while !stop2.load(Ordering::Relaxed) {
            let f = &frames2[seq as usize % frames2.len()];
            let meta = FrameMeta {
                pts: seq,
                ..FrameMeta::default()
            };
            p.write(f, meta).unwrap();
            seq += 1;
        }
        (thread_cpu_ns() - cpu0) as f64 / 1e9 / t0.elapsed().as_secs_f64()
    });
    let t0 = std::time::Instant::now();
    let child = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args([
            "-f",
            "framecache",
            "-i",
            "bench",
            "-frames:v",
            &n.to_string(),
        ])
        .args(["-f", "null", "-"])
        .env("FC_SHM_DIR", root)
        .spawn()
        .expect("run ffmpeg");
    let cpu = reap(child);
    let rtime = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let writer_share = writer.join().unwrap();
    Result {
        fps: n as f64 / rtime,
        ffmpeg_cpu_ms_per_frame: cpu * 1e3 / n as f64,
        ffmpeg_cpu_pct: cpu / rtime * 100.0,
        writer_cpu_pct: writer_share * 100.0,
    }
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1500);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let Some(ffmpeg) = find_ffmpeg() else {
        println!("SKIPPED: no patched ffmpeg (ffmpeg-patches/build.sh 5.1, or FC_PATCHED_FFMPEG)");
        return;
    };
    let version = Command::new(&ffmpeg)
        .arg("-version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let root = common::RootDir(
        std::env::temp_dir().join(format!("fc-bench-ffmpeg-{}", std::process::id())),
    );
    let _ = std::fs::create_dir_all(&root.0);
    let frames = frames();
    println!("machine: {}", common::machine_line());
    println!("{version}; 1080p UYVY (4.1 MB/frame), {n} frames, best of {runs} runs");
    let best = |f: &dyn Fn() -> Result| {
        (0..runs)
            .map(|_| f())
            .max_by(|a, b| a.fps.total_cmp(&b.fps))
            .unwrap()
    };
    let pipe = best(&|| pipe_case(&ffmpeg, &frames, n));
    let slot = best(&|| slot_case(&ffmpeg, &root.0, &frames, n));
    println!();
    println!("| input | frames/s | ffmpeg CPU ms/frame | ffmpeg CPU % | writer CPU % |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("`-f rawvideo -i pipe:`", &pipe),
        ("`-f framecache -i SLOT`", &slot),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.0} |",
            r.fps, r.ffmpeg_cpu_ms_per_frame, r.ffmpeg_cpu_pct, r.writer_cpu_pct
        );
    }
    println!(
        "\nframecache / pipe: {:.2}x frames/s, {:.2}x ffmpeg CPU per frame",
        slot.fps / pipe.fps,
        slot.ffmpeg_cpu_ms_per_frame / pipe.ffmpeg_cpu_ms_per_frame
    );
}

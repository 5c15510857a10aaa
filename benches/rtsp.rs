//! CPU per RTSP camera stream: framecache pulling an RTSP camera into a packet slot, against
//! what a user would otherwise run, `ffmpeg -rtsp_transport tcp -i rtsp://… -c copy -f mpegts
//! /dev/null`, on the same camera in the same run.
//!
//! `cargo bench --bench rtsp -- [SECONDS] [STREAMS,…]` (default 10 s; 1 and 4 streams).
//! The camera is GStreamer's RTSP server (tests/peers/rtsp_server.py): 1080p30 H.264 at
//! 4 Mbit/s (x264, GOP 1 s) + AAC, one shared encoder, TCP-interleaved. For N streams,
//! framecache is one `framecache serve` process with N `[[inputs]]` (what a deployment runs;
//! its idle HTTP/WHEP side included), ffmpeg is N processes (one per camera, as users run it).
//! Each side is measured alone after a 3 s warm-up, three rounds alternating, median; CPU from
//! /proc in % of one core. The camera's own CPU is not counted.

mod common;

use common::{machine_line, median, process_cpu_seconds, Reaper, RootDir};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framecache::packet::{PacketReader, PacketReaderConfig};

fn camera() -> (Reaper, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/rtsp_server.py");
    let mut c = Command::new("/usr/bin/python3")
        .arg(script)
        .args([
            "--size",
            "1920x1080",
            "--rate",
            "30",
            "--bitrate",
            "4000",
            "--audio",
            "aac",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with GStreamer's RTSP server (see tests/rtsp.rs)");
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the RTSP server said {line:?}"));
    (Reaper(c), port)
}

/// CPU % of one core of `pids` over `secs`.
fn cpu(pids: &[u32], secs: f64) -> f64 {
    let total = |p: &[u32]| p.iter().map(|&p| process_cpu_seconds(p)).sum::<f64>();
    let t0 = Instant::now();
    let c0 = total(pids);
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = total(pids);
    (c1 - c0) / t0.elapsed().as_secs_f64() * 100.0
}

/// `framecache serve` pulling `n` slots from `url`; its CPU over `secs` after a warm-up.
fn framecache(root: &std::path::Path, url: &str, n: usize, secs: f64) -> f64 {
    let cfg = root.join("rtsp-bench.toml");
    let mut text = String::from("rtmp = \"off\"\nsrt = \"off\"\ndemo = false\n");
    for i in 0..n {
        text += &format!("[[inputs]]\nslot = \"cam{i}\"\nurls = [\"{url}\"]\n");
    }
    std::fs::write(&cfg, text).unwrap();
    let serve = Reaper(
        Command::new(env!("CARGO_BIN_EXE_framecache"))
            .args(["-q", "serve", "--http", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .env("FC_SHM_DIR", root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let c = cpu(&[serve.0.id()], secs);
    // Every slot is live and was fed all along.
    for i in 0..n {
        let mut r = PacketReader::open_in(root, &format!("cam{i}"), PacketReaderConfig::default())
            .unwrap_or_else(|e| panic!("slot cam{i}: {e}"));
        let w = r.stats().writer_packets;
        assert!(w as f64 > 30.0 * secs, "cam{i}: only {w} packets");
    }
    c
}

/// `n` ffmpeg processes copying `url` to /dev/null; their CPU over `secs` after a warm-up.
fn ffmpeg(url: &str, n: usize, secs: f64) -> f64 {
    let mut procs: Vec<Reaper> = (0..n)
        .map(|_| {
            Reaper(
                Command::new("ffmpeg")
                    .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
                    .args(["-rtsp_transport", "tcp", "-i", url])
                    .args(["-c", "copy", "-f", "mpegts", "-y", "/dev/null"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("ffmpeg"),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    let c = cpu(&pids, secs);
    for p in &mut procs {
        assert!(p.0.try_wait().unwrap().is_none(), "an ffmpeg ended early");
    }
    c
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let counts: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4]);
    let root = RootDir(std::env::temp_dir().join(format!("fc-bench-rtsp-{}", std::process::id())));
    std::fs::create_dir_all(&root.0).unwrap();
    let (_cam, port) = camera();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    println!("machine: {}", machine_line());
    println!("camera: GStreamer RTSP server, 1080p30 H.264 4 Mbit/s + AAC, TCP interleaved");
    println!("{secs} s per point, median of 3 rounds\n");
    println!(
        "| streams | framecache serve, % core | ffmpeg -c copy, % core | framecache ÷ ffmpeg |"
    );
    println!("|---|---|---|---|");
    for &n in &counts {
        let (mut f, mut g) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            f.push(framecache(&root.0, &url, n, secs));
            g.push(ffmpeg(&url, n, secs));
        }
        let (f, g) = (median(f), median(g));
        println!("| {n} | {f:.2} | {g:.2} | {:.2} |", f / g);
    }
}

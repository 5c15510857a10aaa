//! What a WebRTC rendition costs: `framecache serve` transcoding an x264 High-profile stream
//! with 3 B-frames (x264's and OBS's defaults) for browsers, at 720p30 and 1080p30.
//!
//! `cargo bench --bench transcode -- [SECONDS]` (default 10). Per size: the source is a
//! pre-encoded file pushed over RTMP with `-c copy` (no encoder of the source in the
//! measurement); a bare WHEP offer starts the rendition; then, for SECONDS:
//! - CPU of the transcoder's processes (ffmpeg: decode + encode; `framecache export`: the slot
//!   as MPEG-TS into ffmpeg) from /proc, in % of one core; the passthrough of a stream without
//!   B-frames costs none of this (it is the baseline: 0);
//! - latency added: the rendition keeps the source's timestamps (`-copyts`), so each rendition
//!   frame is paired with its source frame by pts and the difference of their publish times in
//!   the two packet slots is what transcoding adds before the RTP send (the WHEP feed sends a
//!   unit as it reads it, the same for both);
//! - the time from the offer to a live rendition (a cold start).
//!
//! Chromium's time to the first frame, transcoded next to passthrough, is printed by the
//! Chromium tests (`tests/whep.rs`).

mod common;

use common::{child_pids, cmdline, machine_line, process_cpu_seconds, Reaper, RootDir};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framecache::packet::{PacketReader, PacketReaderConfig, PacketStart, FC_MEDIA_VIDEO};

const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Fx1q\r\n\
    a=ice-pwd:p4Zkq0w8u2Ym5Ly1dNh7Qa3c\r\na=fingerprint:sha-256 \
    4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1\r\n\
    a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n\
    a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Fx1q\r\n\
    a=ice-pwd:p4Zkq0w8u2Ym5Ly1dNh7Qa3c\r\na=fingerprint:sha-256 \
    4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1\r\n\
    a=setup:actpass\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

fn post(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

/// pts → publish time (ns) of the video packets of `slot` for `secs`.
fn follow(root: &Path, slot: &str, until: Instant) -> HashMap<i64, u64> {
    let mut r = loop {
        match PacketReader::open_in(
            root,
            slot,
            PacketReaderConfig {
                start: PacketStart::Next,
            },
        ) {
            Ok(r) => break r,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{slot}: {e}"),
        }
    };
    let v = r
        .streams()
        .iter()
        .find(|s| s.media == FC_MEDIA_VIDEO)
        .map(|s| (s.index, s.timebase))
        .expect("video");
    let mut out = HashMap::new();
    let mut buf = Vec::new();
    while Instant::now() < until {
        match r.next_vec(&mut buf, Duration::from_millis(200)) {
            Ok(i) if i.stream == v.0 => {
                out.insert(
                    framecache::packet::rescale(i.pts, v.1, 90_000),
                    i.publish_ns,
                );
            }
            Ok(_) => {}
            Err(framecache::Error::Timeout) => {}
            Err(e) => panic!("{slot}: {e}"),
        }
    }
    out
}

struct Row {
    size: String,
    ffmpeg: f64,
    export: f64,
    p50: f64,
    p95: f64,
    ready50: f64,
    ready95: f64,
    pairs: usize,
    start_ms: u128,
}

fn case(dir: &Path, w: u32, h: u32, secs: u64) -> Row {
    // The source: x264 defaults' shape (High, 3 B-frames, keyframe every 2 s) + AAC.
    let src = dir.join(format!("src-{h}.flv"));
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={w}x{h}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            &(secs + 20).to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args(["-profile:v", "high", "-bf", "3", "-g", "60", "-b:v", "4M"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let root = RootDir(dir.join(format!("root-{h}")));
    std::fs::create_dir_all(&root.0).unwrap();
    let cfg = dir.join("serve.toml");
    std::fs::write(&cfg, "[whep]\n").unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_framecache"))
        .args(["serve", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
        .args(["--srt", "off", "--no-demo", "--config"])
        .arg(&cfg)
        .env("FC_SHM_DIR", &root.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(serve.stdout.take().unwrap());
    let serve = Reaper(serve);
    let (mut http, mut rtmp) = (None, None);
    for l in out.lines().map_while(Result::ok) {
        if let Some(r) = l.strip_prefix("listening http http://") {
            http = Some(r.split('/').next().unwrap().to_string());
        }
        if let Some(r) = l.strip_prefix("listening rtmp rtmp://") {
            rtmp = Some(r.split('/').next().unwrap().to_string());
        }
        if http.is_some() && rtmp.is_some() {
            break;
        }
    }
    let (http, rtmp) = (http.unwrap(), rtmp.unwrap());
    let _push = Reaper(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-i",
            ])
            .arg(&src)
            .args([
                "-c",
                "copy",
                "-f",
                "flv",
                &format!("rtmp://{rtmp}/live/cam"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Live, with a keyframe in the slot.
    let t = Instant::now();
    while PacketReader::open_in(&root.0, "cam", PacketReaderConfig::default()).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the push did not arrive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));

    // The offer waits for the rendition: its time is the cold start.
    let t = Instant::now();
    let (status, raw) = post(&http, "/whep/cam");
    assert_eq!(status, 201, "{raw}");
    let start_ms = t.elapsed().as_millis();
    // The rendition starts with the source's GOP so far, encoded faster than real time: the
    // steady state (what the figures are) follows once it caught up.
    std::thread::sleep(Duration::from_millis(2000));
    let kids = child_pids(serve.0.id());
    let ffmpeg = kids
        .iter()
        .copied()
        .find(|&p| cmdline(p).starts_with("ffmpeg") && cmdline(p).contains("-copyts"))
        .expect("the transcoder");
    let export = kids
        .iter()
        .copied()
        .find(|&p| cmdline(p).contains(" export cam "))
        .expect("the export");
    let until = Instant::now() + Duration::from_secs(secs);
    let (r1, r2) = (root.0.clone(), root.0.clone());
    let a = std::thread::spawn(move || follow(&r1, "cam", until));
    let b = std::thread::spawn(move || follow(&r2, "cam-webrtc", until));
    let c0 = (process_cpu_seconds(ffmpeg), process_cpu_seconds(export));
    let t0 = Instant::now();
    let (src_t, rend_t) = (a.join().unwrap(), b.join().unwrap());
    let el = t0.elapsed().as_secs_f64();
    let c1 = (process_cpu_seconds(ffmpeg), process_cpu_seconds(export));
    // The rendition's encoder counts time in frames (1/30 s), the source in ms: a rendition
    // frame pairs with the source frame within 2 ms of its pts. Two references: the source
    // frame's own arrival, and the moment the source could first be shown up to that frame
    // (every frame of an earlier or equal pts arrived: with B-frames a frame waits for the
    // ones shown before it, in any decoder).
    let mut src: Vec<(i64, u64)> = src_t.into_iter().collect();
    src.sort();
    let mut ready = Vec::with_capacity(src.len());
    let mut latest = 0u64;
    for &(_, ns) in &src {
        latest = latest.max(ns);
        ready.push(latest);
    }
    let (mut lat, mut lat_ready) = (Vec::new(), Vec::new());
    for (&pts, &ns) in &rend_t {
        let i = src.partition_point(|&(p, _)| p < pts - 180);
        if src.get(i).is_some_and(|&(p, _)| (p - pts).abs() <= 180) {
            lat.push((ns as f64 - src[i].1 as f64) / 1e6);
            lat_ready.push((ns as f64 - ready[i] as f64) / 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    lat_ready.sort_by(f64::total_cmp);
    assert!(
        !lat.is_empty(),
        "no rendition frame paired with its source frame"
    );
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    drop(serve);
    Row {
        size: format!("{w}x{h}@30"),
        ffmpeg: 100.0 * (c1.0 - c0.0) / el,
        export: 100.0 * (c1.1 - c0.1) / el,
        p50: pct(&lat, 0.5),
        p95: pct(&lat, 0.95),
        ready50: pct(&lat_ready, 0.5),
        ready95: pct(&lat_ready, 0.95),
        pairs: lat.len(),
        start_ms,
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .min(11); // a bare offer keeps the rendition for the 15 s connect timeout
    let have = |c: &str| {
        Command::new(c)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have("ffmpeg") {
        println!("transcode benchmark skipped: no ffmpeg (apt install ffmpeg)");
        return;
    }
    let dir =
        RootDir(std::env::temp_dir().join(format!("fc-bench-transcode-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    println!("# transcode: WebRTC renditions of x264 High + 3 B-frames + AAC sources");
    println!("machine: {}", machine_line());
    println!("encoder: libx264 ultrafast zerolatency, constrained baseline, keyframe every 1 s");
    println!("window: {secs} s per size; passthrough (no B-frames) costs none of this: baseline 0");
    println!();
    println!("| source | ffmpeg CPU (% of a core) | export CPU | total | added latency p50 / p95, from the frame's arrival | from when it could be shown | frames paired | cold start (offer → live) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (w, h) in [(1280, 720), (1920, 1080)] {
        let r = case(&dir.0, w, h, secs);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {} | {} ms |",
            r.size,
            r.ffmpeg,
            r.export,
            r.ffmpeg + r.export,
            r.p50,
            r.p95,
            r.ready50,
            r.ready95,
            r.pairs,
            r.start_ms
        );
    }
}

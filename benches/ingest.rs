//! Ingest CPU per stream, in the same run: N concurrent RTMP pushes at 5 Mbit/s into the
//! framecache RTMP server (`framecache ingest`, each push into its own packet slot) and into
//! nginx-rtmp (Debian's `libnginx-mod-rtmp`, one worker, `live on`), and one SRT push at
//! 5 Mbit/s into the framecache SRT listener and into `srt-live-transmit` (to /dev/null).
//!
//! The RTMP load generator replays a pre-encoded FLV (720p30 H.264 5 Mbit/s + AAC) at real
//! time over N connections from one process (rml_rtmp client sessions); it reports a stream as
//! late when a tag leaves more than 500 ms behind its schedule. Server CPU is read from
//! /proc/PID/stat over the measured window.
//!
//! framecache runs once per read interval (`--rtmp-read-ms`): 100 ms (its default), 20 ms
//! (`framecache serve`'s default) and 0 (each publisher read as its data arrives);
//! `FC_BENCH_RTMP_READ_MS=20,40,...` picks others. Each point runs `FC_BENCH_ROUNDS` (3)
//! rounds that alternate the servers; the table has the median of each.
//!
//! `cargo bench --bench ingest [-- SECONDS N1,N2,...]` (defaults: 8 s; 1,4,16,32 streams).

mod common;
use framecache_testkit::rml_publisher;

use common::{median, process_cpu_seconds, Reaper};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::sessions::ClientSessionResult;
use rml_rtmp::time::RtmpTimestamp;

struct Tag {
    video: bool,
    ts: u32,
    body: Bytes,
}

fn source(dir: &Path) -> PathBuf {
    let out = dir.join("bench-5mbit.flv");
    if !out.exists() {
        let st = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
            .args([
                "-i",
                "testsrc2=size=1280x720:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine",
            ])
            .args([
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "60",
            ])
            .args([
                "-b:v", "5M", "-minrate", "5M", "-maxrate", "5M", "-bufsize", "2M",
            ])
            .args([
                "-x264-params",
                "nal-hrd=cbr",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-y",
            ])
            .arg(&out)
            .status()
            .expect("ffmpeg");
        assert!(st.success());
    }
    out
}

fn flv_tags(path: &Path) -> Vec<Tag> {
    let d = std::fs::read(path).unwrap();
    framecache::ingest::flv::file_tags(&d)
        .expect("an FLV file")
        .map_while(Result::ok)
        .map(|t| Tag {
            video: t.video,
            ts: t.ts,
            body: Bytes::copy_from_slice(t.body),
        })
        .collect()
}

fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
    match s.read(buf) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Some(0)
        }
        Err(_) => None,
    }
}

/// One publisher: connect, publish `key`, replay the tags at real time (looping) until
/// `stop`; returns whether it ever fell 500 ms behind.
fn publisher(
    addr: String,
    key: String,
    tags: Arc<Vec<Tag>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> bool {
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let (mut sess, _) = rml_publisher::publish(&mut s, &key, Some(format!("rtmp://{addr}/live")));
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let span = u64::from(tags.last().map_or(1, |t| t.ts)) + 33;
    let mut late = false;
    let mut lap = 0u64;
    'outer: loop {
        for t in tags.iter() {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            let at = lap * span + u64::from(t.ts);
            let due = start + Duration::from_millis(at);
            let now = Instant::now();
            if let Some(w) = due.checked_duration_since(now) {
                std::thread::sleep(w);
            } else if now - due > Duration::from_millis(500) {
                late = true;
            }
            let ts = RtmpTimestamp::new(at as u32);
            let r = if t.video {
                sess.publish_video_data(t.body.clone(), ts, false)
            } else {
                sess.publish_audio_data(t.body.clone(), ts, false)
            };
            if let Ok(ClientSessionResult::OutboundResponse(p)) = r {
                if s.write_all(&p.bytes).is_err() {
                    return true;
                }
                sent.fetch_add(p.bytes.len() as u64, Ordering::Relaxed);
            }
            // Drain acknowledgements so the server's window never blocks us.
            let _ = read_some(&mut s, &mut buf);
        }
        lap += 1;
    }
    late
}

/// Runs `n` publishers against `addr` for `secs` (after 2 s of warm-up) and returns (server
/// CPU % of one core per stream, any late stream, Mbit/s sent).
fn measure(pid: u32, addr: &str, n: usize, secs: u64, tags: &Arc<Vec<Tag>>) -> (f64, bool, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (a, t, s, c) = (addr.to_string(), tags.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || publisher(a, format!("stream{i}"), t, s, c))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0, b0) = (
        process_cpu_seconds(pid),
        Instant::now(),
        sent.load(Ordering::Relaxed),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, wall, b1) = (
        process_cpu_seconds(pid),
        t0.elapsed().as_secs_f64(),
        sent.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    // Join every publisher before looking at the results (`any` would stop at the first).
    let lates: Vec<bool> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or(true))
        .collect();
    let late = lates.contains(&true);
    let per_stream = (c1 - c0) / wall / n as f64 * 100.0;
    (per_stream, late, (b1 - b0) as f64 * 8.0 / wall / 1e6)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn framecache_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/ingest-HASH → target/release/framecache
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("framecache");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "framecache", "--quiet"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let secs: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(8);
    let counts: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16, 32]);
    // framecache's read intervals to measure (ms; 0 = as data arrives).
    let intervals: Vec<u64> = std::env::var("FC_BENCH_RTMP_READ_MS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 20, 0]);
    let rounds: usize = std::env::var("FC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let work = std::env::temp_dir().join(format!("fc-bench-ingest-{}", std::process::id()));
    // Slots live in tmpfs, as in production: a disk-backed root adds page-cache writeback.
    let shm_base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        work.clone()
    };
    std::fs::create_dir_all(&work).unwrap();
    let tags = Arc::new(flv_tags(&source(&std::env::temp_dir())));
    let bin = framecache_bin();
    let nginx_module = Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so");
    let have_nginx = nginx_module.exists() && Path::new("/usr/sbin/nginx").exists();
    if !have_nginx {
        println!("nginx-rtmp not installed (apt install nginx-light libnginx-mod-rtmp): its column is skipped");
    }
    println!("RTMP ingest, {secs} s per point, median of {rounds} alternating rounds, 720p30 H.264 5 Mbit/s + AAC, CPU in % of one core per stream");
    let name = |ms: u64| match ms {
        0 => "framecache, as data arrives".to_string(),
        100 => "framecache, read every 100 ms (default)".to_string(),
        20 => "framecache, read every 20 ms (serve's default)".to_string(),
        ms => format!("framecache, read every {ms} ms"),
    };
    let mut head = "| streams ".to_string();
    for &ms in &intervals {
        head += &format!("| {} | late ", name(ms));
    }
    head += "| nginx-rtmp | late ";
    for &ms in &intervals {
        head += &format!(
            "| {} ÷ nginx ",
            if ms == 0 {
                "arrival".to_string()
            } else {
                format!("{ms} ms")
            }
        );
    }
    println!("{head}|");
    println!(
        "|---:{}|---:|---{}|",
        "|---:|---".repeat(intervals.len()),
        "|---:".repeat(intervals.len())
    );
    for &n in &counts {
        let run_fc = |read_ms: u64| {
            let port = free_port();
            let shm = shm_base.join(format!(
                "fc-bench-ingest-{}-{n}-{read_ms}",
                std::process::id()
            ));
            let fc = Reaper(
                Command::new(&bin)
                    .args([
                        "ingest",
                        &format!("rtmp://127.0.0.1:{port}"),
                        "--any-key",
                        "--payload-mb",
                        "16",
                        "--rtmp-read-ms",
                        &read_ms.to_string(),
                    ])
                    .env("FC_SHM_DIR", &shm)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_port(port);
            let r = measure(fc.0.id(), &format!("127.0.0.1:{port}"), n, secs, &tags);
            drop(fc);
            let _ = std::fs::remove_dir_all(&shm);
            r
        };
        let run_ng = |round: usize| {
            let port = free_port();
            let dir = work.join(format!("nginx-{n}-{round}"));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "load_module {};\ndaemon off;\nmaster_process off;\nerror_log {}/error.log;\npid {}/nginx.pid;\nevents {{ worker_connections 1024; }}\nrtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n",
                    nginx_module.display(),
                    dir.display(),
                    dir.display()
                ),
            )
            .unwrap();
            let ng = Reaper(
                Command::new("/usr/sbin/nginx")
                    .arg("-c")
                    .arg(&conf)
                    .arg("-p")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_port(port);
            let (c, l, _) = measure(ng.0.id(), &format!("127.0.0.1:{port}"), n, secs, &tags);
            (c, l)
        };
        // Rounds alternate the servers, so that a slow spell of this shared VM does not land
        // on one of them; each column is the median over the rounds.
        let mut fc_runs: Vec<Vec<(f64, bool, f64)>> = vec![Vec::new(); intervals.len()];
        let mut ng_runs: Vec<(f64, bool)> = Vec::new();
        for round in 0..rounds {
            for (k, &ms) in intervals.iter().enumerate() {
                fc_runs[k].push(run_fc(ms));
            }
            if have_nginx {
                ng_runs.push(run_ng(round));
            }
        }
        let fcs: Vec<(f64, bool, f64)> = fc_runs
            .iter()
            .map(|r| {
                let cpu = median(r.iter().map(|x| x.0).collect());
                (cpu, r.iter().any(|x| x.1), r[0].2)
            })
            .collect();
        let (ng_cpu, ng_late) = if ng_runs.is_empty() {
            (None, false)
        } else {
            (
                Some(median(ng_runs.iter().map(|x| x.0).collect())),
                ng_runs.iter().any(|x| x.1),
            )
        };
        let yes = |l: bool| if l { "yes" } else { "no" };
        let mut row = format!("| {n} ");
        for (c, l, _) in &fcs {
            row += &format!("| {c:.3}% | {} ", yes(*l));
        }
        row += &match ng_cpu {
            Some(g) => format!("| {g:.3}% | {} ", yes(ng_late)),
            None => "| - | - ".into(),
        };
        for (c, _, _) in &fcs {
            row += &match ng_cpu {
                Some(g) => format!("| {:.2} ", c / g.max(1e-9)),
                None => "| - ".into(),
            };
        }
        let mbit = fcs.first().map_or(0.0, |f| f.2);
        println!("{row}|   ({mbit:.1} Mbit/s offered)");
    }
    srt_point(&bin, &shm_base, secs);
    let _ = std::fs::remove_dir_all(&work);
}

/// One SRT push (ffmpeg, 5 Mbit/s TS) into the framecache listener and into
/// srt-live-transmit writing to /dev/null.
fn srt_point(bin: &Path, shm_base: &Path, secs: u64) {
    let ts = std::env::temp_dir().join("bench-5mbit.ts");
    if !ts.exists() {
        let st = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(std::env::temp_dir().join("bench-5mbit.flv"))
            .args(["-c", "copy", "-f", "mpegts", "-y"])
            .arg(&ts)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let slt = Path::new("/usr/bin/srt-live-transmit").exists();
    let push = |port: u16| {
        Reaper(
            Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-loglevel",
                    "quiet",
                    "-re",
                    "-stream_loop",
                    "-1",
                    "-i",
                ])
                .arg(&ts)
                .args(["-c", "copy", "-f", "mpegts"])
                .arg(format!(
                    "srt://127.0.0.1:{port}?streamid=bench&latency=200000"
                ))
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let window = |pid: u32| {
        std::thread::sleep(Duration::from_secs(2));
        let (c0, t0) = (process_cpu_seconds(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(secs));
        (process_cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0
    };
    let port = free_port();
    let shm = shm_base.join(format!("fc-bench-srt-{}", std::process::id()));
    let fc = Reaper(
        Command::new(bin)
            .args([
                "ingest",
                &format!("srt://127.0.0.1:{port}?mode=listener"),
                "--any-key",
            ])
            .env("FC_SHM_DIR", &shm)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let p = push(port);
    let fc_cpu = window(fc.0.id());
    drop(p);
    drop(fc);
    let _ = std::fs::remove_dir_all(&shm);
    let slt_cpu = slt.then(|| {
        let port = free_port();
        let s = Reaper(
            Command::new("/usr/bin/srt-live-transmit")
                .args([&format!("srt://:{port}?mode=listener"), "file://con"])
                .stdout(std::fs::File::create("/dev/null").unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(500));
        let p = push(port);
        let c = window(s.0.id());
        drop(p);
        c
    });
    println!();
    println!("SRT ingest, one 5 Mbit/s push, CPU in % of one core");
    println!(
        "| framecache listener (demux into a slot) | srt-live-transmit (to /dev/null) | ratio |"
    );
    println!("|---:|---:|---:|");
    match slt_cpu {
        Some(c) => println!("| {fc_cpu:.2}% | {c:.2}% | {:.2} |", fc_cpu / c.max(1e-9)),
        None => println!("| {fc_cpu:.2}% | - (apt install srt-tools) | - |"),
    }
}

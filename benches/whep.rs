//! WHEP egress cost: `framecache serve` CPU with N viewers of one 2.5 Mbit/s 720p stream, and
//! Chromium's time from POST to the first decoded frame.
//!
//! `cargo bench --bench whep -- [SECONDS] [N1,N2,...] [JOINS]` (default 10 s, 1,10,50 viewers,
//! 20 Chromium joins). The source is a pre-encoded H.264 + AAC file pushed over RTMP with
//! `-c copy` (no encoder in the measurement). Viewers are light receivers built on webrtc-rs
//! in this process: ICE, DTLS, SRTP and RTCP like a browser, no decoding, so the figure is the
//! server's cost per viewer. The server's CPU comes from /proc (per-thread schedstat); the ingest-only CPU
//! (0 viewers) is measured in the same run and subtracted for the per-viewer figure.
//! No same-run baseline server is available here (MediaMTX is not packaged); its users report
//! about 50 viewers per core.

mod common;

use common::{process_cpu_seconds, Reaper};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};
use webrtc::runtime::TokioRuntime;

fn post(addr: &str, path: &str, sdp: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let loc = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or("")
        .to_string();
    (status, loc, body.to_string())
}

struct CountingHandler(Arc<AtomicU64>);
#[async_trait::async_trait]
impl PeerConnectionEventHandler for CountingHandler {
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let bytes = self.0.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// One light viewer: returns its connection and received-bytes counter.
async fn viewer(http: String) -> (Arc<dyn PeerConnection>, Arc<AtomicU64>) {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )
    .unwrap();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
    .unwrap();
    let reg = register_default_interceptors(Registry::new(), &mut me).unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(reg)
        .with_handler(Arc::new(CountingHandler(bytes.clone())))
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .unwrap();
    }
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sdp = pc.local_description().await.unwrap().sdp;
    let (status, _loc, answer) =
        tokio::task::spawn_blocking(move || post(&http, "/whep/bench", &sdp))
            .await
            .unwrap();
    assert_eq!(status, 201, "{answer}");
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    (pc, bytes)
}

fn serve(root: &Path) -> (Reaper, String, String) {
    let cfg = root.join("serve.toml");
    std::fs::write(
        &cfg,
        "demo = false\nsrt = \"off\"\n[whep]\nmax_viewers_per_stream = 1000\nmax_viewers_total = 1000\n",
    )
    .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_framecache"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--rtmp",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&cfg)
        .env("FC_SHM_DIR", root.join("slots"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(c.stdout.take().unwrap());
    let (mut http, mut rtmp) = (String::new(), String::new());
    let mut lines = out.lines();
    while http.is_empty() || rtmp.is_empty() {
        let l = lines.next().unwrap().unwrap();
        if let Some(r) = l.strip_prefix("listening http http://") {
            http = r.split('/').next().unwrap().into();
        }
        if let Some(r) = l.strip_prefix("listening rtmp rtmp://") {
            rtmp = r.split('/').next().unwrap().into();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Reaper(c), http, rtmp)
}

fn chromium_joins(http: &str, joins: usize) -> Option<Vec<f64>> {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    let site = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = site.local_addr().unwrap().to_string();
    let page = format!(
        r#"<!doctype html><video id="v" muted autoplay></video><script src="http://{http}/whep.js"></script><script>
(async () => {{
  const out = [];
  for (let i = 0; i < {joins}; i++) {{
    try {{
      const s = await FcWhep.play('http://{http}/whep/bench', document.getElementById('v'));
      let ms = null;
      while (performance.now() - s.t0 < 10000) {{
        if ((await s.stats()).framesDecoded > 0) {{ ms = performance.now() - s.t0; break; }}
        await new Promise(r => setTimeout(r, 5));
      }}
      out.push(ms === null ? -1 : Math.round(ms));
      await s.stop();
    }} catch (e) {{ out.push(-2); }}
    await new Promise(r => setTimeout(r, 300));
  }}
  await fetch('/report?' + out.join(','));
}})();
</script>"#
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in site.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split(' ').nth(1).unwrap_or("/").to_string();
            let body = match path.strip_prefix("/report?") {
                Some(q) => {
                    let _ = tx.send(q.to_string());
                    String::new()
                }
                None => page.clone(),
            };
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    let profile = std::env::temp_dir().join(format!("fc-bench-chromium-{}", std::process::id()));
    let _b = Reaper(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
            ])
            .args([
                "--no-first-run",
                "--disable-background-networking",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("http://{addr}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?,
    );
    let r = rx
        .recv_timeout(Duration::from_secs(30 + 12 * joins as u64))
        .ok();
    let _ = std::fs::remove_dir_all(&profile);
    Some(r?.split(',').filter_map(|v| v.parse().ok()).collect())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let counts: Vec<usize> = args
        .get(1)
        .map(|a| a.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 50]);
    let joins: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);

    let root = std::env::temp_dir().join(format!("fc-bench-whep-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let clip: PathBuf = root.join("clip.flv");
    eprintln!("encoding a 20 s 1280x720 2.5 Mbit/s clip...");
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i"])
        .args([
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "20",
            "-c:v",
            "libx264",
        ])
        .args([
            "-preset",
            "veryfast",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "60",
        ])
        .args(["-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"])
        .arg(&clip)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ffmpeg is needed to make the source clip");

    let (srv, http, rtmp) = serve(&root);
    let pid = srv.0.id();
    let _push = Reaper(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
            ])
            .arg(&clip)
            .args(["-c", "copy", "-f", "flv"])
            .arg(format!("rtmp://{rtmp}/live/bench"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let measure = |secs: u64| {
        let t0 = process_cpu_seconds(pid);
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        (process_cpu_seconds(pid) - t0) / start.elapsed().as_secs_f64() * 100.0
    };
    let base = measure(secs);
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_string))
        })
        .unwrap_or_default();
    println!(
        "machine: {machine}, {} cores; source 1280x720 H.264 2.5 Mbit/s + AAC 96 kbit/s (→ Opus) over RTMP, {secs} s per point",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("serve with 0 viewers (ingest only): {base:.1}% of a core");
    println!("| viewers | serve CPU % | per viewer % | viewers per core | min viewer kbit/s |");
    println!("|---:|---:|---:|---:|---:|");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for &n in &counts {
        let vs = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(viewer(http.clone()).await);
            }
            v
        });
        std::thread::sleep(Duration::from_secs(3));
        let b0: Vec<u64> = vs.iter().map(|(_, b)| b.load(Ordering::Relaxed)).collect();
        let t = Instant::now();
        let cpu = measure(secs);
        let el = t.elapsed().as_secs_f64();
        let min_kbps = vs
            .iter()
            .zip(&b0)
            .map(|((_, b), b0)| (b.load(Ordering::Relaxed) - b0) as f64 * 8.0 / el / 1000.0)
            .fold(f64::MAX, f64::min);
        let per = ((cpu - base) / n as f64).max(0.0);
        println!(
            "| {n} | {cpu:.1} | {per:.2} | {} | {min_kbps:.0} |",
            if per > 0.0 {
                format!("{:.0}", 100.0 / per)
            } else {
                "-".into()
            }
        );
        rt.block_on(async {
            for (pc, _) in vs {
                let _ = pc.close().await;
            }
        });
        std::thread::sleep(Duration::from_secs(2));
    }
    if joins > 0 {
        match chromium_joins(&http, joins) {
            Some(mut v) if !v.is_empty() => {
                let failed = v.iter().filter(|x| **x < 0.0).count();
                v.retain(|x| *x >= 0.0);
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                if v.is_empty() {
                    println!("chromium: no join decoded a frame ({failed} failed)");
                } else {
                    println!(
                        "chromium time from POST to first decoded frame over {} joins: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms ({failed} failed)",
                        v.len(),
                        p(0.5),
                        p(0.9),
                        v[v.len() - 1]
                    );
                }
            }
            _ => println!("chromium: not installed or no report; time to first frame not measured"),
        }
    }
    drop(srv);
    let _ = std::fs::remove_dir_all(&root);
}

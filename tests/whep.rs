//! WHEP and `framecache serve` against real clients: headless Chromium, aiortc, ffmpeg as the
//! RTMP source, and raw HTTP for the error matrix. A client that is not installed makes its
//! test print why it skipped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{aiortc_python, child_pids, cmdline, have, skip, wait_for, Reaper, TempRoot};

struct Serve {
    child: Reaper,
    http: String,
    rtmp: String,
    srt: String,
    _config: PathBuf,
    /// The viewer token and the metrics token of its config.
    viewer: Option<String>,
    metrics: Option<String>,
    /// Everything it printed so far, stdout and stderr (stderr is passed on as well).
    said: Arc<Mutex<String>>,
}

impl Serve {
    fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// Starts `framecache serve` on ephemeral loopback ports with `config` (TOML).
fn serve(root: &TempRoot, name: &str, config: &str, demo: bool) -> Serve {
    let cfg = std::env::temp_dir().join(format!("fc-serve-{}-{name}.toml", std::process::id()));
    std::fs::write(&cfg, config).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_framecache"));
    c.args(["serve", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
        .args(["--srt", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env("FC_SHM_DIR", root.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !demo {
        c.arg("--no-demo");
    }
    let mut child = c.spawn().expect("spawn framecache serve");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let said = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let said2 = said.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            said2.lock().unwrap().push_str(&format!("{l}\n"));
            let _ = tx.send(l);
        }
    });
    let said2 = said.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{l}");
            said2.lock().unwrap().push_str(&format!("{l}\n"));
        }
    });
    let child = Reaper(child);
    let (mut http, mut rtmp, mut srt) = (None, None, None);
    let t = Instant::now();
    while http.is_none() || rtmp.is_none() || srt.is_none() {
        let l = rx
            .recv_timeout(Duration::from_secs(20).saturating_sub(t.elapsed()))
            .expect("serve printed its addresses");
        if let Some(r) = l
            .strip_prefix("listening http http://")
            .or_else(|| l.strip_prefix("listening http https://"))
        {
            http = Some(r.split('/').next().unwrap().to_string());
        }
        if let Some(r) = l.strip_prefix("listening rtmp rtmp://") {
            rtmp = Some(r.split('/').next().unwrap().to_string());
        }
        if let Some(r) = l.strip_prefix("listening srt srt://") {
            srt = Some(r.split('?').next().unwrap().to_string());
        }
    }
    // The tokens the config sets, for the helpers that read the API and the metrics.
    let value = |key: &str| {
        config.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    };
    Serve {
        child,
        http: http.unwrap(),
        rtmp: rtmp.unwrap(),
        srt: srt.unwrap(),
        _config: cfg,
        viewer: value("token"),
        metrics: value("metrics_token"),
        said,
    }
}

/// Runs `framecache serve` with `config`, which it must refuse to start with; its stderr.
fn serve_refused(root: &TempRoot, name: &str, config: &str) -> String {
    let cfg = std::env::temp_dir().join(format!("fc-serve-{}-{name}.toml", std::process::id()));
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_framecache"))
        .args(["serve", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
        .args(["--srt", "off", "--no-demo", "--seconds", "5", "--config"])
        .arg(&cfg)
        .env("FC_SHM_DIR", root.path())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&cfg);
    assert!(!out.status.success(), "serve started with {config}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request (Connection: close).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A browser-like offer (recvonly H.264 constrained baseline + Opus) with no candidates: the
/// server answers it and keeps the resource until its connect timeout.
fn offer(h264: bool, opus: bool) -> String {
    offer_dir(h264, opus, "recvonly")
}

/// As [`offer`], a publisher's (`sendonly`) or a viewer's (`recvonly`).
fn offer_dir(h264: bool, opus: bool, dir: &str) -> String {
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n",
    );
    let common = "c=IN IP4 0.0.0.0\r\na=ice-ufrag:Fx1q\r\na=ice-pwd:p4Zkq0w8u2Ym5Ly1dNh7Qa3c\r\n\
        a=ice-options:trickle\r\na=fingerprint:sha-256 \
        4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1\r\n\
        a=setup:actpass\r\n";
    if h264 {
        s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 102\r\n");
        s.push_str(common);
        s.push_str(&format!(
            "a=mid:0\r\na={dir}\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n\
             a=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
             a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        ));
    } else {
        s.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n");
        s.push_str(common);
        s.push_str(&format!(
            "a=mid:0\r\na={dir}\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
        ));
    }
    if opus {
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        s.push_str(common);
        s.push_str(&format!(
            "a=mid:1\r\na={dir}\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1\r\n"
        ));
    } else {
        s.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n");
        s.push_str(common);
        s.push_str(&format!(
            "a=mid:1\r\na={dir}\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n"
        ));
    }
    s
}

const SDP: (&str, &str) = ("Content-Type", "application/sdp");

fn post(s: &Serve, stream: &str, auth: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![SDP];
    h.extend_from_slice(auth);
    http(
        &s.http,
        "POST",
        &format!("/whep/{stream}"),
        &h,
        body.as_bytes(),
    )
}

fn bearer(t: &Option<String>) -> Vec<(&'static str, String)> {
    t.iter()
        .map(|t| ("Authorization", format!("Bearer {t}")))
        .collect()
}

fn with<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn metric(s: &Serve, name: &str) -> f64 {
    let h = bearer(&s.metrics);
    let m = http(&s.http, "GET", "/metrics", &with(&h), b"");
    assert_eq!(m.status, 200);
    m.body
        .lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Whether `/api/streams` lists `stream` as live (its own entry, not any stream's).
fn is_live(s: &Serve, stream: &str) -> bool {
    let h = bearer(&s.viewer);
    let r = http(&s.http, "GET", "/api/streams", &with(&h), b"");
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
        return false;
    };
    let list = v.get("streams").unwrap_or(&v);
    list.as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e["id"] == stream && e["live"] == serde_json::Value::Bool(true))
    })
}

fn wait_live(s: &Serve, stream: &str) {
    wait_for(&format!("{stream} live"), Duration::from_secs(20), || {
        is_live(s, stream)
    });
}

fn wait_not_live(s: &Serve, stream: &str) {
    wait_for(&format!("{stream} gone"), Duration::from_secs(20), || {
        !is_live(s, stream)
    });
}

/// ffmpeg pushing a live 640x360 H.264 (baseline, no B-frames) + AAC test pattern over RTMP.
fn push(rtmp: &str, key: &str, secs: u32) -> Reaper {
    push_with(
        rtmp,
        key,
        secs,
        &["-tune", "zerolatency", "-profile:v", "baseline", "-bf", "0"],
    )
}

/// As [`push`], with these video encoder options.
fn push_with(rtmp: &str, key: &str, secs: u32, video: &[&str]) -> Reaper {
    Reaper(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                &secs.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .args(["-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .args(video)
            .args(["-f", "flv"])
            .arg(format!("rtmp://{rtmp}/live/{key}"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg"),
    )
}

/// Runs the aiortc WHEP client; returns its JSON report.
fn aiortc(py: &Path, url: &str, viewers: usize, secs: f64, extra: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/whep_aiortc.py");
    let out = Command::new(py)
        .arg(script)
        .arg(url)
        .args([
            "--viewers",
            &viewers.to_string(),
            "--seconds",
            &secs.to_string(),
        ])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .expect("run aiortc client");
    assert!(out.status.success(), "aiortc client failed");
    serde_json::from_slice(&out.stdout).expect("aiortc client JSON")
}

#[test]
fn error_matrix_cors_and_trickle_over_http() {
    let root = TempRoot::new("whep-errors");
    let s = serve(
        &root,
        "errors",
        r#"
metrics_token = "m3trics"
[[keys]]
key = "later"
[[keys]]
key = "cam2"
transcode = false
[whep]
token = "s3cret"
allowed_origins = ["http://allowed.example"]
max_viewers_per_stream = 3
max_viewers_total = 4
"#,
        true,
    );
    let auth = [("Authorization", "Bearer s3cret")];
    // The demo stream feeds slot `demo`; wait until it is live.
    wait_live(&s, "demo");
    // The viewer token guards RTMP play as well: ffprobe without it is refused.
    let rtmp_play = |q: &str| {
        Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", "5000000", "-show_entries"])
            .args(["stream=codec_type", "-of", "csv=p=0"])
            .arg(format!("rtmp://{}/live/demo{q}", s.rtmp))
            .output()
            .unwrap()
            .status
            .success()
    };
    // The stream list is for viewers; /metrics has its own token.
    assert_eq!(http(&s.http, "GET", "/api/streams", &[], b"").status, 401);
    let r = http(&s.http, "GET", "/api/streams", &auth, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"demo\""), "{}", r.body);
    assert_eq!(http(&s.http, "GET", "/metrics", &auth, b"").status, 401);
    let m = http(
        &s.http,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer m3trics")],
        b"",
    );
    assert_eq!(m.status, 200);
    assert_eq!(http(&s.http, "GET", "/health", &[], b"").status, 200);
    assert!(!rtmp_play(""), "RTMP play without the viewer token");
    assert!(!rtmp_play("?token=nope"), "RTMP play with a wrong token");
    assert!(
        rtmp_play("?token=s3cret"),
        "RTMP play with the viewer token"
    );
    let good = offer(true, true);

    // 401: missing and wrong token.
    let r = post(&s, "demo", &[], &good);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        post(&s, "demo", &[("Authorization", "Bearer nope")], &good).status,
        401
    );
    // 415 wrong content type, 400 empty / not SDP.
    let r = http(
        &s.http,
        "POST",
        "/whep/demo",
        &[("Content-Type", "text/plain"), auth[0]],
        good.as_bytes(),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(post(&s, "demo", &auth, "").status, 400);
    assert_eq!(post(&s, "demo", &auth, "hello there").status, 400);
    // 404 unknown stream; 409 + Retry-After for a registered key that is not live.
    let r = post(&s, "nosuch", &auth, &good);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(&s, "later", &auth, &good);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // 406: no H.264; no Opus while the stream has audio.
    let r = post(&s, "demo", &auth, &offer(false, true));
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(r.body.contains("H.264"));
    let r = post(&s, "demo", &auth, &offer(true, false));
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(r.body.contains("Opus"));
    // 422: H.264 with B-frames (x264's defaults) does not play in browsers, and this key
    // forbids transcoding: the body says why and what to change, instead of a 201 that freezes.
    if have("ffmpeg") {
        let _b = push_with(&s.rtmp, "cam2", 20, &["-profile:v", "high", "-bf", "3"]);
        wait_live(&s, "cam2");
        let r = post(&s, "cam2", &auth, &good);
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(
            r.body.contains("B-frames") && r.body.contains("-bf 0"),
            "{}",
            r.body
        );
        drop(_b);
        // The next publisher of cam2 must not meet this one's slot.
        wait_not_live(&s, "cam2");
    }

    // 201 with Location, ETag, Accept-Patch and an answer.
    let r = post(&s, "demo", &auth, &good);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.starts_with("v=0") && r.body.contains("a=candidate:"));
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/sdp"));
    assert_eq!(
        r.header("accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );
    let loc = r.header("location").unwrap().to_string();
    let etag = r.header("etag").unwrap().to_string();
    assert!(loc.starts_with("/whep/demo/"), "{loc}");

    // PATCH: wrong type 415, If-Match mismatch 412, a trickled candidate 204, ICE restart 200
    // with a new ETag and new credentials.
    let frag = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let ice = ("Content-Type", "application/trickle-ice-sdpfrag");
    let r = http(&s.http, "PATCH", &loc, &[SDP, auth[0]], frag.as_bytes());
    assert_eq!(r.status, 415);
    let r = http(
        &s.http,
        "PATCH",
        &loc,
        &[ice, auth[0], ("If-Match", "\"other\"")],
        frag.as_bytes(),
    );
    assert_eq!(r.status, 412);
    let r = http(
        &s.http,
        "PATCH",
        &loc,
        &[ice, auth[0], ("If-Match", &etag)],
        frag.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let restart = "a=ice-ufrag:NEW1\r\na=ice-pwd:n3wpassword0000000000000\r\n";
    let r = http(&s.http, "PATCH", &loc, &[ice, auth[0]], restart.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let etag2 = r.header("etag").unwrap().to_string();
    assert_ne!(etag2, etag);
    assert!(r.body.contains("a=ice-ufrag:") && r.body.contains("a=ice-pwd:"));
    let r = http(
        &s.http,
        "PATCH",
        &loc,
        &[ice, auth[0], ("If-Match", &etag)],
        frag.as_bytes(),
    );
    assert_eq!(r.status, 412, "the old ETag no longer matches");

    // 503 per stream (cap 3) and in total (cap 4), with distinct bodies and Retry-After.
    let r2 = post(&s, "demo", &auth, &good);
    let r3 = post(&s, "demo", &auth, &good);
    assert_eq!((r2.status, r3.status), (201, 201));
    let full = post(&s, "demo", &auth, &good);
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.header("retry-after").is_some());
    assert!(full.body.contains("stream demo"), "{}", full.body);
    // The RTMP port takes a second live stream for the total cap.
    let _p = push(&s.rtmp, "cam2", 30);
    wait_live(&s, "cam2");
    // Until the new publisher's first parameters arrive the answer is 409 + Retry-After (a
    // loaded machine can take seconds); a player retries, so does this test.
    let mut first = post(&s, "cam2", &auth, &good);
    for _ in 0..20 {
        if first.status != 409 {
            break;
        }
        assert!(first.header("retry-after").is_some());
        std::thread::sleep(Duration::from_millis(500));
        first = post(&s, "cam2", &auth, &good);
    }
    assert_eq!(first.status, 201, "{}", first.body);
    let total = post(&s, "cam2", &auth, &good);
    assert_eq!(total.status, 503, "{}", total.body);
    assert!(total.body.contains("server"), "{}", total.body);
    assert_ne!(total.body, full.body);

    // DELETE frees a place; again (or an unknown resource) is 204.
    let r = http(&s.http, "DELETE", &loc, &auth, b"");
    assert_eq!(r.status, 200);
    assert_eq!(http(&s.http, "DELETE", &loc, &auth, b"").status, 204);
    assert_eq!(
        http(&s.http, "DELETE", "/whep/demo/doesnotexist", &auth, b"").status,
        204
    );
    assert_eq!(post(&s, "demo", &auth, &good).status, 201);

    // CORS: preflight on every path, allowed origin echoed, others refused.
    let o = ("Origin", "http://allowed.example");
    for path in ["/whep/demo", &loc, "/metrics"] {
        let r = http(
            &s.http,
            "OPTIONS",
            path,
            &[o, ("Access-Control-Request-Method", "POST")],
            b"",
        );
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://allowed.example")
        );
        assert!(r
            .header("access-control-allow-methods")
            .unwrap()
            .contains("PATCH"));
        assert!(r
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization"));
        assert!(r
            .header("access-control-expose-headers")
            .unwrap()
            .contains("ETag"));
    }
    let r = http(&s.http, "OPTIONS", "/whep/demo", &[o], b"");
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    let r = http(
        &s.http,
        "OPTIONS",
        "/whep/demo",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());

    // /health and /metrics.
    let h = http(&s.http, "GET", "/health", &[], b"");
    assert_eq!(h.status, 200);
    assert!(h.body.contains("\"ok\""));
    let demo_bits = || {
        let m = http(
            &s.http,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer m3trics")],
            b"",
        )
        .body;
        m.lines()
            .find_map(|l| l.strip_prefix("framecache_stream_bitrate_bits{stream=\"demo\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for("demo bitrate", Duration::from_secs(10), || {
        demo_bits() > 100_000.0
    });
    let m = http(
        &s.http,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer m3trics")],
        b"",
    )
    .body;
    assert!(
        m.contains("framecache_stream_viewers{stream=\"demo\"}"),
        "{m}"
    );
    assert!(
        m.contains("framecache_slot_fps{slot=\"demo\",kind=\"packets\"} 30.000"),
        "{m}"
    );
    // Four places are taken (three on demo, one on cam2) unless their connect timeout passed.
    assert!((1.0..=4.0).contains(&metric(&s, "framecache_whep_viewers")));
}

/// What a Chromium case pushes into `cam1`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Src {
    /// RTMP, x264 constrained baseline without B-frames + AAC: passed through.
    Baseline,
    /// RTMP, x264 High profile with 3 B-frames + AAC (x264's and OBS's defaults): transcoded.
    BFrames,
    /// SRT, HEVC + AAC: transcoded.
    HevcSrt,
    /// RTMP, x264 High without B-frames + AAC: Chromium takes High (it offers High 4:4:4
    /// Predictive), so it is passed through.
    High,
    /// RTMP, x264 High 10 without B-frames + AAC: inside the High 4:4:4 Predictive that
    /// Chromium offers, so passed through too.
    High10,
    /// SRT, one MPEG-TS stream whose H.264 turns from baseline to B-frames after 12 s:
    /// watched from before the switch, the viewer moves to the rendition and keeps playing.
    SwitchSrt,
}

/// (c) Constrained baseline without B-frames: passed through at no cost.
#[test]
fn chromium_plays_an_rtmp_push_through_whep() {
    chromium_case(false, Src::Baseline);
}

/// (a) x264's defaults (High profile, B-frames): browsers freeze on them, so serve transcodes
/// the stream once for its WebRTC viewers (a `cam1-webrtc` slot), and Chromium decodes it.
#[test]
fn chromium_plays_a_b_frame_push_through_the_transcoder() {
    chromium_case(false, Src::BFrames);
}

/// (b) HEVC over SRT: Chromium without hardware HEVC cannot decode it; it gets H.264.
#[test]
fn chromium_plays_an_hevc_srt_push_through_the_transcoder() {
    chromium_case(false, Src::HevcSrt);
}

/// High profile without B-frames (OBS with B-frames 0): Chromium decodes it as it is.
#[test]
fn chromium_plays_a_high_profile_push_as_it_is() {
    chromium_case(false, Src::High);
}

/// High 10 without B-frames: Chromium offers High 4:4:4 Predictive, which contains it, and
/// decodes it as it is. (A viewer that offers only the baselines, as aiortc and Firefox do,
/// gets a rendition: `a_viewer_that_does_not_take_the_sources_profile_watches_the_rendition`.)
#[test]
fn chromium_plays_a_high_10_push_as_it_is() {
    chromium_case(false, Src::High10);
}

/// A source that switches from baseline to B-frames mid-stream (new parameters) keeps playing.
#[test]
fn chromium_keeps_playing_when_the_source_switches_to_b_frames() {
    chromium_case(false, Src::SwitchSrt);
}

/// The same over HTTPS: serve's HTTP listener with a certificate of a test CA, and the page on
/// another HTTPS origin (no mixed content); Chromium trusts the test key (SPKI pin).
#[test]
fn chromium_plays_over_https_from_an_https_page() {
    chromium_case(true, Src::Baseline);
}

/// ffmpeg pushing 640x360@30 + AAC as MPEG-TS over SRT (stream id `key`), encoded with `video`.
fn push_srt(srt: &str, key: &str, secs: u32, video: &[&str]) -> Reaper {
    Reaper(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &secs.to_string()])
            .args(video)
            .args([
                "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts",
            ])
            .arg(format!("srt://{srt}?streamid={key}&latency=200000"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ffmpeg"),
    )
}

/// One MPEG-TS file of `a_secs` of baseline H.264 and then `b_secs` of High profile with
/// B-frames (timestamps continuing), both with AAC: a source whose parameters change.
fn switching_ts(dir: &Path, a_secs: u32, b_secs: u32) -> PathBuf {
    let part = |name: &str, secs: u32, offset: u32, video: &[&str]| {
        let out = dir.join(name);
        let st = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                &secs.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .args(video)
            .args(["-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .args(["-output_ts_offset", &offset.to_string(), "-f", "mpegts"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(out).unwrap()
    };
    let mut all = part("a.ts", a_secs, 0, &["-profile:v", "baseline", "-bf", "0"]);
    all.extend(part(
        "b.ts",
        b_secs,
        a_secs,
        &["-profile:v", "high", "-bf", "3"],
    ));
    let p = dir.join("switch.ts");
    std::fs::write(&p, all).unwrap();
    p
}

/// SHA-256 of the certificate's public key (SubjectPublicKeyInfo), base64: what
/// `--ignore-certificate-errors-spki-list` takes.
fn spki_pin(key: &rcgen::KeyPair) -> String {
    use rcgen::PublicKeyData;
    let d = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in d.as_ref().chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One Chromium case at a time: three browsers, their encoders and a transcoder on two cores
/// starve the decoders, and frames decoded vs received is what the cases check.
static CHROMIUM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn chromium_case(https: bool, src: Src) {
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| have(c));
    let Some(chromium) = chromium else {
        skip("no chromium installed (apt install chromium)");
        return;
    };
    if !have("ffmpeg") {
        skip("no ffmpeg (apt install ffmpeg)");
        return;
    }
    let root = TempRoot::new(if https {
        "whep-chromium-tls"
    } else {
        "whep-chromium"
    });
    // A test CA and a certificate for 127.0.0.1, for serve and for the test site.
    let (cert_pem, key_pem, pin) = {
        let (_, c, k, key) = common::test_ca(root.path());
        (c, k, spki_pin(&key))
    };
    // With a viewer token: the browser sends it (a CORS preflight for Authorization first).
    let mut config = "[whep]\ntoken = \"v13wer\"\n".to_string();
    if https {
        config = format!(
            "https = true\ntls_cert = {:?}\ntls_key = {:?}\n{config}",
            cert_pem.display().to_string(),
            key_pem.display().to_string()
        );
    }
    let name = match (https, src) {
        (true, _) => "chromium-tls".to_string(),
        (false, src) => format!("chromium-{src:?}"),
    };
    let s = serve(&root, &name, &config, false);
    let _p = match src {
        Src::Baseline => push(&s.rtmp, "cam1", 60),
        Src::BFrames => push_with(&s.rtmp, "cam1", 60, &["-profile:v", "high", "-bf", "3"]),
        Src::High => push_with(
            &s.rtmp,
            "cam1",
            60,
            &["-preset", "veryfast", "-profile:v", "high", "-bf", "0"],
        ),
        Src::High10 => push_with(
            &s.rtmp,
            "cam1",
            60,
            &[
                "-preset",
                "veryfast",
                "-profile:v",
                "high10",
                "-pix_fmt",
                "yuv420p10le",
                "-bf",
                "0",
            ],
        ),
        Src::HevcSrt => push_srt(
            &s.srt,
            "cam1",
            60,
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
            ],
        ),
        Src::SwitchSrt => {
            // Late enough for a slow machine's Chromium to be watching before the switch.
            let ts = switching_ts(root.path(), 12, 30);
            Reaper(
                Command::new("ffmpeg")
                    .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
                    .arg("-i")
                    .arg(&ts)
                    .args(["-c", "copy", "-f", "mpegts"])
                    .arg(format!("srt://{}?streamid=cam1&latency=200000", s.srt))
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn ffmpeg"),
            )
        }
    };
    if !https {
        wait_live(&s, "cam1");
    }
    // 15 s of watching (5 s over HTTPS, which checks the transport, not the playback).
    // The switching source is watched 20 s, so the last 5 s come well after its switch.
    let watch_ms = match (https, src) {
        (true, _) => 5000,
        (false, Src::SwitchSrt) => 20000,
        _ => 15000,
    };
    let scheme = if https { "https" } else { "http" };
    if https && have("curl") {
        // curl trusting the test CA: the API answers over HTTPS; plain HTTP on the port is
        // refused without harm.
        let curl = |url: String| {
            let o = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                ])
                .arg("--cacert")
                .arg(root.path().join("ca.pem"))
                .args(["-H", "Authorization: Bearer v13wer", &url])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        assert_eq!(curl(format!("https://{}/api/streams", s.http)), "200");
        assert_ne!(curl(format!("http://{}/health", s.http)), "200");
        assert_eq!(curl(format!("https://{}/health", s.http)), "200");
    }

    // The test page comes from another origin, so CORS is exercised; it uses serve's own
    // player script and reports to this test's server.
    let site = TcpListener::bind("127.0.0.1:0").unwrap();
    let site_addr = site.local_addr().unwrap().to_string();
    let page = format!(
        r#"<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<script src="{scheme}://{h}/whep.js"></script>
<script>
(async () => {{
  const rep = (o) => fetch('/report?' + new URLSearchParams(o));
  try {{
    const v = document.getElementById('v');
    let ids = '';
    for (let i = 0; i < 100 && !ids.includes('cam1'); i++) {{
      const list = await fetch('{scheme}://{h}/api/streams', {{ headers: {{ Authorization: 'Bearer v13wer' }} }});
      ids = (await list.json()).filter((x) => x.live).map((x) => x.id).join(',');
      if (!ids.includes('cam1')) await new Promise(r => setTimeout(r, 200));
    }}
    if (!ids.includes('cam1')) throw new Error('stream list without cam1: ' + ids);
    const s = await FcWhep.play('{scheme}://{h}/whep/cam1', v, {{ token: 'v13wer' }});
    // From the first decoded frame: the stats 1 s later (freezes before that are start-up)
    // and {watch_ms} ms later, when the page reports.
    let first = null, at1 = null, at10 = null, tl = [], next = 0;
    const t = performance.now();
    while (performance.now() - t < {watch_ms} + 25000) {{
      const st = await s.stats();
      if (st.framesDecoded > 0 && first === null) first = performance.now();
      const el = first === null ? -1 : performance.now() - first;
      if (at1 === null && el >= 1000) at1 = st;
      // A timeline for the log: seconds, frames decoded, freezes.
      if (el >= next) {{ tl.push([Math.round(el / 1000), st.framesDecoded, st.freezeCount].join(':')); next += 1000; }}
      if (at10 === null && el >= {watch_ms} - 5000) at10 = st;
      if (el >= {watch_ms}) {{
        await rep({{ok: 1, frames: st.framesDecoded, recv: st.framesReceived,
                    freezes: st.freezeCount, freezes_after_1s: st.freezeCount - at1.freezeCount,
                    last5s: st.framesDecoded - at10.framesDecoded, w: st.width, h: st.height,
                    audio: st.audioPackets, samples: st.audioSamples,
                    ttff_ms: Math.round(first - s.t0), timeline: tl.join(',')}});
        await s.stop();
        return;
      }}
      await new Promise(r => setTimeout(r, first === null ? 10 : 100));
    }}
    const st = await s.stats();
    await rep({{ok: 0, frames: st.framesDecoded, w: st.width, h: st.height,
               audio: st.audioPackets, state: st.state}});
  }} catch (e) {{ await rep({{error: String(e.message || e)}}); }}
}})();
</script></body></html>"#,
        h = s.http,
        scheme = scheme,
        watch_ms = watch_ms,
    );
    let (tx, rx) = mpsc::channel::<String>();
    let site_tls =
        https.then(|| framecache::ingest::rtmp::tls_identity(&cert_pem, &key_pem).unwrap());
    std::thread::spawn(move || {
        // One thread per connection: a browser's idle preconnect must not stall the page.
        for c in site.incoming() {
            let Ok(tcp) = c else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let (site_tls, tx, page) = (site_tls.clone(), tx.clone(), page.clone());
            std::thread::spawn(move || {
                let mut c: Box<dyn ReadWrite> = match &site_tls {
                    None => Box::new(tcp),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        Box::new(rustls::StreamOwned::new(conn, tcp))
                    }
                };
                let mut buf = [0u8; 8192];
                let n = c.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    return;
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                let body = if let Some(q) = path.strip_prefix("/report?") {
                    let _ = tx.send(q.to_string());
                    String::new()
                } else {
                    page
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    let profile = root.path().with_extension("chromium-profile");
    let _browser = chromium_at(
        chromium,
        &format!("{scheme}://{site_addr}/"),
        &profile,
        &[format!("--ignore-certificate-errors-spki-list={pin}")],
    );
    // While the page watches: was cam1 watched as it is (a viewer, no rendition), and was a
    // rendition made?
    let (mut passthrough_seen, mut rendition_seen) = (false, false);
    let t = Instant::now();
    let report = loop {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(300)) {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the page did not report"
        );
        let h = bearer(&s.viewer);
        let r = http(&s.http, "GET", "/api/streams", &with(&h), b"");
        if let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&r.body) {
            let cam = list.iter().find(|e| e["id"] == "cam1");
            let rendition = list.iter().any(|e| e["id"] == "cam1-webrtc");
            rendition_seen |= rendition;
            passthrough_seen |= !rendition && cam.is_some_and(|c| c["viewers"].as_u64() > Some(0));
        }
    };
    let _ = std::fs::remove_dir_all(&profile);
    eprintln!("chromium report ({src:?}, https {https}): {report}");
    let kv: std::collections::HashMap<String, String> = report
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(kv.get("ok").map(String::as_str), Some("1"), "{report}");
    let num = |k: &str| kv[k].parse::<f64>().unwrap();
    let secs = f64::from(watch_ms) / 1000.0;
    // It played: at least half of the frames a 30 fps source sends in the watch.
    assert!(num("frames") >= secs * 15.0, "{report}");
    // Every frame received is decoded (B-frames passed through left most of them undecoded).
    assert!(num("frames") >= 0.9 * num("recv"), "{report}");
    assert_eq!((num("w"), num("h")), (640.0, 360.0), "the source's size");
    assert!(
        num("audio") >= 50.0 && num("samples") > 0.0,
        "AAC reaches Chromium as Opus: {report}"
    );
    if src == Src::SwitchSrt {
        // The switch (a new source, a rendition starting) may show as one pause; after it the
        // picture goes on.
        assert!(
            passthrough_seen,
            "the viewer joined before the switch, passed through"
        );
        assert!(
            num("last5s") >= 5.0 * 15.0,
            "decoding after the switch: {report}"
        );
    } else {
        assert_eq!(
            num("freezes_after_1s"),
            0.0,
            "no freeze after the first second: {report}"
        );
    }
    eprintln!(
        "chromium ({src:?}): time from POST to first decoded frame {} ms",
        kv["ttff_ms"]
    );
    let transcoded = matches!(src, Src::BFrames | Src::HevcSrt | Src::SwitchSrt);
    assert_eq!(
        rendition_seen, transcoded,
        "a rendition exactly when needed"
    );
    if transcoded {
        // The stream was served from its transcoded rendition, a slot of its own.
        let h = bearer(&s.viewer);
        let r = http(&s.http, "GET", "/api/streams", &with(&h), b"");
        assert!(r.body.contains("\"id\":\"cam1-webrtc\""), "{}", r.body);
        assert!(
            r.body.contains("\"rendition\":\"cam1-webrtc\""),
            "{}",
            r.body
        );
    }
}

/// A plain or TLS connection of the test site.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

#[test]
fn aiortc_viewers_decode_caps_hold_and_the_source_stopping_tears_them_down() {
    let Some(py) = aiortc_python() else {
        skip("aiortc is not installed (pip install aiortc)");
        return;
    };
    if !have("ffmpeg") {
        skip("no ffmpeg (apt install ffmpeg)");
        return;
    }
    let root = TempRoot::new("whep-aiortc");
    let s = serve(
        &root,
        "aiortc",
        "[whep]\nmax_viewers_per_stream = 8\n",
        false,
    );
    let pusher = push(&s.rtmp, "cam1", 40);
    wait_live(&s, "cam1");
    let url = format!("http://{}/whep/cam1", s.http);

    // Nine concurrent aiortc viewers against a cap of 8: eight decode video (640x360) and
    // audio, the ninth gets 503 with Retry-After.
    let rep = aiortc(&py, &url, 9, 4.0, &[]);
    let viewers = rep["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 9);
    let (ok, refused): (Vec<_>, Vec<_>) = viewers.iter().partition(|v| v["status"] == 201);
    assert_eq!((ok.len(), refused.len()), (8, 1), "{rep}");
    assert_eq!(refused[0]["status"], 503, "{rep}");
    assert!(refused[0]["retry_after"].is_string(), "{rep}");
    for v in ok {
        assert!(v["frames"].as_u64().unwrap() >= 10, "{v}");
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(640), Some(360))
        );
        assert!(v["audio_frames"].as_u64().unwrap() > 20, "{v}");
        assert_eq!(v["delete_status"], 200);
    }
    wait_for("viewers gone", Duration::from_secs(10), || {
        metric(&s, "framecache_whep_viewers") == 0.0
    });

    // Eight places held by bare offers: aiortc gets 503; a DELETE frees a place for it.
    let good = offer(true, true);
    let mut held = Vec::new();
    for _ in 0..8 {
        let r = post(&s, "cam1", &[], &good);
        assert_eq!(r.status, 201, "{}", r.body);
        held.push(r.header("location").unwrap().to_string());
    }
    let rep = aiortc(&py, &url, 1, 0.5, &[]);
    assert_eq!(rep["viewers"][0]["status"], 503, "{rep}");
    assert!(rep["viewers"][0]["retry_after"].is_string());
    assert_eq!(
        http(&s.http, "DELETE", &held.pop().unwrap(), &[], b"").status,
        200
    );
    let rep = aiortc(&py, &url, 1, 3.0, &[]);
    assert_eq!(rep["viewers"][0]["status"], 201, "{rep}");
    assert!(rep["viewers"][0]["frames"].as_u64().unwrap() > 0, "{rep}");
    for l in held {
        assert_eq!(http(&s.http, "DELETE", &l, &[], b"").status, 200);
    }

    // Viewers connected when the source stops are torn down; every counter returns to zero.
    let py2 = py.clone();
    let url2 = url.clone();
    let watchers = std::thread::spawn(move || aiortc(&py2, &url2, 3, 6.0, &["--no-delete"]));
    wait_for("3 viewers", Duration::from_secs(15), || {
        metric(&s, "framecache_whep_viewers") == 3.0
    });
    std::thread::sleep(Duration::from_secs(1));
    drop(pusher); // kills ffmpeg: the RTMP session ends, the slot closes
    wait_for("viewers torn down", Duration::from_secs(15), || {
        metric(&s, "framecache_whep_viewers") == 0.0
    });
    wait_for("peer connections closed", Duration::from_secs(15), || {
        metric(&s, "framecache_whep_peer_connections") == 0.0
            && metric(&s, "framecache_whep_tasks") == 0.0
            && metric(&s, "framecache_whep_feeds") == 0.0
    });
    let rep = watchers.join().unwrap();
    for v in rep["viewers"].as_array().unwrap() {
        assert!(v["frames"].as_u64().unwrap() > 0, "{v}");
    }
    // A new offer now finds the stream gone.
    assert_eq!(post(&s, "cam1", &[], &good).status, 404);
}

/// Per-stream viewer tokens: a key's `view_token` opens its stream (WHEP, RTMP play, the
/// stream list) and nothing else; the global token opens all; serve refuses keys that
/// nobody's token guards.
#[test]
fn a_streams_own_viewer_token_opens_that_stream_only() {
    if !have("ffmpeg") || !have("ffprobe") {
        skip("no ffmpeg/ffprobe (apt install ffmpeg)");
        return;
    }
    let root = TempRoot::new("whep-stream-tokens");
    let s = serve(
        &root,
        "stream-tokens",
        "[[keys]]\nkey = \"cam1\"\nview_token = \"c1-v13w\"\n\
         [[keys]]\nkey = \"cam2\"\n[whep]\ntoken = \"g10bal\"\n",
        false,
    );
    let _p1 = push(&s.rtmp, "cam1", 30);
    let _p2 = push(&s.rtmp, "cam2", 30);
    wait_live(&s, "cam1");
    wait_live(&s, "cam2");
    let ids = |token: &str| {
        let h = [("Authorization", format!("Bearer {token}"))];
        let r = http(&s.http, "GET", "/api/streams", &with(&h), b"");
        let mut ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect();
        ids.sort();
        (r.status, ids)
    };
    assert_eq!(ids("g10bal"), (200, vec!["cam1".into(), "cam2".into()]));
    assert_eq!(ids("c1-v13w"), (200, vec!["cam1".into()]));
    assert_eq!(ids("nope").0, 401);
    assert_eq!(http(&s.http, "GET", "/api/streams", &[], b"").status, 401);

    let good = offer(true, true);
    let own = [("Authorization", "Bearer c1-v13w")];
    let r = post(&s, "cam1", &own, &good);
    assert_eq!(r.status, 201, "{}", r.body);
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(post(&s, "cam2", &own, &good).status, 401);
    assert_eq!(post(&s, "cam1", &[], &good).status, 401);
    // The resource is the stream's: its token deletes it.
    assert_eq!(http(&s.http, "DELETE", &loc, &own, b"").status, 200);

    let plays = |path: &str| {
        Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", "5000000", "-show_entries"])
            .args(["stream=codec_type", "-of", "csv=p=0"])
            .arg(format!("rtmp://{}/live/{path}", s.rtmp))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(plays("cam1?token=c1-v13w"));
    assert!(!plays("cam2?token=c1-v13w"));
    assert!(plays("cam2?token=g10bal"));
    assert!(!plays("cam1"));
    drop(s);

    // Keys, no global token, and a key without its own: refused at start, naming the fix.
    let err = serve_refused(
        &root,
        "tok",
        "[[keys]]\nkey = \"cam1\"\nview_token = \"c1-v13w\"\n[[keys]]\nkey = \"cam2\"\n",
    );
    assert!(
        err.contains("view_token") && err.contains("guards cam2:"),
        "{err}"
    );
}

/// On a B-frame source (x264's defaults): aiortc viewers decode its rendition; 20 viewers
/// joining one after another each play from their first second (the rendition's GOP is cached
/// and its keyframes are 1 s apart); RTMP play of the rendition is as clean as of any slot.
#[test]
fn aiortc_on_a_b_frame_source_twenty_joins_and_rtmp_play_of_the_rendition() {
    let Some(py) = aiortc_python() else {
        skip("aiortc is not installed (pip install aiortc)");
        return;
    };
    if !have("ffmpeg") || !have("ffprobe") {
        skip("no ffmpeg/ffprobe (apt install ffmpeg)");
        return;
    }
    let root = TempRoot::new("whep-aiortc-bf");
    let s = serve(
        &root,
        "aiortc-bf",
        "[whep]\nmax_viewers_per_stream = 8\n",
        false,
    );
    let _pusher = push_with(&s.rtmp, "cam1", 120, &["-profile:v", "high", "-bf", "3"]);
    wait_live(&s, "cam1");
    let url = format!("http://{}/whep/cam1", s.http);

    let rep = aiortc(&py, &url, 2, 5.0, &[]);
    for v in rep["viewers"].as_array().unwrap() {
        assert_eq!(v["status"], 201, "{v}");
        assert!(v["frames"].as_u64().unwrap() >= 60, "{v}");
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(640), Some(360))
        );
        assert!(v["audio_frames"].as_u64().unwrap() > 20, "{v}");
    }

    // 20 joins, 2 s each: 30 frames or more means the picture started within the first second.
    let rep = aiortc(&py, &url, 20, 2.0, &["--sequential"]);
    let viewers = rep["viewers"].as_array().unwrap();
    assert_eq!(viewers.len(), 20);
    let mut firsts = Vec::new();
    for v in viewers {
        assert_eq!(v["status"], 201, "{v}");
        assert!(v["frames"].as_u64().unwrap() >= 30, "{v}");
        firsts.push(v["first_frame_s"].as_f64().unwrap());
    }
    firsts.sort_by(f64::total_cmp);
    eprintln!(
        "20 joins of a transcoded stream: first frame after {:.0} ms median, {:.0} ms worst",
        firsts[10] * 1000.0,
        firsts[19] * 1000.0
    );

    // The rendition is a slot like any other: listed, and played over RTMP cleanly.
    let h = bearer(&s.viewer);
    let r = http(&s.http, "GET", "/api/streams", &with(&h), b"");
    assert!(
        r.body.contains("\"rendition\":\"cam1-webrtc\""),
        "{}",
        r.body
    );
    common::check_rtmp_play(
        &format!("rtmp://{}/live/cam1-webrtc", s.rtmp),
        &root.path().join("rendition.mp4"),
    );
    let (v, a, w, h) = common::probe(&root.path().join("rendition.mp4"));
    assert_eq!((w, h), (640, 360));
    assert!(v >= 60 && a > 0, "{v} video, {a} audio packets");
    let m = http(&s.http, "GET", "/metrics", &[], b"");
    assert!(
        m.body
            .contains("framecache_stream_transcode_cpu_percent{stream=\"cam1\"}"),
        "{}",
        m.body
    );

    // The transcoder is supervised: killed while watched, it is started again into the same
    // rendition and the viewer keeps playing (without a restart it would get 2 s of frames).
    let (py2, url2) = (py.clone(), url.clone());
    let watcher = std::thread::spawn(move || aiortc(&py2, &url2, 1, 10.0, &[]));
    wait_for("a viewer", Duration::from_secs(15), || {
        metric(&s, "framecache_whep_viewers") == 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let ffmpeg = child_pids(s.pid())
        .into_iter()
        .find(|&p| cmdline(p).starts_with("ffmpeg") && cmdline(p).contains("-copyts"))
        .expect("the transcoder's ffmpeg");
    // SAFETY: kill(2) on a pid of our own child's child; no memory involved.
    assert_eq!(unsafe { libc::kill(ffmpeg as i32, libc::SIGKILL) }, 0);
    wait_for("a restart", Duration::from_secs(10), || {
        let r = http(&s.http, "GET", "/api/streams", &[], b"");
        r.body.contains("\"restarts\":1")
    });
    let rep = watcher.join().unwrap();
    let v = &rep["viewers"][0];
    assert_eq!(v["status"], 201, "{rep}");
    assert!(
        v["frames"].as_u64().unwrap() >= 150,
        "played on after the restart: {rep}"
    );
}

/// A source whose H.264 profile one viewer's offer takes and another's does not (High without
/// B-frames; aiortc offers only the baselines): the first is passed through, the second
/// watches the rendition under its own name, and both play.
#[test]
fn a_viewer_that_does_not_take_the_sources_profile_watches_the_rendition() {
    let Some(py) = aiortc_python() else {
        skip("aiortc is not installed (pip install aiortc)");
        return;
    };
    if !have("ffmpeg") {
        skip("no ffmpeg (apt install ffmpeg)");
        return;
    }
    let root = TempRoot::new("whep-profile");
    let s = serve(&root, "profile", "", false);
    // x264 signals the lowest profile its tools need: 8x8 transforms (veryfast) make it High.
    let high = ["-preset", "veryfast", "-profile:v", "high", "-bf", "0"];
    let _pusher = push_with(&s.rtmp, "cam1", 90, &high);
    wait_live(&s, "cam1");
    let h = bearer(&s.viewer);
    let streams = || {
        let r = http(&s.http, "GET", "/api/streams", &with(&h), b"");
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    let viewers_of = |list: &serde_json::Value, id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .and_then(|e| e["viewers"].as_u64())
    };

    // An offer with High: the source as it is, in its own profile; no rendition.
    let high_offer =
        offer(true, true).replace("profile-level-id=42e01f", "profile-level-id=64001f");
    let r = post(&s, "cam1", &with(&h), &high_offer);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.contains("profile-level-id=64001f"), "{}", r.body);
    let list = streams();
    assert_eq!(viewers_of(&list, "cam1"), Some(1), "{list}");
    assert_eq!(viewers_of(&list, "cam1-webrtc"), None, "{list}");

    // aiortc offers only 42001f and 42e01f: it gets the constrained-baseline rendition.
    let url = format!("http://{}/whep/cam1", s.http);
    let rep = aiortc(&py, &url, 1, 5.0, &["--no-delete"]);
    let v = &rep["viewers"][0];
    assert_eq!(v["status"], 201, "{v}");
    assert!(v["frames"].as_u64().unwrap() >= 60, "{v}");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(v["audio_frames"].as_u64().unwrap() > 20, "{v}");
    let list = streams();
    assert_eq!(viewers_of(&list, "cam1-webrtc"), Some(1), "{list}");
    let cam = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "cam1")
        .unwrap();
    assert_eq!(cam["transcoding"]["rendition"], "cam1-webrtc", "{list}");

    // The same baseline-only offer by hand: its answer is constrained baseline.
    let r = post(&s, "cam1", &with(&h), &offer(true, true));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.contains("profile-level-id=42e01f"), "{}", r.body);

    // Where transcoding is off, that offer gets 422 naming the profile and the fix; the
    // High offer still plays.
    let s2 = serve(&root, "profile-off", "transcode = false\n", false);
    let _pusher2 = push_with(&s2.rtmp, "cam2", 30, &high);
    wait_live(&s2, "cam2");
    let h2 = bearer(&s2.viewer);
    let r = post(&s2, "cam2", &with(&h2), &offer(true, true));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("High") && r.body.contains("-profile:v baseline"),
        "{}",
        r.body
    );
    let r = post(&s2, "cam2", &with(&h2), &high_offer);
    assert_eq!(r.status, 201, "{}", r.body);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_hundred_connect_disconnect_cycles_leave_nothing_behind() {
    let root = TempRoot::new("whep-cycles");
    let s = serve(&root, "cycles", "", true);
    wait_live(&s, "demo");
    let good = offer(true, true);
    // One cycle first, so lazily created runtime pieces exist before the baseline.
    let r = post(&s, "demo", &[], &good);
    assert_eq!(r.status, 201);
    http(&s.http, "DELETE", r.header("location").unwrap(), &[], b"");
    let settled = |s: &Serve| {
        metric(s, "framecache_whep_viewers") == 0.0
            && metric(s, "framecache_whep_peer_connections") == 0.0
            && metric(s, "framecache_whep_tasks") == 0.0
            && metric(s, "framecache_whep_feeds") == 0.0
    };
    wait_for("first cycle settled", Duration::from_secs(10), || {
        settled(&s)
    });
    std::thread::sleep(Duration::from_millis(500));
    let (fds0, threads0) = (fd_count(s.pid()), thread_count(s.pid()));

    let py = aiortc_python();
    for i in 0..100 {
        if i % 20 == 0 {
            if let Some(py) = &py {
                // Every 20th cycle is a real connection that decodes frames.
                let rep = aiortc(py, &format!("http://{}/whep/demo", s.http), 1, 1.0, &[]);
                assert_eq!(rep["viewers"][0]["status"], 201, "{rep}");
                assert!(rep["viewers"][0]["frames"].as_u64().unwrap() > 0, "{rep}");
                continue;
            }
        }
        let r = post(&s, "demo", &[], &good);
        assert_eq!(r.status, 201, "cycle {i}: {}", r.body);
        let d = http(&s.http, "DELETE", r.header("location").unwrap(), &[], b"");
        assert_eq!(d.status, 200);
    }
    wait_for("counters back to zero", Duration::from_secs(20), || {
        settled(&s)
    });
    assert!(metric(&s, "framecache_whep_offers_total") >= 100.0);
    // Sockets and threads return to the baseline (tokio may keep an idle blocking thread).
    wait_for(
        "descriptors back to the baseline",
        Duration::from_secs(20),
        || fd_count(s.pid()) <= fds0,
    );
    let threads = thread_count(s.pid());
    assert!(
        threads <= threads0 + 2,
        "threads {threads0} → {threads}: something leaked"
    );
}

#[test]
fn a_c_host_serves_whep_through_the_c_api_and_aiortc_watches() {
    use common::c::{compile, ASAN};
    let root = TempRoot::new("whep-c");
    let offer_file = root.path().join("offer.sdp");
    std::fs::write(&offer_file, offer(true, true)).unwrap();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let py = aiortc_python();
    if py.is_none() {
        eprintln!("aiortc is not installed: the C host is checked without a WebRTC viewer");
    }
    for (exe, asan) in [(compile("whep", &[]), false), (compile("whep", ASAN), true)] {
        let mut child = Reaper(
            Command::new(&exe)
                .arg(&assets)
                .arg(&offer_file)
                .env("FC_SHM_DIR", root.path())
                .env("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
                .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stdin = child.0.stdin.take().unwrap();
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap()).unwrap_or_default();
        let Some(addr) = first.strip_prefix("LISTEN ").map(str::to_string) else {
            let st = child.0.wait().unwrap();
            panic!("asan={asan}: the C host failed its checks ({st}): {first}");
        };
        let mut viewers = || -> u64 {
            writeln!(stdin, "stats").unwrap();
            let l = lines.next().unwrap().unwrap();
            l.strip_prefix("VIEWERS ").unwrap().parse().unwrap()
        };
        assert_eq!(viewers(), 0);
        if let Some(py) = &py {
            let url = format!("http://{addr}/whep/cam");
            // The listener shares the engine: same token, same cap of 2 per stream.
            let rep = aiortc(py, &url, 3, 3.0, &["--token", "s3cret", "--no-delete"]);
            let vs = rep["viewers"].as_array().unwrap();
            let ok: Vec<_> = vs.iter().filter(|v| v["status"] == 201).collect();
            assert_eq!(ok.len(), 2, "{rep}");
            assert!(vs.iter().any(|v| v["status"] == 503), "{rep}");
            for v in ok {
                assert!(v["frames"].as_u64().unwrap() > 0, "{v}");
                assert_eq!(v["width"], 640, "{v}");
            }
            // Closed without DELETE: the viewers go when their connections do.
            wait_for("viewers removed", Duration::from_secs(30), || {
                viewers() == 0
            });
            let rep = aiortc(py, &url, 1, 1.0, &[]);
            assert_eq!(rep["viewers"][0]["status"], 401, "{rep}");
        }
        drop(stdin);
        let st = child.0.wait().unwrap();
        assert!(st.success(), "asan={asan}: C host exited with {st}");
    }
}

/// When ingest needs keys, watching needs credentials: `serve` with keys and no viewer token
/// refuses to start and says what to set.
#[test]
fn serve_with_keys_but_no_viewer_token_refuses_to_start() {
    let root = TempRoot::new("whep-notoken");
    let err = serve_refused(&root, "notoken", "[[keys]]\nkey = \"cam1\"\n");
    assert!(
        err.contains("viewer token") && err.contains("[whep] token"),
        "{err}"
    );
}

/// The main job pulls an RTSP camera (GStreamer's RTSP server, Digest auth) named in its
/// configuration, with no code: aiortc watches it over WHEP with video and audio, RTMP play
/// serves it, and the camera's password shows nowhere in serve's output.
#[test]
fn serve_pulls_an_rtsp_camera_from_its_config_and_aiortc_watches_it() {
    let Some(py) = aiortc_python() else {
        skip("aiortc is not installed (pip install aiortc)");
        return;
    };
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("whep-rtsp");
    let (_cam, port) = common::rtsp_server(&[
        "--user",
        "admin",
        "--password",
        "c4m-s3cret",
        "--auth",
        "digest",
    ]);
    let s = serve(
        &root,
        "rtsp",
        &format!(
            "[[inputs]]\nslot = \"door\"\n\
             urls = [\"rtsp://admin:c4m-s3cret@127.0.0.1:{port}/cam\"]\n"
        ),
        false,
    );
    wait_live(&s, "door");
    let rep = aiortc(&py, &format!("http://{}/whep/door", s.http), 1, 4.0, &[]);
    let v = &rep["viewers"][0];
    assert_eq!(v["status"], 201, "{rep}");
    assert!(v["frames"].as_u64().unwrap() >= 30, "{v}");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(v["audio_frames"].as_u64().unwrap() > 20, "{v}");
    let mp4 = root.path().join("door.mp4");
    common::check_rtmp_play(&format!("rtmp://{}/live/door", s.rtmp), &mp4);
    let said = s.said.clone();
    drop(s);
    let said = said.lock().unwrap().clone();
    assert!(
        said.contains("pulling slot door from rtsp://admin:***@"),
        "{said}"
    );
    assert!(!said.contains("c4m-s3cret"), "{said}");
}

// ---------------------------------------------------------------------------------------------
// WHIP ingest
// ---------------------------------------------------------------------------------------------

/// POST a WHIP offer to `/whip/{key}`.
fn post_whip(s: &Serve, key: &str, auth: &[(&str, &str)], body: &str) -> Resp {
    let mut h = vec![SDP];
    h.extend_from_slice(auth);
    http(
        &s.http,
        "POST",
        &format!("/whip/{key}"),
        &h,
        body.as_bytes(),
    )
}

/// WHIP's HTTP answers with the key registry behind them: unknown key, credentials, one
/// publisher per key, codecs, trickle, DELETE freeing the key, CORS preflight.
#[test]
fn whip_error_matrix_keys_and_delete() {
    let root = TempRoot::new("whip-matrix");
    let s = serve(
        &root,
        "whip-matrix",
        "[whep]\ntoken = \"v13wer\"\n\n[[keys]]\nkey = \"cam9\"\npassphrase = \"pub-s3cret-99\"\n\n\
         [[keys]]\nkey = \"open1\"\n",
        false,
    );
    let good = [("Authorization", "Bearer pub-s3cret-99")];
    let pubo = offer_dir(true, true, "sendonly");

    let r = http(&s.http, "OPTIONS", "/whip/cam9", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("PATCH"));

    let r = post_whip(&s, "nokey", &[], &pubo);
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("unknown stream key"), "{}", r.body);
    let r = post_whip(&s, "cam9", &[], &pubo);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = post_whip(&s, "cam9", &[("Authorization", "Bearer wrong")], &pubo);
    assert_eq!(r.status, 401, "{}", r.body);
    // The viewer token is not a publisher's credential.
    let r = post_whip(&s, "cam9", &[("Authorization", "Bearer v13wer")], &pubo);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post_whip(&s, "cam9", &good, &offer_dir(false, true, "sendonly"));
    assert_eq!(r.status, 406, "{}", r.body);
    assert!(
        r.body.contains("VP8"),
        "the body names the codecs: {}",
        r.body
    );
    let r = http(
        &s.http,
        "POST",
        "/whip/cam9",
        &[("Content-Type", "text/plain"), good[0]],
        pubo.as_bytes(),
    );
    assert_eq!(r.status, 415);
    let r = post_whip(&s, "cam9", &good, "v=0\r\n");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(&s.http, "GET", "/whip/cam9", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST, OPTIONS")));

    // Admitted: 201 with the resource; the key is held (no candidates: the publisher never
    // connects, and stays until deleted or its connect timeout).
    let r = post_whip(&s, "cam9", &good, &pubo);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    assert!(
        r.body.contains("a=recvonly"),
        "a receive-only answer: {}",
        r.body
    );
    assert!(r.body.contains("H264"), "{}", r.body);
    let loc = r.header("location").unwrap().to_string();
    assert!(loc.starts_with("/whip/cam9/"), "{loc}");
    let etag = r.header("etag").unwrap().to_string();
    let r = post_whip(&s, "cam9", &good, &pubo);
    assert_eq!(r.status, 409, "one publisher per key: {}", r.body);
    assert!(r.body.contains("already being pushed"), "{}", r.body);
    // A key without a passphrase takes a publisher without a credential.
    let r = post_whip(&s, "open1", &[], &pubo);
    assert_eq!(r.status, 201, "{}", r.body);
    let open_loc = r.header("location").unwrap().to_string();

    // Trickle, with and without the right ETag; unknown resources.
    let frag = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let trickle = |path: &str, etag: &str| {
        http(
            &s.http,
            "PATCH",
            path,
            &[
                ("Content-Type", "application/trickle-ice-sdpfrag"),
                ("If-Match", etag),
            ],
            frag.as_bytes(),
        )
    };
    assert_eq!(trickle(&loc, &etag).status, 204);
    assert_eq!(trickle(&loc, "\"other\"").status, 412);
    assert_eq!(trickle("/whip/cam9/nope", "*").status, 404);
    assert_eq!(
        trickle(&open_loc.replace("open1", "cam9"), "*").status,
        404,
        "resource of another key"
    );

    // DELETE frees the key for the next publisher; a second DELETE is a no-op.
    assert_eq!(http(&s.http, "DELETE", &loc, &[], b"").status, 200);
    wait_for("cam9 free again", Duration::from_secs(10), || {
        let r = post_whip(&s, "cam9", &good, &pubo);
        if r.status == 201 {
            let l = r.header("location").unwrap().to_string();
            assert_eq!(http(&s.http, "DELETE", &l, &[], b"").status, 200);
        }
        r.status == 201
    });
    assert_eq!(http(&s.http, "DELETE", &loc, &[], b"").status, 204);
    assert_eq!(http(&s.http, "DELETE", &open_loc, &[], b"").status, 200);
    // Refusals never show the credential.
    let said = s.said.lock().unwrap().clone();
    assert!(!said.contains("pub-s3cret-99"), "{said}");
    assert!(said.contains("WHIP at /whip/KEY"), "{said}");
}

/// A test site on loopback: `pages` by path; `/report?…` queries come out of the receiver.
fn test_site(pages: Vec<(&'static str, String)>) -> (String, mpsc::Receiver<String>) {
    let site = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = site.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel::<String>();
    let pages = Arc::new(pages);
    std::thread::spawn(move || {
        for c in site.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let (tx, pages) = (tx.clone(), pages.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let n = c.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                let body = match path.strip_prefix("/report?") {
                    Some(q) => {
                        let _ = tx.send(q.to_string());
                        String::new()
                    }
                    None => pages
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (addr, rx)
}

/// Headless Chromium on `url`, with a fake camera and microphone, and `extra` flags.
fn chromium_at(chromium: &str, url: &str, profile: &Path, extra: &[String]) -> Reaper {
    Reaper(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
            ])
            .args(["--no-first-run", "--disable-background-networking"])
            .args(["--disable-component-update", "--disable-sync"])
            .args(["--autoplay-policy=no-user-gesture-required"])
            .args([
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium"),
    )
}

/// A report's `k=v&…` pairs.
fn report_kv(report: &str) -> std::collections::HashMap<String, String> {
    report
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The next report of `who` (`who=pub`/`who=watch`), waiting at most `secs`.
fn next_report(
    rx: &mpsc::Receiver<String>,
    secs: u64,
) -> std::collections::HashMap<String, String> {
    let r = rx
        .recv_timeout(Duration::from_secs(secs))
        .expect("the page reported");
    eprintln!("page report: {r}");
    report_kv(&r)
}

/// Chromium publishes its fake camera and microphone over WHIP into a key; another Chromium
/// watches the key over WHEP and decodes video and audio; `framecache export` of the slot is
/// read by ffprobe (H.264 + Opus) and decodes cleanly; DELETE ends the publish.
#[test]
fn chromium_publishes_over_whip_and_chromium_watches_over_whep() {
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| have(c))
    else {
        skip("no chromium installed (apt install chromium)");
        return;
    };
    if !have("ffprobe") {
        skip("no ffprobe (apt install ffmpeg)");
        return;
    }
    let root = TempRoot::new("whip-chromium");
    let s = serve(
        &root,
        "whip-chromium",
        "[whep]\ntoken = \"v13wer\"\n\n[[keys]]\nkey = \"cam9\"\npassphrase = \"pub-s3cret-99\"\n",
        false,
    );
    let publish_ms = 40_000;
    let publisher = format!(
        r#"<!doctype html><html><body><script>
(async () => {{
  const rep = (o) => fetch('/report?' + new URLSearchParams(Object.assign({{who: 'pub'}}, o)));
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));
  try {{
    const ms = await navigator.mediaDevices.getUserMedia({{
      video: {{ width: 640, height: 360, frameRate: 30 }}, audio: true }});
    const pc = new RTCPeerConnection();
    for (const t of ms.getTracks()) pc.addTransceiver(t, {{ direction: 'sendonly' }});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(r => {{
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      setTimeout(r, 2000);
    }});
    const res = await fetch('http://{h}/whip/cam9', {{ method: 'POST',
      headers: {{ 'Content-Type': 'application/sdp', Authorization: 'Bearer pub-s3cret-99' }},
      body: pc.localDescription.sdp }});
    const answer = await res.text();
    if (res.status !== 201) throw new Error('POST ' + res.status + ': ' + answer);
    const loc = new URL(res.headers.get('Location'), 'http://{h}/').href;
    await pc.setRemoteDescription({{ type: 'answer', sdp: answer }});
    for (let i = 0; i < 150 && pc.connectionState !== 'connected'; i++) await sleep(100);
    await rep({{ state: pc.connectionState }});
    await sleep({publish_ms});
    let frames = 0, audio = 0, codec = '', plis = 0;
    const st = await pc.getStats();
    st.forEach(s => {{
      if (s.type === 'outbound-rtp' && s.kind === 'video') {{
        frames = s.framesEncoded; plis = s.pliCount;
        const c = st.get(s.codecId); codec = c ? c.mimeType : '';
      }}
      if (s.type === 'outbound-rtp' && s.kind === 'audio') audio = s.packetsSent;
    }});
    const del = await fetch(loc, {{ method: 'DELETE' }});
    await rep({{ done: 1, frames, audio, codec, plis, deleted: del.status }});
    pc.close();
  }} catch (e) {{ await rep({{ error: String(e.message || e) }}); }}
}})();
</script></body></html>"#,
        h = s.http,
    );
    let watcher = format!(
        r#"<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<script src="http://{h}/whep.js"></script>
<script>
(async () => {{
  const rep = (o) => fetch('/report?' + new URLSearchParams(Object.assign({{who: 'watch'}}, o)));
  try {{
    const s = await FcWhep.play('http://{h}/whep/cam9', document.getElementById('v'), {{ token: 'v13wer' }});
    let first = null, at1 = null;
    const t = performance.now();
    while (performance.now() - t < 30000) {{
      const st = await s.stats();
      if (st.framesDecoded > 0 && first === null) first = performance.now();
      if (first !== null && at1 === null && performance.now() - first >= 1000) at1 = st;
      if (first !== null && performance.now() - first >= 10000) {{
        await rep({{ ok: 1, frames: st.framesDecoded, recv: st.framesReceived, w: st.width,
                     h: st.height, audio: st.audioPackets, samples: st.audioSamples,
                     freezes_after_1s: st.freezeCount - at1.freezeCount }});
        await s.stop();
        return;
      }}
      await new Promise(r => setTimeout(r, 100));
    }}
    const st = await s.stats();
    await rep({{ ok: 0, frames: st.framesDecoded, state: st.state }});
  }} catch (e) {{ await rep({{ error: String(e.message || e) }}); }}
}})();
</script></body></html>"#,
        h = s.http,
    );
    let (site, rx) = test_site(vec![("/pub", publisher), ("/watch", watcher)]);
    let pub_profile = root.path().with_extension("whip-pub-profile");
    let _pub = chromium_at(chromium, &format!("http://{site}/pub"), &pub_profile, &[]);
    let r = next_report(&rx, 60);
    assert_eq!(
        r.get("state").map(String::as_str),
        Some("connected"),
        "{r:?}"
    );
    wait_live(&s, "cam9");

    // The slot as a file: H.264 and Opus, decoded cleanly.
    let ts = root.path().join("whip.ts");
    let o = root
        .cli()
        .args(["export", "cam9"])
        .arg(&ts)
        .args(["--packets", "400", "--timeout-ms", "8000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let streams = common::ffprobe_streams(&ts);
    let video = streams.iter().find(|p| p.kind == "video").expect("video");
    let audio = streams.iter().find(|p| p.kind == "audio").expect("audio");
    assert_eq!(
        (video.codec.as_str(), video.width, video.height),
        ("h264", 640, 360)
    );
    assert_eq!((audio.codec.as_str(), audio.sample_rate), ("opus", 48000));
    assert!(video.packets >= 30 && audio.packets >= 50, "{streams:?}");
    let dec = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(&ts)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&dec.stderr);
    assert!(
        dec.status.success() && said.trim().is_empty(),
        "decoding said: {said}"
    );

    // Another browser watches the key over WHEP.
    let watch_profile = root.path().with_extension("whip-watch-profile");
    let _watch = chromium_at(
        chromium,
        &format!("http://{site}/watch"),
        &watch_profile,
        &[],
    );
    let w = next_report(&rx, 60);
    let num = |m: &std::collections::HashMap<String, String>, k: &str| {
        m.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(-1.0)
    };
    assert_eq!(w.get("ok").map(String::as_str), Some("1"), "{w:?}");
    assert!(
        num(&w, "frames") >= 150.0,
        "10 s at 30 fps, half at least: {w:?}"
    );
    assert!(num(&w, "frames") >= 0.9 * num(&w, "recv"), "{w:?}");
    assert_eq!((num(&w, "w"), num(&w, "h")), (640.0, 360.0), "{w:?}");
    assert!(
        num(&w, "audio") >= 100.0 && num(&w, "samples") > 0.0,
        "{w:?}"
    );
    assert_eq!(num(&w, "freezes_after_1s"), 0.0, "{w:?}");

    // The publisher ends with DELETE: the slot's writer leaves.
    let p = next_report(&rx, 60);
    assert_eq!(p.get("deleted").map(String::as_str), Some("200"), "{p:?}");
    assert!(p["codec"].contains("H264"), "{p:?}");
    assert!(
        num(&p, "plis") >= 1.0,
        "the server asks for keyframes: {p:?}"
    );
    wait_not_live(&s, "cam9");
    let _ = std::fs::remove_dir_all(&pub_profile);
    let _ = std::fs::remove_dir_all(&watch_profile);
}

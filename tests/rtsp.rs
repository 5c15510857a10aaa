//! RTSP pull against an RTSP server nobody here wrote: GStreamer's (Debian's gst-rtsp-server,
//! driven by `tests/peers/rtsp_server.py`), serving H.264+AAC and H.265, with and without
//! Basic/Digest auth, killed and restarted; and hostile bytes from a fake camera. The result
//! is checked as for the other inputs: `framecache export` of the slot, read by ffprobe and
//! decoded by ffmpeg.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Reaper, TempRoot};
use framecache::ingest::rtsp;
use framecache::packet::*;
use framecache::Error;

/// `framecache ingest --slot SLOT URL`, its stderr in `log`.
fn ingest(root: &TempRoot, slot: &str, url: &str, log: &Path) -> Reaper {
    ingest_with(root, slot, url, log, &[])
}

/// As [`ingest`], with environment variables.
fn ingest_with(
    root: &TempRoot,
    slot: &str,
    url: &str,
    log: &Path,
    env: &[(&str, &Path)],
) -> Reaper {
    let mut c = root.cli();
    c.args(["ingest", "--slot", slot, url])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    Reaper(c.spawn().unwrap())
}

/// Exports `packets` packets of `slot` to `out`, waiting up to 20 s for the slot to appear.
fn export(root: &TempRoot, slot: &str, packets: u32, out: &Path) {
    let t = Instant::now();
    loop {
        let o = root
            .cli()
            .args(["export", slot])
            .arg(out)
            .args(["--packets", &packets.to_string(), "--timeout-ms", "8000"])
            .output()
            .unwrap();
        if o.status.success() {
            return;
        }
        let said = String::from_utf8_lossy(&o.stderr);
        assert!(t.elapsed() < Duration::from_secs(20), "export: {said}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ffmpeg decodes every packet of `file` without a warning or an error.
fn decodes_cleanly(file: &Path) {
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "warning", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && said.trim().is_empty(),
        "decoding said: {said}"
    );
}

/// Pulls `url` into a slot, exports 240 packets and checks codecs, size, rate and decoding.
fn pull_and_check(root: &TempRoot, slot: &str, url: &str, video: &str, audio: Option<&str>) {
    pull_and_check_with(root, slot, url, video, audio, &[])
}

/// As [`pull_and_check`], with environment variables for the ingest.
fn pull_and_check_with(
    root: &TempRoot,
    slot: &str,
    url: &str,
    video: &str,
    audio: Option<&str>,
    env: &[(&str, &Path)],
) {
    let log = root.path().join(format!("{slot}.log"));
    let _ing = ingest_with(root, slot, url, &log, env);
    let ts = root.path().join(format!("{slot}.ts"));
    export(root, slot, 240, &ts);
    let s = common::ffprobe_streams(&ts);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        s.len(),
        1 + audio.is_some() as usize,
        "{s:?}; ingest said: {said}"
    );
    assert_eq!(
        (s[0].codec.as_str(), s[0].width, s[0].height),
        (video, 640, 360),
        "{s:?}"
    );
    if let Some(a) = audio {
        assert_eq!((s[1].codec.as_str(), s[1].sample_rate), (a, 48000), "{s:?}");
        // 30 video frames and ~47 AAC frames a second: both streams are there, in proportion.
        assert!(s[0].packets >= 60 && s[1].packets >= 60, "{s:?}");
    } else {
        assert_eq!(s[0].packets, 240, "{s:?}");
    }
    decodes_cleanly(&ts);
}

#[test]
fn rtsp_pull_of_h264_and_aac_over_tcp_and_udp() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsp-h264");
    let (_srv, port) = common::rtsp_server(&["--video", "h264", "--audio", "aac"]);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    pull_and_check(&root, "camtcp", &url, "h264", Some("aac"));
    pull_and_check(
        &root,
        "camudp",
        &format!("{url}?transport=udp"),
        "h264",
        Some("aac"),
    );
}

#[test]
fn rtsp_pull_of_h265() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsp-h265");
    let (_srv, port) = common::rtsp_server(&["--video", "h265", "--audio", "none"]);
    pull_and_check(
        &root,
        "cam265",
        &format!("rtsp://127.0.0.1:{port}/cam"),
        "hevc",
        None,
    );
}

/// RTSPS (RTSP over TLS) with Digest auth: the camera's certificate is checked (here against
/// the test's CA through $SSL_CERT_FILE); without that trust the pull is refused with the
/// TLS reason and no slot is made.
#[test]
fn rtsps_pull_checks_the_certificate() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsps");
    let (ca, cert, key, _) = common::test_ca(root.path());
    let (_srv, port) = common::rtsp_server(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--user",
        "viewer",
        "--password",
        "tls-s3cret",
    ]);
    let url = format!("rtsps://viewer:tls-s3cret@127.0.0.1:{port}/cam");
    pull_and_check_with(
        &root,
        "camtls",
        &url,
        "h264",
        Some("aac"),
        &[("SSL_CERT_FILE", &ca)],
    );

    let log = root.path().join("untrusted.log");
    let ing = ingest_with(&root, "untrusted", &url, &log, &[]);
    wait_for("the TLS refusal", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("UnknownIssuer")
    });
    drop(ing);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("TLS") && !said.contains("tls-s3cret"),
        "{said}"
    );
    assert!(!root.path().join("untrusted").exists());
}

/// Right credentials play; wrong ones are refused with a clear error, retried with backoff,
/// and no password reaches the log.
#[test]
fn rtsp_digest_and_basic_auth() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsp-auth");
    for auth in ["digest", "basic"] {
        let (_srv, port) = common::rtsp_server(&[
            "--audio",
            "none",
            "--user",
            "viewer",
            "--password",
            "s3cr%t",
            "--auth",
            auth,
        ]);
        // The right password, percent-encoded in the URL as a user would.
        let good = format!("rtsp://viewer:s3cr%25t@127.0.0.1:{port}/cam");
        pull_and_check(&root, &format!("ok{auth}"), &good, "h264", None);

        let log = root.path().join(format!("bad{auth}.log"));
        let bad = format!("rtsp://viewer:wr0ngpass@127.0.0.1:{port}/cam");
        let ing = ingest(&root, &format!("bad{auth}"), &bad, &log);
        let count = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("refused the credentials")
                .count()
        };
        wait_for("a refusal", Duration::from_secs(20), || count(&log) >= 1);
        let t1 = Instant::now();
        wait_for("five refusals", Duration::from_secs(20), || {
            count(&log) >= 5
        });
        // The retries back off (250 ms, doubling: 3.75 s from the first to the fifth), not a
        // tight loop against the camera.
        assert!(
            t1.elapsed() >= Duration::from_millis(2500),
            "{:?}: {}",
            t1.elapsed(),
            std::fs::read_to_string(&log).unwrap()
        );
        drop(ing);
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(said.contains("401"), "{said}");
        for secret in ["wr0ngpass", "s3cr"] {
            assert!(!said.contains(secret), "the log shows a password: {said}");
        }
        assert!(
            !root.path().join(format!("bad{auth}")).exists(),
            "a refused input creates no slot"
        );
    }
}

/// The camera goes away and comes back on the same port: the slot stays (readers are not
/// re-attached) and the first packet after the gap is flagged as a discontinuity.
#[test]
fn rtsp_server_killed_and_restarted() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsp-restart");
    let (srv, port) = common::rtsp_server(&["--audio", "aac"]);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let log = root.path().join("ing.log");
    let _ing = ingest(&root, "cam", &url, &log);
    let mut r = loop {
        match PacketReader::open_in(
            root.path(),
            "cam",
            PacketReaderConfig {
                start: PacketStart::Next,
            },
        ) {
            Ok(r) => break r,
            Err(Error::NotFound(_)) | Err(Error::NoPacketRing(_)) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("open: {e}"),
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut before = 0;
    while before < 60 {
        let i = r
            .next_copy(&mut buf, Duration::from_secs(10))
            .expect("packets");
        assert_eq!(i.flags & FC_PACKET_DISCONTINUITY, 0, "no gap yet: {i:?}");
        before += 1;
    }
    drop(srv); // killed
    std::thread::sleep(Duration::from_millis(1500));
    let (_srv2, port2) = common::rtsp_server(&["--audio", "aac", "--port", &port.to_string()]);
    assert_eq!(port2, port);
    // Skip what was still in the ring from before the kill; the first packet of the new session
    // carries the flag.
    let mut flagged = false;
    let t = Instant::now();
    while !flagged && t.elapsed() < Duration::from_secs(30) {
        let i = r
            .next_copy(&mut buf, Duration::from_secs(20))
            .expect("packets after restart");
        flagged = i.flags & FC_PACKET_DISCONTINUITY != 0;
    }
    assert!(flagged, "no discontinuity after the restart");
    let mut after = 0;
    while after < 60 {
        r.next_copy(&mut buf, Duration::from_secs(10))
            .expect("packets after restart");
        after += 1;
    }
    assert_eq!(r.stats().reattached, 0, "the slot stayed the same");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.matches("connected rtsp://").count() >= 2, "{said}");
}

/// Opus audio from a camera (GStreamer's `rtpopuspay`) is taken with its `OpusHead`: the
/// export carries H.264 and Opus that ffmpeg decodes without a message.
#[test]
fn rtsp_pull_of_h264_and_opus() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsp-opus");
    let (_srv, port) = common::rtsp_server(&["--audio", "opus"]);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    pull_and_check(&root, "camopus", &url, "h264", Some("opus"));
}

/// A stream framecache cannot take beside one it can (G.711 µ-law audio) is left out with a
/// log line naming it; the video goes on alone.
#[test]
fn rtsp_streams_framecache_cannot_take() {
    if !common::gst_rtsp_available() {
        return;
    }
    let root = TempRoot::new("rtsp-codecs");
    let (_srv, port) = common::rtsp_server(&["--audio", "pcmu"]);
    let log = root.path().join("pcmu.log");
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let _ing = ingest(&root, "campcmu", &url, &log);
    let ts = root.path().join("pcmu.ts");
    export(&root, "campcmu", 90, &ts);
    let s = common::ffprobe_streams(&ts);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].codec, "h264");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.to_lowercase().contains("audio/pcmu"), "{said}");
}

/// Hostile bytes from a "camera": a mangled SDP, interleaved RTP with impossible NAL units
/// and lengths. The ingest reports an error and retries; nothing crashes and no slot is made
/// from garbage.
#[test]
fn hostile_rtsp_servers_give_errors_not_crashes() {
    let root = TempRoot::new("rtsp-hostile");
    let (sdp_ok, good_media) = rtsp::sample_session();
    let sdp_bad = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/0\r\n\
        a=fmtp:96 sprop-parameter-sets=!!!!,????\r\n"
        .to_vec();
    // Interleaved frames: FU-A fragments that never end, a STAP-A whose inner length runs past
    // the packet, an interleaved frame longer than what follows, then noise.
    let rtp = |seq: u16, ts: u32, marker: bool, payload: &[u8]| {
        let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1000_0000u32.to_be_bytes());
        p.extend_from_slice(payload);
        let mut f = vec![b'$', 0];
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        f.extend_from_slice(&p);
        f
    };
    let mut media = good_media[..good_media.len() / 2].to_vec();
    media.extend(rtp(20, 9000, false, &[0x7C, 0x85, 1, 2, 3]));
    media.extend(rtp(21, 9000, true, &[0x7C, 0x05, 4]));
    media.extend(rtp(22, 12000, true, &[0x78, 0xFF, 0xFF, 0x67]));
    media.extend(rtp(23, 15000, true, &[0x00]));
    media.extend([b'$', 0, 0xFF, 0xFF, 1, 2, 3]);
    media.extend((0..4000u32).map(|i| (i * 7919 % 251) as u8));
    for (i, sdp) in [sdp_bad, sdp_ok].into_iter().enumerate() {
        let (srv, port) = rtsp::fake_camera(sdp, media.clone(), 3, Duration::from_secs(6)).unwrap();
        let log = root.path().join(format!("h{i}.log"));
        let slot = format!("hostile{i}");
        let mut ing = ingest(&root, &slot, &format!("rtsp://127.0.0.1:{port}/cam"), &log);
        wait_for("an error line", Duration::from_secs(30), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!("ingest {slot}: rtsp://"))
        });
        // Still running (retrying), not crashed.
        assert!(ing.0.try_wait().unwrap().is_none(), "the ingest died");
        drop(ing);
        let _ = srv.join();
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(!said.contains("panicked"), "{said}");
    }
}

/// The public probe against the camera: codecs, size and audio rate; wrong credentials are
/// the camera's refusal, not a timeout.
#[test]
fn probe_of_an_rtsp_camera() {
    if !common::gst_rtsp_available() {
        return;
    }
    let (_srv, port) = common::rtsp_server(&[
        "--audio",
        "aac",
        "--user",
        "u",
        "--password",
        "pw-right",
        "--auth",
        "digest",
    ]);
    let e = framecache::ingest::Engine::new().unwrap();
    let good = format!("rtsp://u:pw-right@127.0.0.1:{port}/cam");
    let r = e.probe(&good, Duration::from_secs(10)).unwrap();
    assert_eq!(r.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert_eq!(
        (r.width, r.height, r.sample_rate, r.channels),
        (640, 360, 48000, 2)
    );
    assert!(r.first_media < Duration::from_secs(10));
    let bad = format!("rtsp://u:nope@127.0.0.1:{port}/cam");
    let err = e.probe(&bad, Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, Error::Rejected(_)), "{err}");
    assert!(!err.to_string().contains("nope"), "{err}");
}

//! The ingest engine against real peers: ffmpeg pushing RTMP and SRT, ffmpeg as UDP and HLS
//! source, ffmpeg pulling RTMP play, nginx-rtmp as an RTMP server to pull from, and hostile
//! bytes on the listener ports.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{skip, wait_for, Reaper, TempRoot};
use framecache::ingest::{
    Engine, IngestEvent, InputTimeouts, InputUrl, KeyConfig, Mounts, PullConfig, PullIngest,
    Streams,
};
use framecache::packet::*;
use framecache::Error;

fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .stdin(Stdio::null());
    c
}

/// A `secs`-second 640x360 30 fps H.264 (GOP 30, no B-frames) + AAC file.
fn source(dir: &Path, name: &str, secs: u32) -> PathBuf {
    encode(dir, name, secs, &["-tune", "zerolatency", "-bf", "0"])
}

/// A `secs`-second 640x360 30 fps H.264 (GOP 30) + AAC file, with `extra` encoder and muxer
/// options.
fn encode(dir: &Path, name: &str, secs: u32, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let st = ffmpeg()
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("sine=frequency=440:sample_rate=44100")
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-y"])
        .args(extra)
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success());
    out
}

/// ffmpeg plays `url` (RTMP or RTMPS) and remuxes it into `mp4`.
fn play_rtmp(url: &str, mp4: &Path) -> std::process::Output {
    ffmpeg()
        .args(["-i", url, "-c", "copy", "-y"])
        .arg(mp4)
        .output()
        .unwrap()
}

/// Asserts that ffmpeg's RTMP play of the 640x360 source (`src_v` video packets) wrote `mp4`
/// with video and audio.
fn assert_played(play: &std::process::Output, mp4: &Path, src_v: u64) {
    assert!(
        play.status.success() || mp4.exists(),
        "play failed: {}",
        String::from_utf8_lossy(&play.stderr)
    );
    let (v, a, w, h) = common::probe(mp4);
    assert_eq!((w, h), (640, 360));
    // Play joined at a keyframe after the start: some of the stream, not all of it.
    assert!(v >= 30 && v <= src_v, "played {v} video packets of {src_v}");
    assert!(a > 0);
}

/// Asserts that a finished child exited 0, showing its stderr if not.
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn engine(root: &TempRoot) -> Engine {
    let mut e = Engine::new().unwrap();
    e.set_root(root.path().to_path_buf());
    e
}

/// What a reader saw in a slot, from its first packet until the writer left.
#[derive(Debug, Default)]
struct Seen {
    video: u64,
    audio: u64,
    first_is_keyframe: bool,
    keyframes_without_sps: u64,
    discontinuities: u64,
    backwards_dts: u64,
    codecs: Vec<u32>,
    width: u32,
    aac_params: bool,
}

/// Reads slot `id` (waiting for it to appear) from its oldest keyframe until the writer is
/// gone or nothing came for `idle`.
fn read_slot(root: &Path, id: &str, idle: Duration) -> Seen {
    let mut r = loop {
        match PacketReader::open_in(
            root,
            id,
            PacketReaderConfig {
                start: PacketStart::OldestKeyframe,
            },
        ) {
            Ok(r) => break r,
            Err(Error::NotFound(_)) | Err(Error::NoPacketRing(_)) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("open {id}: {e}"),
        }
    };
    let streams = r.streams();
    let mut s = Seen {
        codecs: streams.iter().map(|s| s.codec).collect(),
        width: streams.first().map_or(0, |s| s.width),
        ..Seen::default()
    };
    let mut last_dts = vec![i64::MIN; streams.len()];
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let info = match r.next_vec(&mut buf, idle) {
            Ok(i) => i,
            Err(Error::WriterGone) | Err(Error::Timeout) => break,
            Err(e) => panic!("read {id}: {e}"),
        };
        let st = &streams[info.stream as usize];
        let data = &buf[..info.size as usize];
        if st.codec == FC_CODEC_H264 {
            if first {
                s.first_is_keyframe = info.flags & FC_PACKET_KEYFRAME != 0;
            }
            s.video += 1;
            let has_sps = framecache::ts::nal_units(data)
                .iter()
                .any(|n| !n.is_empty() && n[0] & 0x1F == 7);
            if info.flags & FC_PACKET_KEYFRAME != 0 && !has_sps {
                s.keyframes_without_sps += 1;
            }
        } else {
            s.audio += 1;
            if st.codec == FC_CODEC_AAC && r.codec_params(info.stream, 0).is_ok() {
                s.aac_params = true;
            }
        }
        first = false;
        if info.flags & FC_PACKET_DISCONTINUITY != 0 {
            s.discontinuities += 1;
        }
        let ld = &mut last_dts[info.stream as usize];
        if info.dts < *ld {
            s.backwards_dts += 1;
        }
        *ld = info.dts;
    }
    s
}

/// Pushes `file` to `url` over RTMP as fast as ffmpeg goes; it must succeed.
fn publish_file(file: &Path, url: &str) {
    let out = ffmpeg()
        .arg("-i")
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .output()
        .unwrap();
    assert_success(&out);
}

fn push_rtmp(file: &Path, url: &str) -> Child {
    ffmpeg()
        .args(["-re", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs")
}

#[test]
fn rtmp_push_from_ffmpeg_fills_the_slot_one_pusher_per_key_and_play_serves_it() {
    let root = TempRoot::new("ing-rtmp");
    let src = source(root.path(), "src.flv", 4);
    let (src_v, src_a, _, _) = common::probe(&src);
    let mut e = engine(&root);
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("cam1slot", &["publish://cam1"]).unwrap();
    let url = format!("rtmp://{addr}/live/cam1");

    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "cam1slot", Duration::from_secs(5)));
    let mut first = push_rtmp(&src, &url);
    wait_for("the publisher", Duration::from_secs(10), || {
        e.registry().holder("cam1").is_some()
    });
    // A second pusher on the same key is refused while the first is live.
    let second = ffmpeg()
        .args(["-re", "-i"])
        .arg(&src)
        .args(["-t", "1", "-c", "copy", "-f", "flv", &url])
        .output()
        .unwrap();
    assert!(!second.status.success(), "second pusher was accepted");
    // An unknown key is refused too.
    let unknown = ffmpeg()
        .args(["-i"])
        .arg(&src)
        .args(["-t", "1", "-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{addr}/live/nokey"))
        .output()
        .unwrap();
    assert!(!unknown.status.success(), "unknown key was accepted");

    // RTMP play of the same stream while it is pushed: ffmpeg remuxes it to MP4.
    let mp4 = root.path().join("play.mp4");
    let play = play_rtmp(&url, &mp4);
    assert!(first.wait().unwrap().success());
    let seen = reader.join().unwrap();
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert_eq!(seen.width, 640);
    // A reader starts at the first keyframe: audio published before it is not delivered.
    assert_eq!(seen.video, src_v, "{seen:?}");
    assert!(seen.audio <= src_a && seen.audio + 2 >= src_a, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");
    assert_eq!(seen.keyframes_without_sps, 0, "keyframes carry SPS/PPS");
    assert_eq!(seen.backwards_dts, 0);
    let st = e.stats("cam1").unwrap();
    assert_eq!(st.packets, src_v + src_a);
    assert!(!st.connected);

    assert_played(&play, &mp4, src_v);

    // The key is free again once the first pusher left.
    let again = ffmpeg()
        .args(["-i"])
        .arg(&src)
        .args(["-t", "1", "-c", "copy", "-f", "flv", &url])
        .output()
        .unwrap();
    assert_success(&again);
}

/// RTMP play shows exactly the slot's streams (no script data turned into subtitle or data
/// streams) with timestamps that rise from the start: ffprobe lists video and audio only, a
/// `-c copy` recording to MP4 raises no warning, and ffmpeg reads the MP4 back without one.
/// The source is what x264's defaults send (High profile, B-frames) with AAC.
#[test]
fn rtmp_play_shows_exactly_the_slot_streams_with_rising_timestamps() {
    let root = TempRoot::new("ing-play");
    let src = encode(
        root.path(),
        "bframes.flv",
        8,
        &["-profile:v", "high", "-bf", "3"],
    );
    let mut e = engine(&root);
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("bslot", &["publish://bkey"]).unwrap();
    let url = format!("rtmp://{addr}/live/bkey");
    let mut pusher = push_rtmp(&src, &url);
    wait_for("the publisher", Duration::from_secs(10), || {
        e.registry().holder("bkey").is_some()
    });
    std::thread::sleep(Duration::from_millis(1500)); // a keyframe in the slot

    let mp4 = root.path().join("bplay.mp4");
    common::check_rtmp_play(&url, &mp4);
    let (v, a, w, h) = common::probe(&mp4);
    assert_eq!((w, h), (640, 360));
    assert!(v >= 60 && a > 0, "{v} video, {a} audio packets");
    let _ = pusher.kill();
    let _ = pusher.wait();
}

/// RTMP play with a viewer token and caps: no token and a wrong token are refused with
/// `NetStream.Play.Failed` (ffprobe fails), the right one (global or the slot's own) plays; a second play of a stream capped
/// at one is refused while the first runs, and allowed once it left.
#[test]
fn rtmp_play_needs_the_viewer_token_and_respects_its_caps() {
    let root = TempRoot::new("ing-playauth");
    let src = source(root.path(), "src.flv", 10);
    let mut e = engine(&root);
    e.set_play_access(
        true,
        framecache::ingest::rtmp::PlayAccess {
            token: Some("v1ewer".into()),
            max_per_stream: 1,
            max_total: 0,
        },
    );
    e.set_play_token("aslot", Some("0wn3r"));
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("aslot", &["publish://akey"]).unwrap();
    let mut pusher = push_rtmp(&src, &format!("rtmp://{addr}/live/akey"));
    wait_for("the publisher", Duration::from_secs(10), || {
        e.registry().holder("akey").is_some()
    });
    std::thread::sleep(Duration::from_millis(1200));
    let probe_streams = |url: &str| {
        let o = Command::new("ffprobe")
            .args(["-v", "error", "-rw_timeout", "5000000", "-show_entries"])
            .args(["stream=codec_type", "-of", "csv=p=0", url])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    for bad in ["", "?token=nope", "?tok=v1ewer"] {
        let (ok, out) = probe_streams(&format!("rtmp://{addr}/live/akey{bad}"));
        assert!(!ok, "play {bad:?} was allowed: {out}");
    }
    // The global token and the slot's own token both open it.
    let own = format!("rtmp://{addr}/live/akey?token=0wn3r");
    let (ok, out) = probe_streams(&own);
    assert!(ok && out.contains("video"), "{out}");
    let good = format!("rtmp://{addr}/live/akey?token=v1ewer");
    let (ok, out) = probe_streams(&good);
    assert!(
        ok && out.contains("video") && out.contains("audio"),
        "{out}"
    );

    // One play at a time on this stream: a second one waits its turn.
    let mut first = ffmpeg()
        .args(["-i", &good, "-t", "4", "-c", "copy", "-f", "null", "-"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, _) = probe_streams(&good);
    assert!(!ok, "a second play beyond the cap was allowed");
    assert!(first.wait().unwrap().success());
    // The place is freed once the first play's connection is gone (its play thread sees the
    // closed channel within half a second; longer on a loaded machine).
    let t = std::time::Instant::now();
    loop {
        if probe_streams(&good).0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the freed place was not given again"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = pusher.kill();
    let _ = pusher.wait();
}

/// The same publish with each publisher read as its data arrives (read interval zero: the
/// pump waits in epoll): every packet reaches the slot, keyframes carry their parameter sets,
/// and the publisher's hang-up is seen.
#[test]
fn rtmp_push_read_as_data_arrives() {
    let root = TempRoot::new("ing-rtmp0");
    let src = source(root.path(), "src.flv", 2);
    let (src_v, src_a, _, _) = common::probe(&src);
    let mut e = engine(&root);
    e.set_rtmp_read_interval(Duration::ZERO);
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("direct", &["publish://k0"]).unwrap();
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "direct", Duration::from_secs(5)));
    let mut p = push_rtmp(&src, &format!("rtmp://{addr}/live/k0"));
    assert!(p.wait().unwrap().success());
    let seen = reader.join().unwrap();
    assert_eq!(seen.video, src_v, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");
    assert_eq!(seen.keyframes_without_sps, 0);
    wait_for("the disconnect", Duration::from_secs(5), || {
        !e.stats("k0").unwrap().connected
    });
    assert_eq!(e.stats("k0").unwrap().packets, src_v + src_a);
}

/// A publisher that goes silent after its publish was accepted is dropped by the idle
/// timeout (20 s), also while the pump reads on arrival (publishers that send few messages),
/// where only its sweep each second looks at a socket that never becomes readable.
#[test]
fn rtmp_silent_publisher_is_dropped() {
    let root = TempRoot::new("ing-rtmp-idle");
    let mut e = engine(&root);
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("quiet", &["publish://kq"]).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (_sess, _) = common::rml_publisher::publish(&mut s, "kq", None);
    wait_for("the publish", Duration::from_secs(5), || {
        e.stats("kq").unwrap().connected
    });
    wait_for("the idle timeout", Duration::from_secs(40), || {
        !e.stats("kq").unwrap().connected
    });
    // The server closed the socket.
    let mut b = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        match std::io::Read::read(&mut s, &mut b) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                break;
            }
        }
    }
}

/// RTMPS: ffmpeg publishes over TLS and plays back over TLS; a plain RTMP client on the TLS
/// port is turned away without harm; bad identities are refused up front with the reason.
#[test]
fn rtmps_push_and_play_over_tls() {
    let root = TempRoot::new("ing-rtmps");
    let src = source(root.path(), "src.flv", 3);
    let (src_v, src_a, _, _) = common::probe(&src);
    let pem = |name: &str, text: String| {
        let p = root.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let id = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = pem("cert.pem", id.cert.pem());
    let key = pem("key.pem", id.signing_key.serialize_pem());
    let other_key = pem(
        "other.pem",
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    );

    let mut e = engine(&root);
    let no_identity = e.listen_rtmps("127.0.0.1:0".parse().unwrap()).unwrap_err();
    assert!(matches!(no_identity, Error::InvalidArg(_)), "{no_identity}");
    for (c, k, why) in [
        (&cert, &other_key, "does not fit"),
        (&key, &key, "no certificate"),
        (&root.path().join("missing.pem"), &key, "missing.pem"),
    ] {
        let err = e.set_tls_identity(c, k).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArg(_)) && err.to_string().contains(why),
            "{err}"
        );
    }
    e.set_tls_identity(&cert, &key).unwrap();
    let addr = e.listen_rtmps("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("secure", &["publish://sec"]).unwrap();

    // Plain RTMP on the TLS port: refused, and the listener goes on.
    let plain = ffmpeg()
        .arg("-i")
        .arg(&src)
        .args(["-t", "1", "-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{addr}/live/sec"))
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plain RTMP was accepted on the RTMPS port"
    );

    let url = format!("rtmps://{addr}/live/sec");
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "secure", Duration::from_secs(5)));
    let pusher = push_rtmp(&src, &url);
    wait_for("the publisher", Duration::from_secs(10), || {
        e.registry().holder("sec").is_some()
    });
    let mp4 = root.path().join("play.mp4");
    let play = play_rtmp(&url, &mp4);
    assert_success(&pusher.wait_with_output().unwrap());
    let seen = reader.join().unwrap();
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert_eq!(seen.video, src_v, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");
    wait_for("the disconnect", Duration::from_secs(5), || {
        !e.stats("sec").unwrap().connected
    });
    assert_eq!(e.stats("sec").unwrap().packets, src_v + src_a);
    assert_played(&play, &mp4, src_v);
}

/// An RTMPS pull (`rtmps://HOST/APP/KEY` as an input) from an RTMPS server (this engine's,
/// with a certificate of the test's CA): trusted through $SSL_CERT_FILE it relays the stream;
/// untrusted it is refused with the TLS reason.
#[test]
fn rtmps_pull_checks_the_certificate() {
    let root = TempRoot::new("ing-rtmps-pull");
    let src = source(root.path(), "src.flv", 8);
    let (ca, cert, key, _) = common::test_ca(root.path());
    let mut e = engine(&root);
    e.set_tls_identity(&cert, &key).unwrap();
    let addr = e.listen_rtmps("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("origin", &["publish://cam"]).unwrap();
    let _pusher = Reaper(push_rtmp(&src, &format!("rtmps://{addr}/live/cam")));
    wait_for("the publisher", Duration::from_secs(10), || {
        e.registry().holder("cam").is_some()
    });
    let url = format!("rtmps://{addr}/live/origin");
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "relay", Duration::from_secs(3)));
    let pull = Reaper(
        root.cli()
            .args(["ingest", &url, "--slot", "relay", "--seconds", "4"])
            .env("SSL_CERT_FILE", &ca)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let seen = reader.join().unwrap();
    drop(pull);
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert!(seen.video >= 60, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");

    let out = root
        .cli()
        .args(["ingest", &url, "--slot", "untrusted", "--seconds", "2"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("TLS") && said.contains("UnknownIssuer"),
        "{said}"
    );
}

fn srt_available() -> bool {
    if framecache::ingest::srt::available() {
        return true;
    }
    skip("libsrt 1.5 is not installed (apt install libsrt1.5-gnutls)");
    false
}

#[test]
fn srt_push_from_ffmpeg_with_and_without_passphrase() {
    if !srt_available() {
        return;
    }
    let root = TempRoot::new("ing-srt");
    let src = source(root.path(), "src.ts", 3);
    let (src_v, src_a, _, _) = common::probe(&src);
    let mut e = engine(&root);
    let addr = e.listen_srt("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut locked = KeyConfig::new("locked");
    locked.passphrase = Some("correct horse battery".into());
    e.registry().register("locked", locked).unwrap();
    e.registry()
        .register("open", KeyConfig::new("openslot"))
        .unwrap();
    let push = |streamid: &str, extra: &str, secs: &str| {
        ffmpeg()
            .args(["-re", "-i"])
            .arg(&src)
            .args(["-t", secs, "-c", "copy", "-f", "mpegts"])
            .arg(format!(
                "srt://{addr}?streamid={streamid}&latency=200000&linger=5{extra}"
            ))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for (key, slot, pass) in [
        ("open", "openslot", ""),
        ("locked", "locked", "&passphrase=correct horse battery"),
    ] {
        let rootp = root.path().to_path_buf();
        let reader = std::thread::spawn(move || read_slot(&rootp, slot, Duration::from_secs(5)));
        let id = format!("#!::r=live/{key},m=publish");
        let p = push(&id, pass, "10");
        wait_for("the SRT publisher", Duration::from_secs(10), || {
            e.registry().holder(key).is_some()
        });
        // Second pusher while the first is live: rejected before the handshake completes.
        let second = push(key, pass, "1").wait_with_output().unwrap();
        assert!(!second.status.success(), "second SRT pusher accepted");
        assert_success(&p.wait_with_output().unwrap());
        let seen = reader.join().unwrap();
        assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC], "{key}");
        assert_eq!(seen.video, src_v, "{key}: {seen:?}");
        assert!(
            seen.audio <= src_a && seen.audio + 2 >= src_a,
            "{key}: {seen:?}"
        );
        assert_eq!(e.stats(key).unwrap().packets, src_v + src_a, "{key}");
        assert!(seen.first_is_keyframe && seen.aac_params);
    }
    // Wrong passphrase, missing passphrase, unknown key, play request: all refused.
    for (id, extra) in [
        ("locked", "&passphrase=wrong passphrase!"),
        ("locked", ""),
        ("nosuchkey", ""),
        ("#!::r=open,m=request", ""),
    ] {
        let out = push(id, extra, "1").wait_with_output().unwrap();
        assert!(!out.status.success(), "{id} {extra} accepted");
    }
    assert_eq!(e.registry().holder("locked"), None);
}

/// SRT play (egress): readers ask `#!::r=SLOT,m=request` and get the slot as MPEG-TS from its
/// last keyframe. The viewer token is the SRT passphrase (wrong or missing: refused by the
/// handshake); a cap per stream refuses one reader too many; two readers (ffmpeg and
/// srt-live-transmit) and the pusher share the port. What the readers wrote is checked by
/// ffprobe and decoded by ffmpeg.
#[test]
fn srt_play_to_ffmpeg_and_srt_live_transmit() {
    if !srt_available() {
        return;
    }
    let root = TempRoot::new("ing-srt-play");
    let src = source(root.path(), "src.ts", 12);
    let mut e = engine(&root);
    e.set_play_access(
        true,
        framecache::ingest::rtmp::PlayAccess {
            token: Some("viewer-pass-1234".into()),
            max_per_stream: 2,
            max_total: 0,
        },
    );
    let addr = e.listen_srt("127.0.0.1:0".parse().unwrap()).unwrap();
    e.registry().register("cam", KeyConfig::new("cam")).unwrap();
    let pusher = ffmpeg()
        .args(["-re", "-i"])
        .arg(&src)
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(format!(
            "srt://{addr}?streamid=#!::r=cam,m=publish&latency=200000"
        ))
        .spawn()
        .unwrap();
    let _pusher = Reaper(pusher);
    wait_for("the stream", Duration::from_secs(15), || {
        e.stats("cam").is_some_and(|s| s.packets > 60)
    });
    let url =
        |pass: &str| format!("srt://{addr}?streamid=#!::r=cam,m=request&latency=200000{pass}");
    let good = "&passphrase=viewer-pass-1234";
    // Reader 1: ffmpeg, 4 s.
    let out1 = root.path().join("r1.ts");
    let r1 = ffmpeg()
        .args(["-i", &url(good), "-t", "4", "-c", "copy", "-y"])
        .arg(&out1)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reader 2: srt-live-transmit to stdout, 4 s.
    let out2 = root.path().join("r2.ts");
    let slt = Command::new("srt-live-transmit")
        .arg(
            url(good)
                .replace("%23", "#")
                .replace("latency=200000", "latency=200"),
        )
        .arg("file://con")
        .stdout(std::fs::File::create(&out2).unwrap())
        .stderr(Stdio::null())
        .spawn();
    std::thread::sleep(Duration::from_secs(1));
    // A third reader of the stream: over the cap of 2 (when srt-live-transmit runs).
    let third = ffmpeg()
        .args(["-i", &url(good), "-t", "1", "-f", "null", "-"])
        .output()
        .unwrap();
    // Wrong and missing passphrases: the handshake fails.
    for pass in ["&passphrase=not-the-token", ""] {
        let o = ffmpeg()
            .args(["-i", &url(pass), "-t", "1", "-f", "null", "-"])
            .output()
            .unwrap();
        assert!(!o.status.success(), "a reader with {pass:?} was served");
    }
    assert_success(&r1.wait_with_output().unwrap());
    let check = |f: &Path| {
        let (v, a, w, h) = common::probe(f);
        assert_eq!((w, h), (640, 360), "{}", f.display());
        assert!(v >= 60 && a > 0, "{}: {v} video, {a} audio", f.display());
        let d = ffmpeg()
            .args(["-v", "warning", "-i"])
            .arg(f)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&d.stderr);
        assert!(d.status.success(), "{said}");
    };
    check(&out1);
    match slt {
        Ok(mut c) => {
            std::thread::sleep(Duration::from_secs(3));
            let _ = c.kill();
            let _ = c.wait();
            check(&out2);
            assert!(
                !third.status.success(),
                "a third reader got past the cap of 2"
            );
        }
        Err(_) => common::skip("srt-live-transmit is not installed (apt install srt-tools)"),
    }
}

/// SRT play for 30 s, every packet: the source has one keyframe, at its start, so a reader that
/// joins while it is pushed starts there (play starts at the last keyframe) and must get every
/// video packet of the source and its audio, through ffmpeg and srt-live-transmit at once.
#[test]
fn srt_play_of_thirty_seconds_delivers_every_packet() {
    if !srt_available() {
        return;
    }
    let root = TempRoot::new("ing-srt-play-30");
    let src = encode(
        root.path(),
        "long.ts",
        30,
        &[
            "-tune",
            "zerolatency",
            "-bf",
            "0",
            "-g",
            "100000",
            "-f",
            "mpegts",
        ],
    );
    let (src_v, src_a, _, _) = common::probe(&src);
    let mut e = engine(&root);
    e.set_play_access(
        true,
        framecache::ingest::rtmp::PlayAccess {
            token: Some("viewer-pass-1234".into()),
            ..Default::default()
        },
    );
    let addr = e.listen_srt("127.0.0.1:0".parse().unwrap()).unwrap();
    e.registry().register("cam", KeyConfig::new("cam")).unwrap();
    // What the slot itself gets, read from its first packet: the readers must get all of it.
    let rootp = root.path().to_path_buf();
    let slot_reader = std::thread::spawn(move || read_slot(&rootp, "cam", Duration::from_secs(5)));
    let pusher = ffmpeg()
        .args(["-re", "-i"])
        .arg(&src)
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(format!("srt://{addr}?streamid=cam&latency=200000"))
        .spawn()
        .unwrap();
    wait_for("the stream", Duration::from_secs(15), || {
        e.stats("cam").is_some_and(|s| s.packets > 10)
    });
    let url = format!(
        "srt://{addr}?streamid=#!::r=cam,m=request&latency=200000&passphrase=viewer-pass-1234"
    );
    let out1 = root.path().join("r1.ts");
    let r1 = ffmpeg()
        .args(["-i", &url, "-c", "copy", "-y"])
        .arg(&out1)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out2 = root.path().join("r2.ts");
    // (srt-live-transmit takes latency in ms, ffmpeg in µs.)
    let slt = Command::new("srt-live-transmit")
        .arg(url.replace("latency=200000", "latency=200"))
        .arg("file://con")
        .stdout(std::fs::File::create(&out2).unwrap())
        .stderr(Stdio::null())
        .spawn();
    assert_success(&pusher.wait_with_output().unwrap());
    // The writer left: the plays end, ffmpeg finishes its file.
    let t = Instant::now();
    let mut r1 = Reaper(r1);
    while r1.0.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-INT", &r1.0.id().to_string()])
        .status();
    let _ = r1.0.wait();
    let pushed = e.stats("cam").unwrap().packets;
    let slot = slot_reader.join().unwrap();
    assert!(slot.first_is_keyframe, "{slot:?}");
    assert_eq!(slot.video + slot.audio, pushed, "{slot:?}");
    // The slot is the reference of the play. (It misses a few of the source's units: measured
    // 7 video and 22 audio of 900 and 1293, the pusher's last ones as it hangs up.)
    assert!(slot.video + 15 >= src_v, "{slot:?} of {src_v}");
    let mut files = vec![out1];
    match slt {
        Ok(mut c) => {
            // It would wait for the stream to come back: SIGINT ends it, its output flushed.
            std::thread::sleep(Duration::from_secs(2));
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while c.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(Reaper(c));
            files.push(out2);
        }
        Err(_) => common::skip("srt-live-transmit is not installed (apt install srt-tools)"),
    }
    for f in files {
        let (v, a, w, h) = common::probe(&f);
        eprintln!(
            "{}: {v} video, {a} audio; the slot {} and {}; the source {src_v} and {src_a}",
            f.display(),
            slot.video,
            slot.audio
        );
        assert_eq!((w, h), (640, 360));
        assert_eq!(v, slot.video, "{}: every video packet", f.display());
        // Audio written before the first video keyframe is not played (play starts there).
        assert!(
            a <= slot.audio && a + 3 >= slot.audio,
            "{}: {a} audio of {}",
            f.display(),
            slot.audio
        );
    }
}

/// SRT play switched off (`play = false`): a reader with the right passphrase is refused, while
/// pushing on the same port goes on.
#[test]
fn srt_play_off_refuses_readers() {
    if !srt_available() {
        return;
    }
    let root = TempRoot::new("ing-srt-play-off");
    let src = source(root.path(), "src.ts", 8);
    let mut e = engine(&root);
    e.set_play_access(
        false,
        framecache::ingest::rtmp::PlayAccess {
            token: Some("viewer-pass-1234".into()),
            ..Default::default()
        },
    );
    let addr = e.listen_srt("127.0.0.1:0".parse().unwrap()).unwrap();
    e.registry().register("cam", KeyConfig::new("cam")).unwrap();
    let _pusher = Reaper(
        ffmpeg()
            .args(["-re", "-i"])
            .arg(&src)
            .args(["-c", "copy", "-f", "mpegts"])
            .arg(format!("srt://{addr}?streamid=cam&latency=200000"))
            .spawn()
            .unwrap(),
    );
    wait_for("the stream", Duration::from_secs(15), || {
        e.stats("cam").is_some_and(|s| s.packets > 30)
    });
    let o = ffmpeg()
        .arg("-i")
        .arg(format!(
            "srt://{addr}?streamid=#!::r=cam,m=request&latency=200000&passphrase=viewer-pass-1234"
        ))
        .args(["-t", "1", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a reader was served with play off");
    assert!(e.stats("cam").unwrap().connected, "the push goes on");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn udp_sender(src: &Path, port: u16) -> Child {
    ffmpeg()
        .args(["-re", "-stream_loop", "-1", "-i"])
        .arg(src)
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .spawn()
        .unwrap()
}

fn fast_timeouts() -> InputTimeouts {
    InputTimeouts {
        connect: Duration::from_millis(1500),
        idle: Duration::from_millis(1500),
    }
}

#[test]
fn udp_pull_reconnects_after_the_source_dies() {
    let root = TempRoot::new("ing-udp");
    let src = source(root.path(), "src.ts", 2);
    let port = free_udp_port();
    let mut cfg = PullConfig::new(
        "udpslot",
        vec![InputUrl::parse(&format!("udp://127.0.0.1:{port}")).unwrap()],
    );
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    let streams = Streams::new();
    let stats = streams.stats_for("udpslot");
    let ing = PullIngest::start(cfg, Mounts::new(), stats.clone()).unwrap();
    let mut tx = udp_sender(&src, port);
    wait_for("packets", Duration::from_secs(15), || {
        ing.stats().packets > 60
    });
    // The source dies; the worker notices (idle timeout) and reconnects when it returns.
    tx.kill().unwrap();
    tx.wait().unwrap();
    wait_for("the disconnect", Duration::from_secs(10), || {
        !ing.stats().connected
    });
    let before = ing.stats().packets;
    let mut r = PacketReader::open_in(
        root.path(),
        "udpslot",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    let mut tx = udp_sender(&src, port);
    wait_for("packets after the restart", Duration::from_secs(15), || {
        ing.stats().packets > before + 60
    });
    tx.kill().unwrap();
    tx.wait().unwrap();
    let st = ing.stats();
    assert!(st.reconnects >= 1, "{st:?}");
    // The slot stayed the same (the reader was not re-attached) and the first packet after
    // the gap is flagged.
    let mut buf = vec![0u8; 1 << 20];
    let first = r.next_copy(&mut buf, Duration::from_secs(1)).unwrap();
    assert!(first.flags & FC_PACKET_DISCONTINUITY != 0, "{first:?}");
    assert_eq!(r.stats().reattached, 0);
    drop(ing);
}

#[test]
fn failover_to_a_file_and_failback_to_udp() {
    let root = TempRoot::new("ing-failover");
    let vod = root.path().join("vod");
    std::fs::create_dir_all(&vod).unwrap();
    let src = source(&vod, "backup.ts", 3);
    let port = free_udp_port();
    let mounts = Mounts::new();
    mounts.add("vod", &vod).unwrap();
    let mut cfg = PullConfig::new(
        "fo",
        vec![
            InputUrl::parse(&format!("udp://127.0.0.1:{port}")).unwrap(),
            InputUrl::parse("file://vod/backup.ts").unwrap(),
        ],
    );
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    cfg.probe_interval = Duration::from_millis(300);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let (l2, f2) = (log.clone(), failed.clone());
    cfg.events = Some(Arc::new(move |ev: &IngestEvent| match ev {
        IngestEvent::Connected { input, slot } => {
            assert_eq!(slot, "fo");
            l2.lock().unwrap().push(input.clone())
        }
        IngestEvent::InputFailed {
            slot,
            input,
            priority,
            ..
        } => f2
            .lock()
            .unwrap()
            .push((slot.clone(), input.clone(), *priority)),
        _ => {}
    }));
    let stats = Streams::new().stats_for("fo");
    let ing = PullIngest::start(cfg, mounts, stats).unwrap();
    // The primary sends nothing: the worker fails over to the file.
    wait_for("failover", Duration::from_secs(15), || {
        ing.stats().current_input == 1 && ing.stats().packets > 30
    });
    // The primary comes up: the probe sees it healthy and the worker fails back.
    let mut tx = udp_sender(&src, port);
    wait_for("failback", Duration::from_secs(20), || {
        ing.stats().current_input == 0 && ing.stats().connected
    });
    let before = ing.stats().packets;
    wait_for("packets from the primary", Duration::from_secs(10), || {
        ing.stats().packets > before + 30
    });
    tx.kill().unwrap();
    tx.wait().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.first().map(String::as_str),
        Some("file://vod/backup.ts")
    );
    assert!(
        log.iter().any(|i| i.starts_with("udp://")),
        "never connected to the primary: {log:?}"
    );
    // The silent primary was reported as a failed input, with its priority.
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed
            .iter()
            .any(|(s, i, p)| s == "fo" && i.starts_with("udp://") && *p == 0),
        "{failed:?}"
    );
    // The slot kept one writer: H.264 + AAC throughout.
    let r = PacketReader::open_in(root.path(), "fo", PacketReaderConfig::default()).unwrap();
    let codecs: Vec<u32> = r.streams().iter().map(|s| s.codec).collect();
    assert_eq!(codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    drop(ing);
}

/// The public probe: a file below a mount reports its tracks, size and audio rate; a silent
/// UDP port times out; a listener address is not something to probe.
#[test]
fn probe_reports_what_an_input_delivers() {
    let root = TempRoot::new("ing-probe");
    let vod = root.path().join("vod");
    std::fs::create_dir_all(&vod).unwrap();
    source(&vod, "a.ts", 2);
    let e = engine(&root);
    e.mounts().add("vod", &vod).unwrap();
    let r = e.probe("file://vod/a.ts", Duration::from_secs(5)).unwrap();
    assert_eq!(r.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert_eq!(
        (r.width, r.height, r.sample_rate, r.channels),
        (640, 360, 44100, 1)
    );
    let port = free_udp_port();
    let err = e
        .probe(
            &format!("udp://127.0.0.1:{port}"),
            Duration::from_millis(500),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err}");
    assert!(matches!(
        e.probe("rtmp://127.0.0.1:1935", Duration::from_millis(100)),
        Err(Error::BadUrl(_))
    ));
    assert!(e
        .probe("file://vod/missing.ts", Duration::from_millis(500))
        .is_err());
}

/// copy:// under a root that is not the default one: a file pull fills slot `src` and a second
/// pull relays it with `copy://src` into slot `copy`, both under the engine's root. A reader of
/// the copy sees the source's streams, its parameter sets on keyframes and its AAC
/// configuration, and as many packets as the file holds. (With the default root read instead,
/// the copy finds no `src` and never creates its slot.)
#[test]
fn copy_relays_a_slot_under_a_custom_root() {
    let root = TempRoot::new("ing-copy");
    let vod = root.path().join("vod");
    std::fs::create_dir_all(&vod).unwrap();
    let file = source(&vod, "clip.ts", 2);
    let (v, a, _, _) = common::probe(&file);
    let mut e = engine(&root);
    e.mounts().add("vod", &vod).unwrap();
    e.add("src", &["file://vod/clip.ts"]).unwrap();
    wait_for("slot src", Duration::from_secs(10), || {
        PacketReader::open_in(root.path(), "src", PacketReaderConfig::default()).is_ok()
    });
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "copy", Duration::from_secs(3)));
    e.add("copy", &["copy://src"]).unwrap();
    // The file loops: let the copy take one pass and more, then stop both.
    wait_for("copied packets", Duration::from_secs(30), || {
        e.stats("copy").is_some_and(|s| s.packets > v + a)
    });
    drop(e);
    let seen = reader.join().unwrap();
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert!(seen.first_is_keyframe, "{seen:?}");
    assert_eq!(seen.keyframes_without_sps, 0, "{seen:?}");
    assert!(seen.aac_params, "{seen:?}");
    assert_eq!(seen.backwards_dts, 0, "{seen:?}");
    assert!(seen.video + seen.audio >= v + a, "{seen:?} of {v} + {a}");
}

/// A `file://` input naming a file that is not there says so, with the path: not "slot not
/// found", which sent users looking for a slot.
#[test]
fn a_missing_vod_file_is_reported_as_such() {
    let root = TempRoot::new("ing-missing");
    let vod = root.path().join("vod");
    std::fs::create_dir_all(&vod).unwrap();
    let out = root
        .cli()
        .args([
            "ingest",
            "file://vod/nothere.ts",
            "--slot",
            "m",
            "--seconds",
            "1",
        ])
        .args(["--mount", &format!("vod={}", vod.display())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothere.ts"), "{err}");
    assert!(
        err.contains("No such file or directory") && !err.contains("slot not found"),
        "{err}"
    );
}

/// ffmpeg's HLS segmenter output (1 s segments of a 4 s H.264+AAC source, TS or fragmented
/// MP4 with `init.mp4`) in `ROOT/web`, plus `evil.m3u8` pointing at another server.
fn hls_site(root: &TempRoot, fmp4: bool) -> PathBuf {
    let web = root.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    let src = source(root.path(), "src.ts", 4);
    let st = ffmpeg()
        .arg("-i")
        .arg(&src)
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_segment_type",
            if fmp4 { "fmp4" } else { "mpegts" },
            // MP4 stores AAC without ADTS headers.
            "-bsf:a",
            if fmp4 { "aac_adtstoasc" } else { "null" },
        ])
        .arg("-hls_segment_filename")
        .arg(web.join(if fmp4 { "seg_%03d.m4s" } else { "seg_%03d.ts" }))
        .arg(web.join("index.m3u8"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        web.join("evil.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://10.255.255.1:1/x.ts\n",
    )
    .unwrap();
    web
}

/// Python's `http.server` on `dir`, over TLS with `cert`/`key` PEM files when given; returns
/// the server and its port once it accepts connections.
fn web_server(dir: &Path, tls: Option<(&Path, &Path)>) -> (Reaper, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = Command::new("python3");
    match tls {
        None => c.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()]),
        Some((cert, key)) => c
            .arg("-c")
            .arg(
                "import http.server, ssl, sys\n\
                 ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
                 ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n\
                 s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)\n\
                 s.socket = ctx.wrap_socket(s.socket, server_side=True)\n\
                 s.serve_forever()\n",
            )
            .arg(port.to_string())
            .arg(cert)
            .arg(key),
    };
    let server = Reaper(
        c.current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    wait_for("the HTTP server", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

#[test]
fn hls_pull_from_ffmpegs_segmenter_over_http() {
    let root = TempRoot::new("ing-hls");
    let web = hls_site(&root, false);
    let (_server, port) = web_server(&web, None);
    let url = format!("http://127.0.0.1:{port}/index.m3u8");
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "hls", Duration::from_secs(5)));
    let mut cfg = PullConfig::new("hls", vec![InputUrl::parse(&url).unwrap()]);
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    let ing = PullIngest::start(cfg, Mounts::new(), Streams::new().stats_for("hls")).unwrap();
    // The playlist has an end: the first pass ends, and the worker starts it again.
    wait_for("one pass of the playlist", Duration::from_secs(20), || {
        ing.stats().reconnects >= 1
    });
    drop(ing);
    let seen = reader.join().unwrap();
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    // Live start: the last three one-second segments, about 90 frames.
    assert!(seen.video >= 60, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params);

    let evil = format!("http://127.0.0.1:{port}/evil.m3u8");
    let mut cfg = PullConfig::new("evil", vec![InputUrl::parse(&evil).unwrap()]);
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    let ing = PullIngest::start(cfg, Mounts::new(), Streams::new().stats_for("evil")).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ing.stats().packets, 0);
    drop(ing);
}

/// A CDN layout: the playlist on one server, its segments named by absolute URLs on another.
/// Refused by default (a playlist must not send the ingest anywhere); followed once that
/// server is among the allowed HLS hosts.
#[test]
fn hls_segments_on_another_server_need_an_allowed_host() {
    let root = TempRoot::new("ing-hls-cdn");
    let web = hls_site(&root, false);
    let (_origin, port_a) = web_server(&web, None);
    let (_cdn, port_b) = web_server(&web, None);
    let playlist = std::fs::read_to_string(web.join("index.m3u8")).unwrap();
    let cdn: String = playlist
        .lines()
        .map(|l| {
            if l.ends_with(".ts") {
                format!("http://127.0.0.1:{port_b}/{l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(web.join("cdn.m3u8"), cdn).unwrap();
    let url = InputUrl::parse(&format!("http://127.0.0.1:{port_a}/cdn.m3u8")).unwrap();

    let at = |hosts: Vec<String>| framecache::ingest::Locations {
        mounts: Mounts::new(),
        root: root.path().to_path_buf(),
        hls_hosts: hosts,
    };
    let stop = framecache::ingest::pull::StopFlag::default();
    let r =
        framecache::ingest::pull::run_input(&url, &at(vec![]), fast_timeouts(), &stop, &mut |_| {
            Ok(())
        });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("points to another server"), "{e}");

    let mut frames = 0;
    let r = framecache::ingest::pull::run_input(
        &url,
        &at(vec![format!("127.0.0.1:{port_b}")]),
        fast_timeouts(),
        &stop,
        &mut |m| {
            if matches!(m, framecache::ingest::Media::Frame { .. }) {
                frames += 1;
                if frames == 60 {
                    return Err(Error::State("enough"));
                }
            }
            Ok(())
        },
    );
    assert_eq!(frames, 60, "{r:?}");
}

#[test]
fn hls_pull_of_fmp4_segments() {
    let root = TempRoot::new("ing-hls4");
    let web = hls_site(&root, true);
    let playlist = std::fs::read_to_string(web.join("index.m3u8")).unwrap();
    assert!(
        playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""),
        "{playlist}"
    );
    // The live start reads the last three segments: what ffprobe counts in the init segment
    // joined with them is what must arrive, packet for packet.
    let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s")).collect();
    assert!(segments.len() >= 4, "{playlist}");
    let mut live = std::fs::read(web.join("init.mp4")).unwrap();
    for s in &segments[segments.len() - 3..] {
        live.extend(std::fs::read(web.join(s)).unwrap());
    }
    let live_file = root.path().join("live-start.mp4");
    std::fs::write(&live_file, &live).unwrap();
    let (video, audio, width, _) = common::probe(&live_file);
    assert!(video >= 60 && audio > 0, "{video} {audio}");

    let (_server, port) = web_server(&web, None);
    let url = format!("http://127.0.0.1:{port}/index.m3u8");
    let (first_pass, seen) = one_pass(&root, &url, "hls4");
    assert_eq!(first_pass.packets, video + audio, "{first_pass:?}");
    assert_eq!(first_pass.dropped, 0, "{first_pass:?}");
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert_eq!(u64::from(seen.width), width);
    assert!(seen.video >= video, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");
    assert_eq!(seen.keyframes_without_sps, 0, "{seen:?}");
    assert_eq!(seen.backwards_dts, 0, "{seen:?}");
}

/// Runs a pull of `url` (with mount `vod` = `ROOT/vod` if that exists) into `slot` for one
/// pass: the counters at the end of that pass, and what a reader of the slot saw.
fn one_pass(root: &TempRoot, url: &str, slot: &str) -> (framecache::ingest::StatsSnapshot, Seen) {
    let mounts = Mounts::new();
    let vod = root.path().join("vod");
    if vod.is_dir() {
        mounts.add("vod", &vod).unwrap();
    }
    let rootp = root.path().to_path_buf();
    let s = slot.to_string();
    let reader = std::thread::spawn(move || read_slot(&rootp, &s, Duration::from_secs(5)));
    let mut cfg = PullConfig::new(slot, vec![InputUrl::parse(url).unwrap()]);
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    // The counters as the first pass disconnects are its own (the next starts after that).
    let stats = Streams::new().stats_for(slot);
    let first_pass = Arc::new(Mutex::new(None));
    let (st, fp) = (stats.clone(), first_pass.clone());
    cfg.events = Some(Arc::new(move |ev: &IngestEvent| {
        if let IngestEvent::Disconnected { .. } = ev {
            fp.lock().unwrap().get_or_insert_with(|| st.snapshot());
        }
    }));
    let ing = PullIngest::start(cfg, mounts, stats).unwrap();
    wait_for("one pass", Duration::from_secs(30), || {
        first_pass.lock().unwrap().is_some()
    });
    drop(ing);
    let pass = first_pass.lock().unwrap().unwrap();
    (pass, reader.join().unwrap())
}

/// MP4 files from a mount: progressive (moov at the end, B-frames, so composition offsets),
/// fragmented, and one cut short. Each pass delivers exactly the packets ffprobe counts.
#[test]
fn file_pull_of_mp4_files() {
    let root = TempRoot::new("ing-mp4");
    let vod = root.path().join("vod");
    std::fs::create_dir_all(&vod).unwrap();
    let make =
        |name: &str, movflags: &str| encode(&vod, name, 2, &["-bf", "2", "-movflags", movflags]);
    let progressive = make("clip.mp4", "+use_metadata_tags");
    let fragmented = make("frag.mp4", "frag_keyframe+empty_moov+default_base_moof");
    let front = make("front.mp4", "+faststart");
    for (file, slot) in [(&progressive, "mp4prog"), (&fragmented, "mp4frag")] {
        let (v, a, w, _) = common::probe(file);
        let name = file.file_name().unwrap().to_str().unwrap();
        let (pass, seen) = one_pass(&root, &format!("file://vod/{name}"), slot);
        assert_eq!(pass.packets, v + a, "{name}: {pass:?}");
        assert_eq!(pass.dropped, 0, "{name}: {pass:?}");
        assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC], "{name}");
        assert_eq!(u64::from(seen.width), w, "{name}");
        assert!(seen.video >= v, "{name}: {seen:?}");
        assert!(
            seen.first_is_keyframe && seen.aac_params,
            "{name}: {seen:?}"
        );
        assert_eq!(seen.keyframes_without_sps, 0, "{name}: {seen:?}");
        assert_eq!(seen.backwards_dts, 0, "{name}: {seen:?}");
    }
    // Cut in the middle of its media data: what lies before the cut arrives, then the input
    // fails with the reason and the worker retries.
    let data = std::fs::read(&front).unwrap();
    std::fs::write(vod.join("cut.mp4"), &data[..data.len() / 2]).unwrap();
    let (v, a, _, _) = common::probe(&front);
    let (pass, seen) = one_pass(&root, "file://vod/cut.mp4", "mp4cut");
    assert!(pass.packets > 10 && pass.packets < v + a, "{pass:?}");
    assert!(seen.first_is_keyframe, "{seen:?}");
}

#[test]
fn hls_pull_over_https_checks_the_certificate() {
    let root = TempRoot::new("ing-https");
    let web = hls_site(&root, false);
    // A CA of this test and a server certificate for 127.0.0.1 signed by it.
    let (ca_pem, cert_pem, key_pem, _) = common::test_ca(root.path());
    let (_server, port) = web_server(&web, Some((&cert_pem, &key_pem)));
    let url = format!("https://127.0.0.1:{port}/index.m3u8");

    // Trusting the test CA ($SSL_CERT_FILE, as OpenSSL tools read it): the pull works.
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "tls", Duration::from_secs(5)));
    let ingest = Reaper(
        root.cli()
            .args(["ingest", &url, "--slot", "tls", "--payload-mb", "4"])
            .args(["--seconds", "4"])
            .env("SSL_CERT_FILE", &ca_pem)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let seen = reader.join().unwrap();
    drop(ingest);
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert!(seen.video >= 60, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params);

    // Without that trust (the system store only): refused with the reason, nothing written,
    // and the worker stays up, retrying.
    let mut untrusted = root
        .cli()
        .args(["ingest", &url, "--slot", "untrusted", "--seconds", "2"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    untrusted
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(untrusted.wait().unwrap().success(), "{err}");
    assert!(
        err.contains("TLS") && err.contains("UnknownIssuer"),
        "{err}"
    );
    match PacketReader::open_in(root.path(), "untrusted", PacketReaderConfig::default()) {
        Ok(mut r) => {
            let got = r.next_vec(&mut Vec::new(), Duration::from_millis(200));
            assert!(
                got.is_err(),
                "a packet came through an untrusted connection"
            );
        }
        Err(e) => assert!(
            matches!(e, Error::NotFound(_) | Error::NoPacketRing(_)),
            "{e}"
        ),
    }
}

fn nginx_rtmp() -> Option<PathBuf> {
    let module = Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so");
    if Path::new("/usr/sbin/nginx").exists() && module.exists() {
        Some(module.to_path_buf())
    } else {
        skip("nginx with the RTMP module is not installed (apt install nginx-light libnginx-mod-rtmp)");
        None
    }
}

#[test]
fn rtmp_pull_from_nginx_rtmp() {
    let Some(module) = nginx_rtmp() else { return };
    let root = TempRoot::new("ing-nginx");
    let src = source(root.path(), "src.flv", 6);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = root.path().join("nginx.conf");
    let mut f = std::fs::File::create(&conf).unwrap();
    write!(
        f,
        "load_module {};\ndaemon off;\nmaster_process off;\nerror_log {}/error.log;\npid {}/nginx.pid;\nevents {{ worker_connections 64; }}\nrtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n",
        module.display(),
        root.path().display(),
        root.path().display()
    )
    .unwrap();
    let _nginx = Reaper(
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(root.path())
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("nginx", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut pusher = push_rtmp(&src, &format!("rtmp://127.0.0.1:{port}/live/s1"));
    std::thread::sleep(Duration::from_millis(500));
    let mut cfg = PullConfig::new(
        "fromnginx",
        vec![InputUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/s1")).unwrap()],
    );
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    let rootp = root.path().to_path_buf();
    let reader = std::thread::spawn(move || read_slot(&rootp, "fromnginx", Duration::from_secs(3)));
    let ing = PullIngest::start(cfg, Mounts::new(), Streams::new().stats_for("x")).unwrap();
    let _ = pusher.wait();
    wait_for(
        "the pull to notice the end",
        Duration::from_secs(10),
        || !ing.stats().connected,
    );
    drop(ing);
    let seen = reader.join().unwrap();
    assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
    assert!(seen.video >= 60, "{seen:?}");
    assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");
    assert_eq!(seen.keyframes_without_sps, 0);
}

#[test]
fn hostile_bytes_on_the_listener_ports_do_not_stop_other_streams() {
    let root = TempRoot::new("ing-hostile");
    let src = source(root.path(), "src.flv", 2);
    let mut e = engine(&root);
    let addr: SocketAddr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("good", &["publish://good"]).unwrap();
    let srt_addr = framecache::ingest::srt::available()
        .then(|| e.listen_srt("127.0.0.1:0".parse().unwrap()).unwrap());
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut noise = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    // Raw garbage, a valid C0 then garbage, a huge chunk header, and a half handshake.
    let mut c0c1 = vec![3u8];
    c0c1.extend(vec![0u8; 1536]);
    let attacks: Vec<Vec<u8>> = vec![
        noise(10_000),
        [vec![3u8], noise(5000)].concat(),
        [
            c0c1.clone(),
            vec![0u8; 1536],
            vec![0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x14],
        ]
        .concat(),
        c0c1,
    ];
    for a in &attacks {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(a);
        let _ = std::io::Read::read(&mut s, &mut [0u8; 4096]);
    }
    if let Some(sa) = srt_addr {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            let _ = u.send_to(&noise(1316), sa);
        }
    }
    // Unknown schemes and escaping paths are errors, not crashes.
    for bad in [
        "gopher://x/y",
        "file:///etc/passwd",
        "file://vod/../../etc/passwd",
    ] {
        assert!(e.add("bad", &[bad]).is_err(), "{bad}");
    }
    // The listener still works for a real publisher.
    publish_file(&src, &format!("rtmp://{addr}/live/good"));
    wait_for("the good stream's packets", Duration::from_secs(10), || {
        e.stats("good").is_some_and(|s| s.packets > 0)
    });
}

/// After the publish is accepted, framecache's own chunk reader takes the connection over (on
/// the pump's tick). A hand-driven publisher (rml_rtmp's client) sets an acknowledgement
/// window and gets an Acknowledgement back once past it; a truncated video tag is dropped and
/// counted; then garbage where a chunk header belongs ends the publish with an error, frees
/// the key, and the server goes on accepting.
#[test]
fn hostile_publisher_after_the_publish_is_accepted() {
    use bytes::Bytes;
    use framecache::ingest::chunk::ChunkReader;
    use framecache::ingest::flv::{avc_frame, avc_sequence_header};
    use rml_rtmp::sessions::ClientSessionResult;
    use rml_rtmp::time::RtmpTimestamp;

    let root = TempRoot::new("ing-evil");
    let mut e = engine(&root);
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("evil", &["publish://evil"]).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Everything the server sends after the handshake, for our reader to parse.
    let (mut sess, mut from_server) = common::rml_publisher::publish(&mut s, "evil", None);
    let mut buf = vec![0u8; 65536];
    // Window Acknowledgement Size 100000 on a chunk stream of its own (full header).
    s.write_all(&[0x0A, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0, 1, 0x86, 0xA0])
        .unwrap();
    let sps: &[u8] = &[0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01, 0x40, 0x16, 0xE8];
    let pps: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];
    let annexb = |nals: &[&[u8]]| -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect()
    };
    let mut send = |body: Vec<u8>, ts: u32| {
        let p = sess
            .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ts), false)
            .unwrap();
        if let ClientSessionResult::OutboundResponse(p) = p {
            s.write_all(&p.bytes).unwrap();
        }
    };
    send(avc_sequence_header(&annexb(&[sps, pps])).unwrap(), 0);
    // A frame whose NAL length runs past the end of the tag: dropped, counted.
    send(vec![0x27, 1, 0, 0, 0, 0, 0, 0x10, 0, 0x41, 1], 33);
    let idr: Vec<u8> = [&[0x65u8, 0x88][..], &vec![0x5A; 30_000]].concat();
    for i in 0..8 {
        send(avc_frame(&annexb(&[&idr]), i == 0, 0), 66 + i * 33);
    }
    // The Acknowledgement (type 3) for the 240 kB sent, parsed with our own reader.
    let mut reader = ChunkReader::new();
    let t = Instant::now();
    let mut acked = None;
    while acked.is_none() {
        assert!(t.elapsed() < Duration::from_secs(5), "no Acknowledgement");
        let mut at = 0;
        loop {
            let (n, m) = reader.read(&mut from_server[at..]).unwrap();
            at += n;
            match m {
                Some(m) if m.type_id == 3 => {
                    acked = Some(u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
                }
                Some(_) => {}
                None => break,
            }
        }
        from_server.drain(..at);
        if acked.is_none() {
            let n = s.read(&mut buf).unwrap();
            from_server.extend_from_slice(&buf[..n]);
        }
    }
    assert!(acked.unwrap() >= 100_000, "acknowledged {acked:?}");
    wait_for("the dropped tag", Duration::from_secs(5), || {
        e.stats("evil").is_some_and(|s| s.dropped >= 1)
    });
    // Garbage where the next chunk header belongs: a type-1 header on a chunk stream that
    // never had one.
    s.write_all(&[0x45, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 9, 1, 2, 3])
        .unwrap();
    wait_for("the publish to end", Duration::from_secs(5), || {
        e.registry().holder("evil").is_none() && !e.stats("evil").unwrap().connected
    });
    // The server closed the connection (what it sent before is read past).
    let t = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(t.elapsed() < Duration::from_secs(5), "still sending"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
    // The key is free for the next publisher.
    let src = source(root.path(), "src.flv", 1);
    publish_file(&src, &format!("rtmp://{addr}/live/evil"));
}

#[test]
fn srt_caller_pulls_from_an_ffmpeg_listener_and_garbage_udp_creates_nothing() {
    let root = TempRoot::new("ing-srt-caller");
    let src = source(root.path(), "src.ts", 3);
    if srt_available() {
        let port = free_udp_port();
        // ffmpeg as the SRT listener: it waits for our caller, then sends the file at real time.
        let (src_v, _, _, _) = common::probe(&src);
        let mut listener = Reaper(
            ffmpeg()
                .args(["-re", "-i"])
                .arg(&src)
                .args(["-c", "copy", "-f", "mpegts"])
                .arg(format!(
                    "srt://127.0.0.1:{port}?mode=listener&latency=200000&linger=5"
                ))
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(500));
        let url = format!("srt://127.0.0.1:{port}?streamid=feed&latency=200");
        let mut cfg = PullConfig::new("srtpull", vec![InputUrl::parse(&url).unwrap()]);
        cfg.root = Some(root.path().to_path_buf());
        cfg.timeouts = fast_timeouts();
        let rootp = root.path().to_path_buf();
        let reader =
            std::thread::spawn(move || read_slot(&rootp, "srtpull", Duration::from_secs(3)));
        let ing = PullIngest::start(cfg, Mounts::new(), Streams::new().stats_for("s")).unwrap();
        // ffmpeg ends after the file; the caller sees the connection close.
        assert!(listener.0.wait().unwrap().success());
        wait_for("the disconnect", Duration::from_secs(10), || {
            !ing.stats().connected
        });
        drop(ing);
        let seen = reader.join().unwrap();
        assert_eq!(seen.codecs, vec![FC_CODEC_H264, FC_CODEC_AAC]);
        assert_eq!(seen.video, src_v, "{seen:?}");
        assert!(seen.first_is_keyframe && seen.aac_params, "{seen:?}");
    }

    // Datagrams that are not MPEG-TS (no sync byte, no PAT): no slot, no crash; a real source
    // on the same input afterwards is taken.
    let port = free_udp_port();
    let mut cfg = PullConfig::new(
        "udpgarbage",
        vec![InputUrl::parse(&format!("udp://127.0.0.1:{port}")).unwrap()],
    );
    cfg.root = Some(root.path().to_path_buf());
    cfg.timeouts = fast_timeouts();
    let ing = PullIngest::start(cfg, Mounts::new(), Streams::new().stats_for("g")).unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 7u32;
    for i in 0..500u32 {
        let mut d = vec![0u8; 1316];
        for b in d.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        if i % 2 == 0 {
            // TS-looking packets (sync bytes) with random PIDs and no PAT.
            for k in (0..1316).step_by(188) {
                d[k] = 0x47;
            }
        }
        let _ = u.send_to(&d, ("127.0.0.1", port));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ing.stats().packets, 0);
    assert!(!root.path().join("udpgarbage.packets").exists());
    let _tx = Reaper(udp_sender(&src, port));
    wait_for(
        "packets from the real source",
        Duration::from_secs(15),
        || ing.stats().packets > 30,
    );
    drop(ing);
}

/// A push key and a pull input in one slot, by priority: the encoder's RTMP push first, a file
/// slate as backup. The slate writes while nobody pushes; the push takes over when it comes
/// and the slate again when it drops, each time at a keyframe, with rising timestamps, a
/// discontinuity flag and the same slot (the reader is never re-attached). Sources are told
/// apart by their picture size (push 640x360, slate 320x180).
#[test]
fn a_push_and_a_slate_share_a_slot_by_priority() {
    let root = TempRoot::new("ing-share");
    let vod = root.path().join("vod");
    std::fs::create_dir_all(&vod).unwrap();
    // vod/slate.ts, read by the file:// input below.
    encode(
        &vod,
        "slate.ts",
        3,
        &["-s", "320x180", "-bf", "0", "-tune", "zerolatency"],
    );
    let push_src = source(root.path(), "push.flv", 6);
    let mut e = engine(&root);
    e.mounts().add("vod", &vod).unwrap();
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("main", &["publish://cam", "file://vod/slate.ts"])
        .unwrap();

    // Read the slot from the start: per keyframe, (time seen, width, discontinuity).
    let rootp = root.path().to_path_buf();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut r = loop {
            match PacketReader::open_in(&rootp, "main", PacketReaderConfig::default()) {
                Ok(r) => break r,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let streams = r.streams();
        let mut keys = Vec::new();
        let mut last_dts = vec![i64::MIN; streams.len()];
        let (mut backwards, mut flagged) = (0, 0);
        let mut buf = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let info = match r.next_vec(&mut buf, Duration::from_millis(200)) {
                Ok(i) => i,
                Err(Error::Timeout) => continue,
                Err(e) => panic!("read: {e}"),
            };
            let s = info.stream as usize;
            if info.dts < last_dts[s] {
                backwards += 1;
                eprintln!(
                    "stream {s}: dts {} after {} (flags {:#x})",
                    info.dts, last_dts[s], info.flags
                );
            }
            last_dts[s] = info.dts;
            let disc = info.flags & FC_PACKET_DISCONTINUITY != 0;
            flagged += disc as u32;
            if streams[s].codec == FC_CODEC_H264 && info.flags & FC_PACKET_KEYFRAME != 0 {
                let w = framecache::media::codec::h264_sps_info(&buf[..info.size as usize])
                    .map_or(0, |i| i.width);
                keys.push((Instant::now(), w));
            }
        }
        (keys, backwards, flagged, r.stats().reattached)
    });
    // The slate alone.
    std::thread::sleep(Duration::from_secs(2));
    let mut pusher = push_rtmp(&push_src, &format!("rtmp://{addr}/live/cam"));
    let _ = pusher.wait();
    let pushed_end = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (keys, backwards, flagged, reattached) = reader.join().unwrap();
    drop(e);

    let widths: Vec<u32> = keys.iter().map(|k| k.1).collect();
    // Runs of the same source: slate, push, slate.
    let mut runs: Vec<u32> = widths.clone();
    runs.dedup();
    assert_eq!(
        runs,
        vec![320, 640, 320],
        "keyframe widths in order: {widths:?}"
    );
    assert!(
        widths.iter().filter(|&&w| w == 640).count() >= 4,
        "the push wrote its keyframes: {widths:?}"
    );
    // The slate came back after the push ended (its next keyframe, GOP 1 s).
    let back = keys
        .iter()
        .find(|(t, w)| *w == 320 && *t > pushed_end)
        .map(|(t, _)| t.duration_since(pushed_end))
        .expect("the slate returned");
    eprintln!("the slate's first keyframe came {back:?} after the push ended");
    assert!(back < Duration::from_secs(3), "{back:?}");
    assert_eq!(backwards, 0, "timestamps fell back at a switch");
    assert!(flagged >= 2, "each switch is flagged ({flagged} flags)");
    assert_eq!(reattached, 0, "the slot stayed the same");
}

/// Observers: an engine-wide callback and one per stream, per-packet events switched on and
/// off at run time, and refused pushers reported with their reason.
#[test]
fn observers_per_stream_packet_events_and_refusals() {
    let root = TempRoot::new("ing-observe");
    let src = source(root.path(), "src.flv", 2);
    let (src_v, src_a, _, _) = common::probe(&src);
    let mut e = engine(&root);
    let addr = e.listen_rtmp("127.0.0.1:0".parse().unwrap()).unwrap();
    e.add("a", &["publish://ka"]).unwrap();
    e.add("b", &["publish://kb"]).unwrap();
    let all: Arc<Mutex<Vec<IngestEvent>>> = Arc::default();
    let only_a: Arc<Mutex<Vec<IngestEvent>>> = Arc::default();
    let (a2, o2) = (all.clone(), only_a.clone());
    e.set_events(Some(Arc::new(move |ev: &IngestEvent| {
        a2.lock().unwrap().push(ev.clone())
    })));
    e.set_stream_events(
        "a",
        Some(Arc::new(move |ev: &IngestEvent| {
            o2.lock().unwrap().push(ev.clone())
        })),
    );
    e.set_packet_events(true);
    publish_file(&src, &format!("rtmp://{addr}/live/ka"));
    publish_file(&src, &format!("rtmp://{addr}/live/kb"));
    let refused = ffmpeg()
        .arg("-i")
        .arg(&src)
        .args(["-t", "1", "-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{addr}/live/nokey"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let done = |v: &Arc<Mutex<Vec<IngestEvent>>>, slot: &str| {
        v.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, IngestEvent::Disconnected { slot: s, .. } if s == slot))
    };
    wait_for("both pushes to end", Duration::from_secs(10), || {
        done(&all, "a") && done(&all, "b")
    });
    let packets = |v: &[IngestEvent], slot: &str| {
        v.iter()
            .filter(|e| matches!(e, IngestEvent::Packet { slot: s, .. } if s == slot))
            .count() as u64
    };
    {
        let one = only_a.lock().unwrap();
        assert!(one.iter().all(|e| e.slot() == "a"), "{one:?}");
        assert!(one
            .iter()
            .any(|e| matches!(e, IngestEvent::Connected { .. })));
        assert!(one.iter().any(|e| matches!(e, IngestEvent::MediaInfo(_))));
        // Every packet of the push, as ffprobe counts the source.
        assert_eq!(packets(&one, "a"), src_v + src_a);
        let all = all.lock().unwrap();
        assert_eq!(packets(&all, "b"), src_v + src_a);
        let r = all
            .iter()
            .find_map(|e| match e {
                IngestEvent::Refused {
                    slot,
                    input,
                    reason,
                } => Some((slot, input, reason)),
                _ => None,
            })
            .expect("the refusal was reported");
        assert!(r.0.is_empty() && r.1.ends_with("/nokey"), "{r:?}");
        assert!(!r.2.is_empty());
    }
    // Packet events off: the next push reports its connection, not its packets.
    e.set_packet_events(false);
    let before = packets(&all.lock().unwrap(), "a");
    all.lock().unwrap().clear();
    publish_file(&src, &format!("rtmp://{addr}/live/ka"));
    wait_for("the push to end", Duration::from_secs(10), || {
        done(&all, "a")
    });
    assert_eq!(packets(&all.lock().unwrap(), "a"), 0);
    assert_eq!(packets(&only_a.lock().unwrap(), "a"), before);
}

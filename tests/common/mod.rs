//! Helpers shared by the integration tests: private root directories, the CLI binary and
//! child processes killed on drop.
#![allow(dead_code)]

pub mod c;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[allow(unused_imports)] // not every test uses every helper
pub use framecache_testkit::{child_pids, cmdline, rml_publisher, skip, Reaper};

/// A private slot root (the test kit's), with the CLI bound to it.
pub struct TempRoot(framecache_testkit::TempRoot);

impl TempRoot {
    pub fn new(name: &str) -> TempRoot {
        TempRoot(framecache_testkit::TempRoot::new(name))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The `framecache` CLI with FC_SHM_DIR pointing at this root.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_framecache"));
        c.env("FC_SHM_DIR", self.path()).stdin(Stdio::null());
        c
    }
}

/// Directory of the built artefacts (libframecache.so lives beside the CLI binary).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_framecache"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Parses the JSON line `framecache verify --json` prints.
pub fn verify_json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "verify printed nothing; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// Field tables of a protocol document: rows `| offset | size | `field` | ...` under headings
/// that `tag_of` maps to a struct tag (other headings end a table). Keyed by (tag, field).
pub fn doc_field_tables(
    doc: &str,
    tag_of: impl Fn(&str) -> Option<String>,
) -> std::collections::BTreeMap<(String, String), (usize, usize)> {
    let mut m = std::collections::BTreeMap::new();
    let mut tag = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            tag = tag_of(line.trim());
            continue;
        }
        let Some(tag) = &tag else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let (Ok(off), Ok(size)) = (cells[1].parse::<usize>(), cells[2].parse::<usize>()) else {
            continue;
        };
        let name = cells[3].trim_matches('`').to_string();
        assert!(
            m.insert((tag.clone(), name.clone()), (off, size)).is_none(),
            "{name} twice in the document"
        );
    }
    m
}

/// RTMP play of `url` shows exactly an H.264 and an AAC stream (ffprobe), and a 3 s `-c copy`
/// recording to `mp4` raises no warning, nor does reading it back (demuxing and decoding).
pub fn check_rtmp_play(url: &str, mp4: &Path) {
    let probe_out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,profile",
        ])
        .args(["-of", "json", url])
        .output()
        .expect("ffprobe runs");
    let j: serde_json::Value = serde_json::from_slice(&probe_out.stdout).expect("ffprobe JSON");
    let streams: Vec<(String, String)> = j["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        streams,
        vec![
            ("video".to_string(), "h264".to_string()),
            ("audio".to_string(), "aac".to_string())
        ],
        "{}",
        String::from_utf8_lossy(&probe_out.stderr)
    );
    let rec = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-i",
            url,
        ])
        .args(["-t", "3", "-c", "copy", "-y"])
        .arg(mp4)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let warnings = String::from_utf8_lossy(&rec.stderr);
    assert!(warnings.trim().is_empty(), "recording warned: {warnings}");
    // Read back: every packet demuxed and every frame decoded without a warning. (Audio that
    // started before the video would shift the video off ffmpeg's 1/30 grid, and its rounding of
    // millisecond timestamps would put two frames on one DTS: play starts audio with the video.)
    for (what, args) in [
        ("demuxing", &["-c", "copy", "-f", "null", "-"][..]),
        ("decoding", &["-f", "null", "-"][..]),
    ] {
        let back = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-i"])
            .arg(mp4)
            .args(args)
            .output()
            .unwrap();
        assert!(back.status.success());
        let said = String::from_utf8_lossy(&back.stderr);
        assert!(said.trim().is_empty(), "{what} the MP4 said: {said}");
    }
}

/// One stream as ffprobe lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// `video`, `audio`, ...
    pub kind: String,
    /// ffprobe's codec name (`h264`, `hevc`, `aac`, ...).
    pub codec: String,
    pub width: u64,
    pub height: u64,
    pub sample_rate: u64,
    /// Packets counted by reading the file.
    pub packets: u64,
}

/// The streams of `file` as ffprobe lists them, with their packet counts.
pub fn ffprobe_streams(file: &Path) -> Vec<Probed> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries"])
        .args([
            "stream=codec_type,codec_name,width,height,sample_rate,nb_read_packets",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let num = |v: &serde_json::Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    j["streams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| Probed {
            kind: text(&s["codec_type"]),
            codec: text(&s["codec_name"]),
            width: num(&s["width"]),
            height: num(&s["height"]),
            sample_rate: num(&s["sample_rate"]),
            packets: num(&s["nb_read_packets"]),
        })
        .collect()
}

/// (video packets, audio packets, width, height) as ffprobe counts them; the video must be
/// H.264 and the audio AAC.
pub fn probe(file: &Path) -> (u64, u64, u64, u64) {
    let (mut v, mut a, mut w, mut h) = (0, 0, 0, 0);
    for s in ffprobe_streams(file) {
        match s.kind.as_str() {
            "video" => {
                assert_eq!(s.codec, "h264");
                (v, w, h) = (s.packets, s.width, s.height);
            }
            "audio" => {
                assert_eq!(s.codec, "aac");
                a = s.packets;
            }
            _ => {}
        }
    }
    (v, a, w, h)
}

/// `framecache import FILE SLOT --keep` under `root`; it must succeed.
pub fn import(root: &TempRoot, file: &Path, slot: &str) {
    let imp = root
        .cli()
        .arg("import")
        .arg(file)
        .args([slot, "--keep"])
        .output()
        .unwrap();
    assert!(
        imp.status.success(),
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
}

const RTSP_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/rtsp_server.py");

/// Whether GStreamer's RTSP server can run here (Debian's python3-gst-1.0 and
/// gir1.2-gst-rtsp-server-1.0, with the encoders of the plugin sets).
pub fn gst_rtsp_available() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); \
            from gi.repository import Gst, GstRtspServer; Gst.init(None); \
            assert all(Gst.ElementFactory.find(e) for e in \
            ['x264enc', 'x265enc', 'avenc_aac', 'rtph264pay', 'rtph265pay', 'rtpmp4gpay', \
            'opusenc', 'rtpopuspay', 'mulawenc', 'rtppcmupay'])",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            "GStreamer's RTSP server is not installed (apt install gir1.2-gst-rtsp-server-1.0 \
              python3-gst-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
              gstreamer1.0-plugins-ugly gstreamer1.0-libav)",
        );
    }
    ok
}

/// Starts the GStreamer RTSP server with `args`; returns it and its port.
pub fn rtsp_server(args: &[&str]) -> (Reaper, u16) {
    let mut child = Command::new("/usr/bin/python3")
        .arg(RTSP_SERVER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the RTSP server said {line:?}"));
    (Reaper(child), port)
}

/// A CA of this test and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem), and the key (for SPKI pins).
pub fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf, rcgen::KeyPair) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "framecache test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pem = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    (
        pem("ca.pem", ca_cert.pem()),
        pem("cert.pem", cert.pem()),
        pem("key.pem", key.serialize_pem()),
        key,
    )
}

/// Calls `f` every 20 ms until it is true; fails the test after `timeout`, naming `what`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python that has aiortc: `$FC_AIORTC_PYTHON`, the venv `.ci/run` makes, or the system's.
pub fn aiortc_python() -> Option<PathBuf> {
    let candidates = [
        std::env::var("FC_AIORTC_PYTHON").ok().map(PathBuf::from),
        std::env::var("HOME")
            .ok()
            .map(|h| PathBuf::from(h).join(".cache/framecache/aiortc-venv/bin/python")),
        Some(PathBuf::from("/opt/venv-aiortc/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import aiortc"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

//! Stock ffmpeg (Debian's, no framecache device) in and out of slots through pipes:
//! `ffmpeg … -f rawvideo - | framecache write`, `framecache cat | ffmpeg -f rawvideo -i -`,
//! every frame identical (framemd5); `framecache cat` of a packet slot remuxed by ffmpeg with
//! the source's packet counts.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{skip, TempRoot};

fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("no ffmpeg (apt install ffmpeg)");
    }
    ok
}

/// The per-frame MD5s of ffmpeg's framemd5 output.
fn md5s(framemd5: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(framemd5)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|m| m.trim().to_string()))
        .collect()
}

fn testsrc(size: &str, frames: u32) -> Vec<String> {
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc=size={size}:rate=25"),
        "-frames:v".into(),
        frames.to_string(),
    ]
}

/// The framemd5 of ffmpeg's own testsrc in `fmt`: what the pipes must deliver.
fn reference(size: &str, fmt: &str, frames: u32) -> Vec<String> {
    let o = Command::new("ffmpeg")
        .args(["-v", "error"])
        .args(testsrc(size, frames))
        .args(["-pix_fmt", fmt, "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(o.status.success());
    md5s(&o.stdout)
}

/// `framecache cat SLOT` into ffmpeg's rawvideo demuxer; the framemd5 of what it read.
fn cat_to_ffmpeg(
    root: &TempRoot,
    slot: &str,
    size: &str,
    fmt: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut cat = root
        .cli()
        .args(["cat", slot])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            fmt,
            "-video_size",
            size,
        ])
        .args(["-framerate", "25", "-i", "-", "-f", "framemd5", "-"])
        .stdin(cat.stdout.take().unwrap())
        .output()
        .unwrap();
    let mut said = String::new();
    cat.stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(cat.wait().unwrap().success(), "{said}");
    // cat tells the reader how to read it.
    assert!(
        said.contains(&format!("-f rawvideo -pix_fmt {fmt} -video_size {size}")),
        "{said}"
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    md5s(&o.stdout)
}

#[test]
fn rawvideo_in_and_out_through_pipes_is_identical() {
    if !have_ffmpeg() {
        return;
    }
    let root = TempRoot::new("pipes-raw");
    // Odd sizes too: the chroma planes of 4:2:0 round up.
    for (size, fmt) in [
        ("320x240", "uyvy422"),
        ("322x242", "yuv420p"),
        ("322x242", "nv12"),
        ("160x90", "bgra"),
    ] {
        let slot = format!("raw-{fmt}");
        let mut src = Command::new("ffmpeg")
            .args(["-v", "error"])
            .args(testsrc(size, 50))
            .args(["-f", "rawvideo", "-pix_fmt", fmt, "-"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let w = root
            .cli()
            .args([
                "write", &slot, "--size", size, "--format", fmt, "--fps", "25",
            ])
            .args(["--depth", "64", "--keep"])
            .stdin(src.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(src.wait().unwrap().success());
        assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
        let got = cat_to_ffmpeg(
            &root,
            &slot,
            size,
            fmt,
            &["--oldest", "--timeout-ms", "500"],
        );
        let want = reference(size, fmt, 50);
        assert_eq!(want.len(), 50);
        assert_eq!(got, want, "{size} {fmt}");
    }
    // A wrong size: the input ends inside a frame, which is an error that says so.
    let mut w = root
        .cli()
        .args(["write", "short", "--size", "100x100", "--format", "uyvy422"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut w.stdin.take().unwrap(), &[7u8; 30_000]).unwrap();
    let o = w.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && said.contains("ended inside frame 1"),
        "{said}"
    );
    // No such slot.
    let o = root.cli().args(["cat", "nothing-here"]).output().unwrap();
    assert!(!o.status.success());
}

/// A live pipeline: ffmpeg paced at 25 fps writes while another ffmpeg reads through `cat`.
#[test]
fn a_live_writer_and_reader_through_pipes() {
    if !have_ffmpeg() {
        return;
    }
    let root = TempRoot::new("pipes-live");
    let mut src = Command::new("ffmpeg")
        .args(["-v", "error", "-re"])
        .args(testsrc("320x240", 75))
        .args(["-f", "rawvideo", "-pix_fmt", "uyvy422", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = root
        .cli()
        .args(["write", "live", "--size", "320x240", "--format", "uyvy422"])
        .args(["--fps", "25", "--depth", "120"])
        .stdin(src.stdout.take().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !std::fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("live"))
    {
        assert!(t.elapsed() < Duration::from_secs(10), "no slot");
        std::thread::sleep(Duration::from_millis(10));
    }
    // From the oldest frame of a 120-deep ring: nothing of the 75 is missed, and cat ends when
    // the writer does.
    let got = cat_to_ffmpeg(&root, "live", "320x240", "uyvy422", &["--oldest"]);
    assert!(w.wait().unwrap().success());
    assert!(src.wait().unwrap().success());
    assert_eq!(got, reference("320x240", "uyvy422", 75));
}

/// A packet slot goes out of `cat` as MPEG-TS: ffmpeg remuxes it with every packet.
#[test]
fn cat_of_a_packet_slot_is_mpeg_ts() {
    if !have_ffmpeg() {
        return;
    }
    let root = TempRoot::new("pipes-ts");
    let src = root.path().join("src.ts");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "3"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-bf",
            "0",
        ])
        .args(["-c:a", "aac", "-y"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    common::import(&root, &src, "pk");
    let mut cat = root
        .cli()
        .args(["cat", "pk", "--oldest", "--timeout-ms", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = root.path().join("out.ts");
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "mpegts", "-i", "-", "-c", "copy", "-y"])
        .arg(&out)
        .stdin(cat.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(cat.wait().unwrap().success());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (v, a, w, h) = common::probe(&out);
    let (sv, sa, _, _) = common::probe(&src);
    assert_eq!((w, h), (640, 360));
    assert_eq!((v, a), (sv, sa), "packets of the remux vs the source");
}

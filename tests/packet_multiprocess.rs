//! The packet ring with real processes: a real H.264+AAC stream made by ffmpeg through
//! `framecache import` / `export` and checked by ffprobe; one writer and 8 readers (two slow);
//! SIGKILL of the writer in the middle of a publish.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{verify_json, TempRoot};
use framecache::packet::layout::{read_header, PACKET_DESC_SIZE};

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (CI installs ffmpeg: see .ci/run)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `codec,width,height,sample_rate,channels,packets` per stream, from ffprobe.
fn probe(file: &Path) -> Vec<String> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries"])
        .args([
            "stream=codec_name,width,height,sample_rate,channels,nb_read_packets",
            "-of",
            "json",
        ])
        .arg(file));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |s: &serde_json::Value, k: &str| match &s[k] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            [
                "codec_name",
                "width",
                "height",
                "sample_rate",
                "channels",
                "nb_read_packets",
            ]
            .map(|k| field(s, k))
            .join(",")
        })
        .collect()
}

#[test]
fn real_h264_aac_stream_round_trips_through_a_packet_slot() {
    let root = TempRoot::new("pkt-real");
    let dir = root.path();
    let input = dir.join("in.ts");
    run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=25",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-bf",
            "2",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
        ])
        .arg(&input));
    let expect = probe(&input);
    assert_eq!(expect.len(), 2, "{expect:?}");
    run(root.cli().arg("import").arg(&input).args(["cam", "--keep"]));
    // The slot describes the streams from the stream itself (SPS, AudioSpecificConfig).
    let info = framecache::packet::slot_info(dir, "cam").unwrap();
    let v = &info.streams[0];
    let a = &info.streams[1];
    assert_eq!((v.codec_name, v.width, v.height), ("h264", 640, 360));
    assert_eq!((a.codec_name, a.sample_rate, a.channels), ("aac", 48000, 1));
    assert!(v.params_gen >= 1 && a.params_gen >= 1);
    let out_ts = dir.join("out.ts");
    run(root
        .cli()
        .args(["export", "cam"])
        .arg(&out_ts)
        .args(["--oldest", "--timeout-ms", "200"]));
    assert_eq!(
        probe(&out_ts),
        expect,
        "the exported TS has the same streams and packet counts"
    );
    // Timestamps survive (B-frames: dts != pts): ffmpeg remuxes to MP4 and decodes it cleanly.
    let mp4 = dir.join("out.mp4");
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&out_ts)
        .args(["-c", "copy"])
        .arg(&mp4));
    assert_eq!(probe(&mp4), expect);
    let dec = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&mp4)
        .args(["-f", "null", "-"]));
    assert!(
        dec.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&dec.stderr)
    );
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn one_writer_eight_readers_slow_ones_move_to_keyframes_others_lose_nothing() {
    const PACKETS: u64 = 4000;
    let root = TempRoot::new("pkt-stress");
    let readers: Vec<(bool, u64)> = vec![
        (false, 0),
        (false, 0),
        (false, 0),
        (true, 0),
        (true, 0),
        (true, 0),
        (false, 3000),
        (true, 3000),
    ];
    let kids: Vec<Child> = readers
        .iter()
        .map(|(copy, delay)| {
            let mut c = root.cli();
            c.args([
                "verify",
                "s",
                "--packets",
                "--json",
                "--wait-ms",
                "10000",
                "--timeout-ms",
                "3000",
            ]);
            c.args(["--delay-us", &delay.to_string()]);
            if *copy {
                c.arg("--copy");
            }
            spawn(&mut c)
        })
        .collect();
    // A paced writer (so the fast readers keep up on 2 cores) and a small ring (so the slow
    // ones, 3 ms per packet, fall behind).
    let w = root
        .cli()
        .args([
            "testsrc",
            "s",
            "--packets",
            "--fps",
            "2000",
            "--max-kb",
            "8",
            "--payload-kb",
            "1024",
        ])
        .args([
            "--descs",
            "512",
            "--gop",
            "25",
            "--wait-ms",
            "1000",
            "--frames",
            &PACKETS.to_string(),
        ])
        .output()
        .unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let mut slow_skipped = 0;
    for ((copy, delay), kid) in readers.iter().zip(kids) {
        let out = kid.wait_with_output().unwrap();
        let v = verify_json(&out);
        let what = format!("copy={copy} delay={delay}: {v}");
        assert!(out.status.success(), "{what}");
        assert_eq!(
            (
                v["corrupt"].as_u64(),
                v["out_of_order"].as_u64(),
                v["mid_gop"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{what}"
        );
        let s = &v["stats"];
        let (read, skipped) = (
            s["packets_read"].as_u64().unwrap(),
            s["packets_skipped"].as_u64().unwrap(),
        );
        assert_eq!(s["writer_packets"], PACKETS, "{what}");
        // Torn views and copy overruns are deliveries the reader had to drop: all accounted.
        assert_eq!(read + skipped, PACKETS, "{what}");
        if *delay == 0 {
            assert_eq!(skipped, 0, "a reader that keeps up loses nothing: {what}");
        } else {
            slow_skipped += skipped;
        }
    }
    assert!(
        slow_skipped > 0,
        "the slow readers never fell behind: the test did not test resync"
    );
}

#[test]
fn sigkill_writer_mid_publish_no_reader_gets_a_partial_packet() {
    let root = TempRoot::new("pkt-kill");
    let path = root.path().join("k.packets");
    let readers: Vec<Child> = [false, true]
        .into_iter()
        .map(|copy| {
            let mut c = root.cli();
            c.args([
                "verify",
                "k",
                "--packets",
                "--json",
                "--wait-ms",
                "10000",
                "--timeout-ms",
                "4000",
            ]);
            if copy {
                c.arg("--copy");
            }
            spawn(&mut c)
        })
        .collect();
    let mut mid = false;
    for attempt in 0..10 {
        let mut w = root
            .cli()
            .args([
                "testsrc",
                "k",
                "--packets",
                "--unpaced",
                "--max-kb",
                "4096",
                "--payload-kb",
                "65536",
                "--keep",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !path.exists() {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(120 + attempt * 31));
        unsafe { libc::kill(w.id() as i32, libc::SIGKILL) };
        w.wait().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let h = read_header(&bytes).unwrap();
        let at = h.desc_offset as usize
            + (h.write_seq % u64::from(h.desc_count)) as usize * PACKET_DESC_SIZE;
        if u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) % 2 == 1 {
            mid = true;
            break;
        }
    }
    assert!(
        mid,
        "could not kill the writer inside a publish in 10 tries"
    );
    std::thread::sleep(Duration::from_millis(300));
    let restart = root
        .cli()
        .args([
            "testsrc",
            "k",
            "--packets",
            "--fps",
            "500",
            "--frames",
            "300",
            "--max-kb",
            "16",
        ])
        .output()
        .unwrap();
    assert!(
        restart.status.success(),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );
    for kid in readers {
        let out = kid.wait_with_output().unwrap();
        let v = verify_json(&out);
        assert!(out.status.success(), "{v}");
        assert_eq!(v["corrupt"], 0, "{v}");
        assert!(v["stats"]["reattached"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(
            v["last_seq"], 299,
            "followed the restarted writer to its end: {v}"
        );
    }
}

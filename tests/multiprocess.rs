//! Real processes: the `framecache` CLI as writer (`testsrc`) and as verifying readers (`verify`,
//! which checks every byte of every frame against the test pattern).

mod common;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{verify_json, TempRoot};
use framecache::ring::layout::{self, FrameRingHeader};

fn spawn(cmd: &mut std::process::Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn framecache")
}

fn wait_for_file(path: &std::path::Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn one_writer_eight_readers_no_corrupt_frame_and_consistent_counts() {
    const FRAMES: u64 = 3000;
    let root = TempRoot::new("stress");
    // (mode, copy, per-frame delay µs): sequential and latest, views and copies, and two slow
    // sequential readers that must fall behind and skip.
    let readers = [
        ("sequential", false, 0),
        ("sequential", false, 0),
        ("sequential", true, 0),
        ("sequential", true, 0),
        ("latest", false, 0),
        ("latest", true, 0),
        ("sequential", false, 2000),
        ("sequential", true, 2000),
    ];
    let kids: Vec<Child> = readers
        .iter()
        .map(|(mode, copy, delay)| {
            let mut c = root.cli();
            c.args([
                "verify",
                "stress",
                "--json",
                "--start",
                "oldest",
                "--wait-ms",
                "10000",
            ]);
            c.args([
                "--mode",
                mode,
                "--timeout-ms",
                "3000",
                "--delay-us",
                &delay.to_string(),
            ]);
            if *copy {
                c.arg("--copy");
            }
            spawn(&mut c)
        })
        .collect();
    // Readers attach during the writer's 1 s hold, so every reader starts at frame 0.
    let writer = root
        .cli()
        .args([
            "testsrc",
            "stress",
            "--size",
            "320x240",
            "--depth",
            "16",
            "--unpaced",
            "--wait-ms",
            "1000",
        ])
        .args(["--frames", &FRAMES.to_string()])
        .output()
        .unwrap();
    assert!(
        writer.status.success(),
        "writer: {}",
        String::from_utf8_lossy(&writer.stderr)
    );
    let mut slow_skips = 0;
    for ((mode, copy, delay), kid) in readers.iter().zip(kids) {
        let out = finish(kid);
        let v = verify_json(&out);
        let what = format!("{mode} copy={copy} delay={delay}: {v}");
        assert!(out.status.success(), "{what}");
        assert_eq!(v["corrupt"], 0, "{what}");
        assert_eq!(v["out_of_order"], 0, "{what}");
        assert_eq!(v["end"], "writer-gone", "{what}");
        let s = &v["stats"];
        let read = s["frames_read"].as_u64().unwrap();
        let skipped = s["frames_skipped"].as_u64().unwrap();
        assert_eq!(s["writer_frames"], FRAMES, "{what}");
        assert!(read > 0, "{what}");
        if *mode == "sequential" {
            // Every published frame was either delivered or counted as skipped.
            assert_eq!(read + skipped, FRAMES, "{what}");
            if *delay > 0 {
                slow_skips += skipped;
            }
        } else {
            // A latest reader passes over everything before the frame it took.
            assert_eq!(
                read + skipped,
                v["last_seq"].as_u64().unwrap() + 1,
                "{what}"
            );
        }
    }
    assert!(
        slow_skips > 0,
        "the slow readers never fell behind: the test did not test skipping"
    );
}

fn read_header(path: &std::path::Path) -> (FrameRingHeader, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    (layout::read_header(&bytes).unwrap(), bytes)
}

/// The lock word of the frame being written when the writer stopped (odd = mid-write).
fn lock_of_next_frame(path: &std::path::Path) -> u64 {
    let (h, bytes) = read_header(path);
    let i = (h.write_seq % u64::from(h.depth)) as usize;
    let at = h.desc_offset as usize + i * layout::DESC_SIZE;
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn sigkill_writer_mid_write_readers_see_no_torn_frame_and_follow_a_restart() {
    let root = TempRoot::new("kill");
    let path = root.path().join("cam.frames");
    let readers: Vec<(Child, bool)> = [false, true]
        .into_iter()
        .map(|copy| {
            let mut c = root.cli();
            c.args([
                "verify",
                "cam",
                "--json",
                "--start",
                "oldest",
                "--wait-ms",
                "10000",
                "--timeout-ms",
                "4000",
            ]);
            if copy {
                c.arg("--copy");
            }
            (spawn(&mut c), copy)
        })
        .collect();
    // 1080p in-place writes: the writer spends most of its time inside a frame, so a kill lands
    // mid-write; we check that it did, from the slot file itself.
    let mut killed_mid_write = false;
    for attempt in 0..10 {
        let mut w = root
            .cli()
            .args(["testsrc", "cam", "--unpaced", "--depth", "8", "--keep"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_file(&path);
        std::thread::sleep(Duration::from_millis(150 + attempt * 37));
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(w.id() as i32, libc::SIGKILL) };
        w.wait().unwrap();
        if lock_of_next_frame(&path) % 2 == 1 {
            killed_mid_write = true;
            break;
        }
    }
    assert!(
        killed_mid_write,
        "could not kill the writer inside a frame in 10 tries"
    );
    // The writer is gone (its lock died with it); the slot says so without any cleanup.
    let ls = root.cli().args(["ls", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(v[0]["info"]["writer_alive"], false, "{v}");
    // A restarted writer reclaims the stale slot; the readers re-attach by themselves.
    std::thread::sleep(Duration::from_millis(300));
    let restart = root
        .cli()
        .args([
            "testsrc", "cam", "--size", "640x360", "--fps", "200", "--frames", "100", "--depth",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        restart.status.success(),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );
    for (kid, copy) in readers {
        let out = finish(kid);
        let v = verify_json(&out);
        assert!(out.status.success(), "copy={copy}: {v}");
        assert_eq!(v["corrupt"], 0, "copy={copy}: {v}");
        assert!(
            v["stats"]["reattached"].as_u64().unwrap() >= 1,
            "copy={copy}: {v}"
        );
        assert_eq!(v["end"], "writer-gone", "copy={copy}: {v}");
        assert_eq!(
            v["last_seq"], 99,
            "copy={copy}: read through the restarted writer's frames: {v}"
        );
    }
}

#[test]
fn sigkill_reader_leaves_writer_unaffected() {
    let root = TempRoot::new("killreader");
    let writer = spawn(root.cli().args([
        "testsrc",
        "cam",
        "--size",
        "320x240",
        "--fps",
        "200",
        "--frames",
        "300",
        "--wait-ms",
        "300",
    ]));
    let victim =
        spawn(
            root.cli()
                .args(["verify", "cam", "--wait-ms", "5000", "--timeout-ms", "5000"]),
        );
    let survivor = spawn(root.cli().args([
        "verify",
        "cam",
        "--json",
        "--start",
        "oldest",
        "--wait-ms",
        "5000",
        "--timeout-ms",
        "3000",
    ]));
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(victim.id() as i32, libc::SIGKILL) };
    let _ = finish(victim);
    let w = finish(writer);
    assert!(w.status.success());
    let stderr = String::from_utf8_lossy(&w.stderr);
    assert!(stderr.contains("published 300 frames"), "{stderr}");
    let out = finish(survivor);
    let v = verify_json(&out);
    assert!(out.status.success(), "{v}");
    assert_eq!(v["last_seq"], 299, "{v}");
    assert_eq!(v["stats"]["frames_read"], 300, "{v}");
}

#[test]
fn cli_second_writer_is_refused_with_one_line() {
    let root = TempRoot::new("busycli");
    let mut first = spawn(
        root.cli()
            .args(["testsrc", "cam", "--size", "64x64", "--fps", "50"]),
    );
    wait_for_file(&root.path().join("cam.frames"));
    let second = root
        .cli()
        .args(["testsrc", "cam", "--size", "64x64", "--frames", "1"])
        .output()
        .unwrap();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let first_status = first.wait().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("owned by a live writer"), "{err}");
    // SIGTERM is a clean close: the slot file is gone, `ls` is empty.
    assert!(first_status.success());
    assert!(!root.path().join("cam.frames").exists());
}

#[test]
fn gc_removes_dead_writers_slots_only() {
    let root = TempRoot::new("gc");
    let mut live = spawn(
        root.cli()
            .args(["testsrc", "live", "--size", "64x64", "--fps", "50"]),
    );
    let dead = root
        .cli()
        .args([
            "testsrc", "dead", "--size", "64x64", "--frames", "3", "--keep",
        ])
        .output()
        .unwrap();
    assert!(dead.status.success());
    wait_for_file(&root.path().join("live.frames"));
    std::fs::write(root.path().join("junk.frames"), b"not a slot").unwrap();
    let out = root.cli().arg("gc").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("dead.frames") && text.contains("junk.frames"),
        "{text}"
    );
    assert!(root.path().join("live.frames").exists());
    assert!(!root.path().join("dead.frames").exists());
    unsafe { libc::kill(live.id() as i32, libc::SIGTERM) };
    live.wait().unwrap();
}

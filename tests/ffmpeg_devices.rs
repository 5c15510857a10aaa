//! The ffmpeg patch series (ffmpeg-patches/): ffmpeg built with `--enable-libframecache` reads
//! and writes slots. Each test runs against every patched build it finds: `$FC_PATCHED_FFMPEG`
//! (a directory with `ffmpeg`), else `target/ffmpeg-5.1/bin` and `target/ffmpeg-7.1/bin` as
//! `ffmpeg-patches/build.sh` leaves them (CI builds them). Without one, the tests say they
//! skipped. Debian's own ffmpeg/ffprobe make the reference files and check the results. The
//! cuframes filter tests move frames between two patched ffmpeg processes (every pairing of
//! builds) on the host backend, and on CUDA where a GPU is (they say they skipped otherwise).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{skip, Reaper, TempRoot};
use framecache::ring::{Consumer, ConsumerConfig, ReadMode, StartAt};
use md5::{Digest, Md5};

/// The patched builds present, as (label, bin dir).
fn builds() -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("FC_PATCHED_FFMPEG") {
        v.push(("FC_PATCHED_FFMPEG".to_string(), PathBuf::from(d)));
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    for ver in ["5.1", "7.1"] {
        let d = target.join(format!("ffmpeg-{ver}/bin"));
        if d.join("ffmpeg").exists() {
            v.push((ver.to_string(), d));
        }
    }
    if v.is_empty() {
        skip("no patched ffmpeg (run ffmpeg-patches/build.sh 5.1, or set FC_PATCHED_FFMPEG)");
    }
    v
}

fn ffmpeg(bin: &Path, root: &TempRoot) -> Command {
    let mut c = Command::new(bin.join("ffmpeg"));
    c.args(["-hide_banner", "-nostdin", "-y"])
        .env("FC_SHM_DIR", root.path());
    c
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `framecache testsrc` into `slot`, in the background.
fn testsrc(root: &TempRoot, slot: &str, args: &[&str]) -> Reaper {
    Reaper(
        root.cli()
            .args(["testsrc", slot])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// MD5 of frame `seq` of the testsrc pattern, computed here from its definition in
/// `src/testsrc.rs` (value = b + 2y + 3seq + 61p mod 256) for the tightly packed planes
/// ffmpeg's rawvideo uses (`rows` and bytes per row of each plane).
fn pattern_md5(seq: u64, planes: &[(u32, u32)]) -> String {
    let mut h = Md5::new();
    for (p, &(row_bytes, rows)) in planes.iter().enumerate() {
        for y in 0..rows {
            let row: Vec<u8> = (0..row_bytes)
                .map(|b| (u64::from(b) + 2 * u64::from(y) + 3 * (seq % 256) + 61 * p as u64) as u8)
                .collect();
            h.update(&row);
        }
    }
    format!("{:x}", h.finalize())
}

/// (pts, md5) of each frame line of a framemd5 output.
fn framemd5(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f.len() == 6).then(|| (f[2].parse().unwrap(), f[5].to_string()))
        })
        .collect()
}

#[test]
fn every_frame_ffmpeg_reads_from_a_frame_slot_hashes_to_the_published_pattern() {
    for (label, bin) in builds() {
        // A packed format, one where the slot pads chroma rows (320/2 = 160 → 192 bytes with
        // the library's 64-byte row alignment) and ffmpeg's packets must not, and a semi-planar.
        for (format, planes) in [
            ("uyvy422", vec![(640, 240)]),
            ("yuv420p", vec![(320, 240), (160, 120), (160, 120)]),
            ("nv12", vec![(320, 240), (320, 120)]),
        ] {
            let root = TempRoot::new(&format!("ffdev-md5-{format}"));
            let _src = testsrc(
                &root,
                "pat",
                &[
                    "--size",
                    "320x240",
                    "--format",
                    format,
                    "--fps",
                    "100",
                    "--frames",
                    "600",
                    "--wait-ms",
                    "500",
                ],
            );
            let out = ok(
                ffmpeg(&bin, &root)
                    .args(["-f", "framecache", "-i", "pat", "-frames:v", "100"])
                    .args(["-f", "framemd5", "-"])
                    .output()
                    .unwrap(),
                "ffmpeg -f framecache",
            );
            let frames = framemd5(&String::from_utf8_lossy(&out.stdout));
            assert_eq!(frames.len(), 100, "{label} {format}");
            for (i, (pts, md5)) in frames.iter().enumerate() {
                assert_eq!(
                    md5,
                    &pattern_md5(*pts, &planes),
                    "{label} {format}: frame {i} (pts {pts})"
                );
                if i > 0 {
                    assert!(*pts > frames[i - 1].0, "{label}: pts not increasing");
                }
            }
        }
    }
}

#[test]
fn ffmpeg_writes_a_frame_slot_that_the_rust_reader_reads_back_exactly() {
    for (label, bin) in builds() {
        let root = TempRoot::new("ffdev-out");
        let src = [
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-frames:v",
            "50",
        ];
        // The reference: the same frames as a raw file.
        let raw = root.path().join("ref.uyvy");
        ok(
            ffmpeg(&bin, &root)
                .args(src)
                .args(["-pix_fmt", "uyvy422", "-f", "rawvideo"])
                .arg(&raw)
                .output()
                .unwrap(),
            "reference",
        );
        let reference = std::fs::read(&raw).unwrap();
        ok(
            ffmpeg(&bin, &root)
                .args(src)
                .args([
                    "-pix_fmt",
                    "uyvy422",
                    "-f",
                    "framecache",
                    "-keep",
                    "1",
                    "cam",
                ])
                .output()
                .unwrap(),
            "ffmpeg -f framecache (output)",
        );
        let cfg = ConsumerConfig {
            mode: ReadMode::Sequential,
            start: StartAt::Oldest,
        };
        let mut c = Consumer::open_in(root.path(), "cam", cfg).unwrap();
        let size = 320 * 240 * 2;
        assert_eq!(reference.len(), 50 * size);
        let mut buf = vec![0u8; size];
        for i in 0..50 {
            let info = c.read_copy(&mut buf, Duration::from_secs(2)).unwrap();
            assert_eq!(info.pts, i as i64, "{label}");
            assert!(
                buf == reference[i * size..(i + 1) * size],
                "{label}: frame {i} differs"
            );
        }
    }
}

/// Packets per stream (codec, count) in `file`, counted by Debian's ffprobe.
fn packet_counts(file: &Path) -> Vec<(String, u64)> {
    let out = ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-count_packets", "-show_entries"])
            .args(["stream=index,codec_name,nb_read_packets", "-of", "csv=p=0"])
            .arg(file)
            .output()
            .expect("ffprobe (CI installs ffmpeg)"),
        "ffprobe",
    );
    // TS files list their streams twice (under the program too): keep one line per index.
    let mut by_index = std::collections::BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split(',').filter(|x| !x.is_empty()).collect();
        if f.len() == 3 {
            by_index.insert(
                f[0].parse::<u32>().unwrap(),
                (f[1].to_string(), f[2].parse().unwrap()),
            );
        }
    }
    by_index.into_values().collect()
}

/// Decodes `file` with Debian's ffmpeg; returns its error output (empty = clean).
fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn packet_slots_stream_copy_through_ffmpeg_into_mp4_ts_and_flv() {
    let builds = builds();
    if builds.is_empty() {
        return;
    }
    let root = TempRoot::new("ffdev-packets");
    // 4 s of H.264 with B-frames + AAC, as MP4 (length-prefixed H.264, raw AAC) and as TS
    // (Annex B, ADTS).
    let mp4 = root.path().join("src.mp4");
    ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi"])
            .args([
                "-i",
                "testsrc=size=640x360:rate=30",
                "-f",
                "lavfi",
                "-i",
                "sine",
            ])
            .args([
                "-t",
                "4",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "30",
            ])
            .args(["-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac"])
            .arg(&mp4)
            .output()
            .unwrap(),
        "making the source",
    );
    let ts = root.path().join("src.ts");
    ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&mp4)
            .args(["-c", "copy"])
            .arg(&ts)
            .output()
            .unwrap(),
        "remux to TS",
    );
    let want = packet_counts(&mp4);
    assert_eq!(want.len(), 2, "{want:?}");

    for (label, bin) in builds {
        // The ingest side of framecache fills one slot (`framecache import` of the TS file);
        // ffmpeg's output device fills another from the MP4 (converting to Annex B / raw AAC).
        common::import(&root, &ts, "imported");
        ok(
            ffmpeg(&bin, &root)
                .arg("-i")
                .arg(&mp4)
                .args([
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-f",
                    "framecache",
                    "-keep",
                    "1",
                    "copied",
                ])
                .output()
                .unwrap(),
            "ffmpeg -c copy -f framecache",
        );
        for slot in ["imported", "copied"] {
            for ext in ["mp4", "ts", "flv"] {
                let out = root.path().join(format!("{slot}-{label}.{ext}"));
                ok(
                    ffmpeg(&bin, &root)
                        .args(["-f", "framecache", "-start", "oldest", "-timeout", "1"])
                        .args(["-i", slot, "-map", "0", "-c", "copy"])
                        .arg(&out)
                        .output()
                        .unwrap(),
                    &format!("{label}: {slot} -> {ext}"),
                );
                assert_eq!(packet_counts(&out), want, "{label}: {slot} -> {ext}");
                assert_eq!(decode_errors(&out), "", "{label}: {slot} -> {ext}");
            }
        }
        for f in ["imported.packets", "copied.packets"] {
            std::fs::remove_file(root.path().join(f)).ok();
        }
    }
}

/// Runs ffmpeg with `args`, which must fail with `expect` in its log; returns how long it took.
fn fails_with(label: &str, bin: &Path, root: &TempRoot, args: &[&str], expect: &str) -> Duration {
    let t = Instant::now();
    let out = ffmpeg(bin, root).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{label} {args:?} succeeded");
    assert!(
        err.contains(expect),
        "{label} {args:?}: no {expect:?} in {err}"
    );
    t.elapsed()
}

#[test]
fn wrong_use_gets_clear_errors_and_nothing_hangs_past_the_timeout() {
    for (label, bin) in builds() {
        let root = TempRoot::new("ffdev-bad");
        let fail = |args: &[&str], expect: &str| fails_with(&label, &bin, &root, args, expect);
        // A slot that never appears: an error once the timeout (1 s) has passed.
        let took = fail(
            &[
                "-f",
                "framecache",
                "-timeout",
                "1",
                "-i",
                "nosuch",
                "-f",
                "null",
                "-",
            ],
            "slot not found",
        );
        assert!(took < Duration::from_secs(10), "{label}: took {took:?}");
        let lavfi = [
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240",
            "-frames:v",
            "3",
        ];
        // A pixel format frame slots do not carry.
        let mut a = lavfi.to_vec();
        a.extend(["-pix_fmt", "yuv444p", "-f", "framecache", "x"]);
        fail(&a, "cannot go into a frame slot");
        // A bad slot id.
        let mut a = lavfi.to_vec();
        a.extend(["-pix_fmt", "nv12", "-f", "framecache", "bad/slot"]);
        fail(&a, "bad slot id");
        // A slot another live writer holds.
        let _w = testsrc(&root, "held", &["--size", "320x240", "--fps", "10"]);
        wait_for_slot(&root, "held");
        let mut a = lavfi.to_vec();
        a.extend(["-pix_fmt", "uyvy422", "-f", "framecache", "held"]);
        fail(&a, "busy");
        // A codec packet slots do not carry.
        let mut a = lavfi.to_vec();
        a.extend(["-c:v", "wrapped_avframe", "-f", "framecache", "y"]);
        fail(&a, "cannot go into a packet slot");
    }
}

fn wait_for_slot(root: &TempRoot, slot: &str) {
    wait_for_file(root, &format!("{slot}.frames"));
}

/// Waits (10 s at most) for `name` to appear in the root: a slot or a cuframes control block.
fn wait_for_file(root: &TempRoot, name: &str) {
    let t = Instant::now();
    while !root.path().join(name).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_writer_that_restarts_is_followed_and_one_that_stalls_ends_the_read() {
    for (label, bin) in builds() {
        let root = TempRoot::new("ffdev-restart");
        let args = ["--size", "320x240", "--fps", "50", "--frames", "75"];
        let mut first = testsrc(&root, "cam", &args);
        wait_for_slot(&root, "cam");
        // -loglevel verbose: framecache's own info messages reach ffmpeg's log too.
        let reader = ffmpeg(&bin, &root)
            .args(["-loglevel", "verbose"])
            .args([
                "-f",
                "framecache",
                "-timeout",
                "3",
                "-i",
                "cam",
                "-frames:v",
                "100",
            ])
            .args(["-f", "framemd5", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The first writer ends after 1.5 s (its slot goes away); a new one creates it again
        // 0.5 s later and counts from 0 again.
        first.0.wait().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let _second = testsrc(&root, "cam", &args);
        let out = ok(
            reader.wait_with_output().unwrap(),
            "reading across a restart",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("went back (a new writer?)"), "{label}: {err}");
        // The library's log, routed through av_log by the device.
        assert!(
            err.contains(
                "framecache: framecache_shm::lifecycle: slot cam: a new writer re-created it"
            ),
            "{label}: {err}"
        );
        let frames = framemd5(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(frames.len(), 100, "{label}");
        // Timestamps keep increasing across the restart, and every frame is a whole pattern
        // frame (the pattern repeats every 256 frames).
        let patterns: std::collections::HashSet<String> =
            (0..256).map(|q| pattern_md5(q, &[(640, 240)])).collect();
        for (i, (pts, md5)) in frames.iter().enumerate() {
            assert!(
                patterns.contains(md5),
                "{label}: frame {i} (pts {pts}) is no pattern frame"
            );
            if i > 0 {
                assert!(
                    *pts > frames[i - 1].0,
                    "{label}: pts went back at frame {i}"
                );
            }
        }

        // A writer that stays but stops publishing (one frame every 20 s): the read fails
        // once the timeout has passed.
        let _stalled = testsrc(&root, "still", &["--size", "320x240", "--fps", "1/20"]);
        wait_for_slot(&root, "still");
        let t = Instant::now();
        let out = ffmpeg(&bin, &root)
            .args([
                "-f",
                "framecache",
                "-timeout",
                "1",
                "-i",
                "still",
                "-f",
                "null",
                "-",
            ])
            .output()
            .unwrap();
        // (ffmpeg ends an input at a read error and exits 0 unless -xerror: the log says why.)
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nothing from slot 'still' for 1.0 s"),
            "{label}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{label}: {:?}",
            t.elapsed()
        );
    }
}

/// The `(pts, md5)` pairs a cuframes subscriber got must each be a frame the publisher hashed
/// itself (same pts, same bytes), in increasing pts; returns how many there were.
fn check_subscribed_frames(what: &str, published: &str, subscribed: &str) -> usize {
    let published: std::collections::HashMap<u64, String> =
        framemd5(published).into_iter().collect();
    let got = framemd5(subscribed);
    for (i, (pts, md5)) in got.iter().enumerate() {
        assert_eq!(
            published.get(pts),
            Some(md5),
            "{what}: frame {i} (pts {pts}) differs from the published frame"
        );
        assert!(i == 0 || *pts > got[i - 1].0, "{what}: pts went back");
    }
    got.len()
}

/// ffmpeg running `cuframes_sub` on `key` until the publisher goes (2 s without a frame),
/// hashing every frame; `chain` is appended to the source (e.g. `,hwdownload,format=nv12`).
fn cuframes_subscriber(
    bin: &Path,
    root: &TempRoot,
    key: &str,
    extra: &[&str],
    chain: &str,
) -> Child {
    ffmpeg(bin, root)
        .args(extra)
        .arg("-filter_complex")
        .arg(format!("cuframes_sub=key={key}:timeout=2000{chain}"))
        .args(["-f", "framemd5", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn cuframes_filters_register_and_fail_cleanly_without_a_gpu() {
    for (label, bin) in builds() {
        let root = TempRoot::new("ffcu-bad");
        let out = ok(
            ffmpeg(&bin, &root).arg("-filters").output().unwrap(),
            "ffmpeg -filters",
        );
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(
            list.contains(" cuframes_pub ") && list.contains(" cuframes_sub "),
            "{label}: {list}"
        );
        let fail = |args: &[&str], expect: &str| {
            let took = fails_with(&label, &bin, &root, args, expect);
            assert!(took < Duration::from_secs(15), "{label} {args:?}: {took:?}");
        };
        let sub = |opts: &str, expect: &str| {
            let graph = format!("cuframes_sub={opts}");
            fail(&["-filter_complex", &graph, "-f", "null", "-"], expect)
        };
        sub(
            "key=nosuch:timeout=500",
            "Nothing publishes nosuch (waited 500 ms)",
        );
        sub("timeout=500", "The key option is required");
        sub("key=bad/key:timeout=500", "cannot subscribe: bad slot id");
        let lavfi = [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240",
            "-frames:v",
            "3",
        ];
        let mut a = lavfi.to_vec();
        a.extend(["-vf", "format=nv12,cuframes_pub", "-f", "null", "-"]);
        fail(&a, "The key option is required");
        // A key with a live publisher cannot be published twice.
        let first = Reaper(
            ffmpeg(&bin, &root)
                .args([
                    "-re",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=320x240:rate=25",
                    "-t",
                    "20",
                ])
                .args([
                    "-vf",
                    "format=nv12,cuframes_pub=key=taken",
                    "-f",
                    "null",
                    "-",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_file(&root, "taken.cuframes");
        let mut a = lavfi.to_vec();
        a.extend([
            "-vf",
            "format=nv12,cuframes_pub=key=taken",
            "-f",
            "null",
            "-",
        ]);
        fail(&a, "cannot publish: slot is owned by a live writer");
        drop(first);
        if framecache::cuda::cuda_available() {
            eprintln!("{label}: a GPU is present; the no-GPU errors are not checked");
            continue;
        }
        // Without a GPU: CUDA is refused where it is asked for, with the reason.
        sub(
            "key=x:backend=cuda:timeout=500",
            "Cannot open CUDA device 0",
        );
        let mut a = lavfi.to_vec();
        a.extend([
            "-vf",
            "format=nv12,hwupload_cuda,cuframes_pub=key=x",
            "-f",
            "null",
            "-",
        ]);
        fail(&a, "CUDA");
    }
}

#[test]
fn cuframes_filters_move_frames_between_two_ffmpeg_processes_on_the_host() {
    let builds = builds();
    // Every pairing of builds, 5.1 publishing to 7.1 and the other way round included; each
    // pairing with another pixel format.
    let formats = ["nv12", "yuv420p", "uyvy422", "bgra", "p010le", "rgb24"];
    let mut n = 0;
    for (pl, pbin) in &builds {
        for (sl, sbin) in &builds {
            let fmt = formats[n % formats.len()];
            n += 1;
            let what = format!("{pl} -> {sl} ({fmt})");
            let root = TempRoot::new("ffcu-host");
            let sub = cuframes_subscriber(sbin, &root, "cam", &[], "");
            // The subscriber waits for the publisher; 3 s at 25 frames/s, whose own hashes
            // of what it passed on are the reference.
            let publ = ok(
                ffmpeg(pbin, &root)
                    .args([
                        "-re",
                        "-f",
                        "lavfi",
                        "-i",
                        "testsrc2=size=320x240:rate=25:duration=3",
                    ])
                    .args(["-vf", &format!("format={fmt},cuframes_pub=key=cam")])
                    .args(["-f", "framemd5", "-"])
                    .output()
                    .unwrap(),
                &what,
            );
            assert_eq!(
                framemd5(&String::from_utf8_lossy(&publ.stdout)).len(),
                75,
                "{what}"
            );
            // Once the publisher is gone the subscriber ends its stream, successfully.
            let out = ok(sub.wait_with_output().unwrap(), &what);
            let got = check_subscribed_frames(
                &what,
                &String::from_utf8_lossy(&publ.stdout),
                &String::from_utf8_lossy(&out.stdout),
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("end of stream"), "{what}: {err}");
            // A subscriber takes the newest frame and may miss some; it must keep getting
            // them, not stop after the first few.
            assert!(got >= 10, "{what}: only {got} frames");
            eprintln!("{what}: {got} of 75 frames, each equal to the published one");
        }
    }
}

#[test]
fn cuframes_filters_move_cuda_frames_between_two_ffmpeg_processes() {
    if !framecache::cuda::cuda_available() {
        skip("no CUDA device here (libcuda or a GPU missing)");
        return;
    }
    let gpu = ["-init_hw_device", "cuda=gpu", "-filter_hw_device", "gpu"];
    for (label, bin) in builds() {
        let root = TempRoot::new("ffcu-gpu");
        let sub = cuframes_subscriber(&bin, &root, "gpu", &gpu, ",hwdownload,format=nv12");
        // Frames go to the GPU, are published there, and come back for the hash.
        let publ = ok(
            ffmpeg(&bin, &root)
                .args(gpu)
                .args([
                    "-re",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=1280x720:rate=25:duration=3",
                ])
                .args([
                    "-vf",
                    "format=nv12,hwupload_cuda,cuframes_pub=key=gpu,hwdownload,format=nv12",
                ])
                .args(["-f", "framemd5", "-"])
                .output()
                .unwrap(),
            &label,
        );
        let out = ok(sub.wait_with_output().unwrap(), &label);
        let got = check_subscribed_frames(
            &label,
            &String::from_utf8_lossy(&publ.stdout),
            &String::from_utf8_lossy(&out.stdout),
        );
        assert!(got >= 10, "{label}: only {got} frames");
        eprintln!("{label}: {got} CUDA frames, each equal to the published one");
    }
}

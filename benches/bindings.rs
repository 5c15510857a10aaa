//! The read path from each language, in the same run: C (`libframecache.so`), Rust (the crate),
//! Node (`bindings/node`, koffi) and Python (`bindings/python`, ctypes + numpy), each reading
//! the same 1080p UYVY slot in a process of its own, at 60 fps and flat out, through the
//! zero-copy path (a view of the shared memory, then the intact check) and the copying one.
//!
//! `cargo bench --bench bindings` prints a markdown table for README.md. Per case: the writer
//! (this process) creates the slot, starts the reader (`benches/readers/read.{c,js,py}`, or
//! this binary re-executed for Rust), waits for its `ready`, writes for a fixed time and
//! closes; the reader reads sequentially from the newest frame until the writer is gone,
//! touches the first and last byte of each frame, and prints one `result` line:
//!
//! - `frames`: intact frames read; `torn`: frames overwritten before they were checked;
//! - `call_p50`/`call_p99`: ns inside the read call (at 60 fps this is mostly the wait);
//! - `cpu_ns`: the reader's CPU from its first frame to the end (so interpreter start-up is
//!   not counted), divided here by the frames after the first;
//! - `lat_p50`/`lat_p99`: publish → read returned, ns (CLOCK_MONOTONIC in every process).
//!
//! A language whose runtime is missing is skipped with the reason.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framecache::slot::monotonic_ns;
use framecache::{Consumer, ConsumerConfig, Error, FrameMeta, PixelFormat, Producer, ReadMode};
use framecache::{SlotConfig, StartAt};

mod common;
use common::*;

const SLOT: &str = "bind";
const W: u32 = 1920;
const H: u32 = 1080;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        rust_reader(&args[2], &args[3]);
        return;
    }
    parent_main();
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        0
    } else {
        v[(p / 100.0 * (v.len() - 1) as f64) as usize]
    }
}

/// The Rust reader: the same loop as benches/readers/read.c, on the crate's `Consumer`.
fn rust_reader(slot: &str, how: &str) {
    let copy = how == "copy";
    let root = PathBuf::from(std::env::var("FC_SHM_DIR").expect("FC_SHM_DIR"));
    let cfg = ConsumerConfig {
        mode: ReadMode::Sequential,
        start: StartAt::Newest,
    };
    let mut c = Consumer::open_in(&root, slot, cfg).expect("open");
    let mut buf = vec![0u8; c.geometry().frame_size as usize];
    let (mut calls, mut lats) = (Vec::new(), Vec::new());
    let (mut torn, mut skipped, mut first, mut last, mut cpu0) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut sink = 0u8;
    say("ready");
    loop {
        let t0 = monotonic_ns();
        let got = if copy {
            c.read_copy(&mut buf, Duration::from_secs(1)).map(|info| {
                sink ^= buf[0] ^ buf[buf.len() - 1];
                (info.publish_ns, info.skipped, true)
            })
        } else {
            c.read(Duration::from_secs(1)).map(|f| {
                let d = f.data();
                sink ^= d[0] ^ d[d.len() - 1];
                (f.info.publish_ns, f.info.skipped, f.is_intact())
            })
        };
        let t1 = monotonic_ns();
        match got {
            Ok((_, _, false)) | Err(Error::Overwritten) => torn += 1,
            Ok((publish_ns, sk, true)) => {
                if first == 0 {
                    first = t1;
                    cpu0 = cpu_ns();
                }
                last = t1;
                skipped += sk;
                calls.push(t1 - t0);
                lats.push(t1.saturating_sub(publish_ns));
            }
            Err(Error::WriterGone) => break,
            Err(Error::Timeout) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    std::hint::black_box(sink);
    let cpu = cpu_ns() - cpu0;
    calls.sort_unstable();
    lats.sort_unstable();
    say(&format!(
        "result frames={} torn={torn} skipped={skipped} first_ns={first} last_ns={last} \
         cpu_ns={cpu} call_p50={} call_p99={} lat_p50={} lat_p99={}",
        calls.len(),
        pct(&calls, 50.0),
        pct(&calls, 99.0),
        pct(&lats, 50.0),
        pct(&lats, 99.0)
    ));
}

/// How to start a reader of one language, or why it cannot run here.
struct Lang {
    name: &'static str,
    cmd: Result<Vec<String>, String>,
}

fn target_profile_dir() -> PathBuf {
    // target/<profile>/deps/bindings-HASH
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// libframecache.so of this profile (cargo bench builds the crates, not the cdylib).
fn build_library() -> PathBuf {
    let dir = target_profile_dir();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "-q",
        "-p",
        "framecache-capi",
        "--lib",
        "--manifest-path",
    ])
    .arg(manifest().join("Cargo.toml"));
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo");
    assert!(st.success(), "building libframecache.so failed");
    dir.join("libframecache.so")
}

fn languages(lib: &Path, scratch: &Path) -> Vec<Lang> {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let readers = manifest().join("benches/readers");
    let c = {
        // The soname link an installed copy has (cargo's output has none).
        let libdir = scratch.join("lib");
        std::fs::create_dir_all(&libdir).unwrap();
        for name in ["libframecache.so", "libframecache.so.0"] {
            let _ = std::os::unix::fs::symlink(lib, libdir.join(name));
        }
        let out = scratch.join("read-c");
        let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args([
                "-O2",
                "-std=c11",
                "-D_POSIX_C_SOURCE=200809L",
                "-Wall",
                "-Werror",
                "-I",
            ])
            .arg(manifest().join("include"))
            .arg(readers.join("read.c"))
            .arg("-o")
            .arg(&out)
            .arg("-L")
            .arg(&libdir)
            .arg("-lframecache")
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .status();
        match st {
            Ok(s) if s.success() => Ok(vec![out.display().to_string()]),
            _ => Err("no C compiler".to_string()),
        }
    };
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && manifest().join("bindings/node/node_modules/koffi").exists();
    let node = if node_ok {
        Ok(vec![
            "node".into(),
            readers.join("read.js").display().to_string(),
        ])
    } else {
        Err("node or bindings/node/node_modules (npm ci) missing".into())
    };
    let venv = std::env::var("FC_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/framecache/py-venv")
        });
    let python = [venv.join("bin/python"), PathBuf::from("python3")]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import numpy"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|p| {
            vec![
                p.display().to_string(),
                readers.join("read.py").display().to_string(),
            ]
        })
        .ok_or_else(|| "no python with numpy (scripts/test.sh makes one)".to_string());
    vec![
        Lang { name: "C", cmd: c },
        Lang {
            name: "Rust",
            cmd: Ok(vec![exe, CHILD_ARG.into()]),
        },
        Lang {
            name: "Node",
            cmd: node,
        },
        Lang {
            name: "Python",
            cmd: python,
        },
    ]
}

struct Row {
    lang: &'static str,
    how: &'static str,
    fps: u32,
    writes: Writes,
    written: u64,
    kv: Kv,
}

/// What the writer does per frame: copy a whole 1080p frame in (a capture process), or only
/// stamp two bytes of a frame filled in place (so that flat out, the reader is the bottleneck
/// and its per-read cost shows, not the writer's memcpy).
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    Copy,
    Stamp,
}

/// One case: this process writes, one reader process reads.
fn run_case(
    root: &Path,
    lib: &Path,
    cmd: &[String],
    how: &str,
    fps: u32,
    writes: Writes,
    secs: f64,
) -> (u64, Kv) {
    let mut cfg = SlotConfig::new(PixelFormat::Uyvy, W, H);
    // Deep enough that a reader a few frames behind a stamping writer is not lapped at once.
    cfg.depth = if writes == Writes::Stamp { 32 } else { 8 };
    cfg.source_type = "bench".into();
    let mut p = Producer::create_in(root, SLOT, &cfg).expect("create slot");
    let size = p.geometry().frame_size as usize;
    // Rotating sources larger than the caches, as a capture card's fresh buffers.
    let srcs: Vec<Vec<u8>> = (0..16).map(|i| vec![0x20 + i as u8; size]).collect();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args([SLOT, how])
        .env("FC_SHM_DIR", root)
        .env("FRAMECACHE_LIB", lib)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn reader");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "reader said {line:?}");
    // Give the reader a moment to block in its first read.
    std::thread::sleep(Duration::from_millis(200));
    let t0 = monotonic_ns();
    let period = if fps == 0 {
        0
    } else {
        1_000_000_000 / fps as u64
    };
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        if period != 0 {
            sleep_until(t0 + n * period);
        }
        let meta = FrameMeta {
            pts: n as i64,
            ..Default::default()
        };
        match writes {
            Writes::Copy => {
                p.write(&srcs[n as usize % srcs.len()], meta)
                    .expect("write");
            }
            Writes::Stamp => {
                let mut f = p.acquire().expect("acquire");
                let d = f.data();
                let last = d.len() - 1;
                (d[0], d[last]) = (n as u8, n as u8);
                f.commit(meta).expect("commit");
            }
        }
        n += 1;
    }
    drop(p);
    line.clear();
    out.read_line(&mut line).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "reader failed: {st}");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("result"), "reader said {line:?}");
    (n, parse_kv(words))
}

fn parent_main() {
    let lib = build_library();
    let root = RootDir(std::env::temp_dir().join(format!("fc-bench-bind-{}", std::process::id())));
    std::fs::create_dir_all(&root.0).unwrap();
    let langs = languages(&lib, &root.0);
    let mut rows = Vec::new();
    for lang in &langs {
        let cmd = match &lang.cmd {
            Ok(c) => c,
            Err(why) => {
                println!("skipped {}: {why}", lang.name);
                continue;
            }
        };
        for (fps, how, writes, secs) in [
            (60, "view", Writes::Copy, 4.0),
            (60, "copy", Writes::Copy, 4.0),
            (0, "view", Writes::Stamp, 2.0),
            (0, "copy", Writes::Copy, 2.0),
        ] {
            {
                let (written, kv) = run_case(&root.0, &lib, cmd, how, fps, writes, secs);
                eprintln!("{} {how} fps={fps}: written={written} {kv:?}", lang.name);
                rows.push(Row {
                    lang: lang.name,
                    how,
                    fps,
                    writes,
                    written,
                    kv,
                });
            }
        }
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    let reads = |r: &Row| get::<u64>(&r.kv, "frames") + get::<u64>(&r.kv, "torn");
    let span =
        |r: &Row| (get::<u64>(&r.kv, "last_ns") - get::<u64>(&r.kv, "first_ns")) as f64 / 1e9;
    // Flat out in place, a slow reader's frames are mostly overwritten before its check, so
    // there every read call counts, intact or not.
    let count = |r: &Row| {
        if r.writes == Writes::Stamp {
            reads(r)
        } else {
            get(&r.kv, "frames")
        }
    };
    let cpu_per = |r: &Row| get::<f64>(&r.kv, "cpu_ns") / (count(r).max(2) - 1) as f64 / 1000.0;
    let vs_c = |r: &Row| {
        rows.iter()
            .find(|o| o.lang == "C" && o.how == r.how && o.fps == r.fps)
            .map_or("-".into(), |c| format!("{:.2}×", cpu_per(r) / cpu_per(c)))
    };
    let path = |r: &Row| if r.how == "view" { "zero-copy" } else { "copy" };
    let us = |r: &Row, k: &str| get::<f64>(&r.kv, k) / 1000.0;

    println!("\nMachine: {}", machine_line());
    println!(
        "\n1080p UYVY (4.1 MB frames), one reader process; the writer, in another, copies \
              each frame in at 60 fps (depth 8), as a capture process does.\n"
    );
    println!("| reader | path | frames read / written | CPU per frame | CPU ÷ C | publish→read p50 / p99 |");
    println!("|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.fps != 0) {
        println!(
            "| {} | {} | {} / {} | {:.1} µs | {} | {:.0} / {:.0} µs |",
            r.lang,
            path(r),
            get::<u64>(&r.kv, "frames"),
            r.written,
            cpu_per(r),
            vs_c(r),
            us(r, "lat_p50"),
            us(r, "lat_p99"),
        );
    }
    println!("\nFlat out. Zero-copy: the writer fills frames in place as fast as it can (depth 32), \
              so a read never waits and the reader's own cost sets its rate; most frames a slow \
              reader takes are overwritten before its intact check (counted, never trusted). \
              Copy: the writer copies frames in as fast as it can and the reader copies them out.\n");
    println!("| reader | path | reads/s sustained | read call p50 | CPU per read | CPU ÷ C | intact / read |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.fps == 0) {
        println!(
            "| {} | {} | {:.0} | {} | {:.1} µs | {} | {} / {} |",
            r.lang,
            path(r),
            (count(r).max(1) - 1) as f64 / span(r).max(1e-9),
            if r.writes == Writes::Stamp {
                format!("{:.1} µs", us(r, "call_p50"))
            } else {
                "(waits for the writer)".into()
            },
            cpu_per(r),
            vs_c(r),
            get::<u64>(&r.kv, "frames"),
            reads(r),
        );
    }
}

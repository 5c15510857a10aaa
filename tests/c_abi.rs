//! C programs compiled against include/framecache.h and linked to libframecache.so, run as
//! separate processes: layout conformance, a C reader of a Rust writer, a C writer read by Rust,
//! and the same under AddressSanitizer + UBSan.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::c::{compile, compile_against, ensure_libraries, lib_dir, manifest, ASAN, STRICT};
use common::{target_dir, verify_json, TempRoot};
use framecache::ring::layout::{DESC_FIELDS, HEADER_FIELDS};

fn run_c(root: &TempRoot, exe: &Path, args: &[&str]) -> std::process::Output {
    Command::new(exe)
        .args(args)
        .env("FC_SHM_DIR", root.path())
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap()
}

fn c_layout() -> BTreeMap<(String, String), (usize, usize)> {
    let exe = compile("conformance", &[]);
    let out = Command::new(exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w[0] == "sizeof" {
            m.insert(
                (w[1].to_string(), "sizeof".to_string()),
                (0, w[2].parse().unwrap()),
            );
        } else {
            m.insert(
                (w[0].to_string(), w[1].to_string()),
                (w[2].parse().unwrap(), w[3].parse().unwrap()),
            );
        }
    }
    m
}

fn rust_layout() -> BTreeMap<(String, String), (usize, usize)> {
    let mut m = BTreeMap::new();
    use framecache::packet::layout as pl;
    for (tag, fields) in [
        ("header", HEADER_FIELDS),
        ("desc", DESC_FIELDS),
        ("pheader", pl::HEADER_FIELDS),
        ("stream", pl::STREAM_FIELDS),
        ("pdesc", pl::DESC_FIELDS),
    ] {
        for (name, off, size) in fields {
            m.insert((tag.to_string(), name.to_string()), (*off, *size));
        }
    }
    m.insert(
        ("header".into(), "sizeof".into()),
        (0, std::mem::size_of::<framecache::ring::FrameRingHeader>()),
    );
    m.insert(
        ("desc".into(), "sizeof".into()),
        (0, std::mem::size_of::<framecache::ring::FrameDesc>()),
    );
    m.insert(
        ("pheader".into(), "sizeof".into()),
        (0, std::mem::size_of::<pl::PacketRingHeader>()),
    );
    m.insert(
        ("stream".into(), "sizeof".into()),
        (0, std::mem::size_of::<pl::StreamDesc>()),
    );
    m.insert(
        ("pdesc".into(), "sizeof".into()),
        (0, std::mem::size_of::<pl::PacketDesc>()),
    );
    m
}

/// Reads the field tables of docs/PROTOCOL.md: rows `| offset | size | `field` | ...` under the
/// headings `### Header (fc_frame_ring_header)` and `### Frame descriptor (fc_frame_desc)`.
fn doc_layout() -> BTreeMap<(String, String), (usize, usize)> {
    let doc =
        std::fs::read_to_string(manifest().join("docs/PROTOCOL.md")).expect("docs/PROTOCOL.md");
    common::doc_field_tables(&doc, |heading| {
        match heading {
            "### Header (fc_frame_ring_header)" => Some("header"),
            "### Frame descriptor (fc_frame_desc)" => Some("desc"),
            "### Packet header (fc_packet_ring_header)" => Some("pheader"),
            "### Stream entry (fc_stream_desc)" => Some("stream"),
            "### Packet descriptor (fc_packet_desc)" => Some("pdesc"),
            _ => None,
        }
        .map(String::from)
    })
}

#[test]
fn layout_is_the_same_in_rust_c_and_protocol_md() {
    let rust = rust_layout();
    assert_eq!(c_layout(), rust, "C's offsetof/sizeof differ from Rust's");
    let mut doc = doc_layout();
    let rust_fields: BTreeMap<_, _> = rust
        .into_iter()
        .filter(|((_, f), _)| f != "sizeof")
        .collect();
    doc.retain(|k, _| k.1 != "sizeof");
    assert_eq!(
        doc, rust_fields,
        "docs/PROTOCOL.md's tables differ from the code"
    );
}

#[test]
fn c_reader_verifies_every_byte_from_a_rust_writer() {
    for copy in ["view", "copy"] {
        let root = TempRoot::new(&format!("creader-{copy}"));
        let exe = compile("reader", &[]);
        let mut w = root
            .cli()
            .args([
                "testsrc",
                "cam",
                "--size",
                "1920x1080",
                "--fps",
                "120",
                "--frames",
                "150",
                "--wait-ms",
                "500",
            ])
            .spawn()
            .unwrap();
        let out = run_c(&root, &exe, &["cam", "150", copy]);
        assert!(w.wait().unwrap().success());
        assert!(
            out.status.success(),
            "{copy}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // Every frame is read, or accounted for: skipped (the reader fell behind: the writer
        // never waits) or a torn view the check caught.
        let num = |after: &str| -> u64 {
            text.split(after)
                .nth(1)
                .and_then(|t| t.split([' ', ',']).next())
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(text.contains("last seq 149"), "{text}");
        assert_eq!(
            num("read ") + num("skipped ") + num("torn views "),
            150,
            "{text}"
        );
    }
}

#[test]
fn c_writer_is_read_back_by_the_rust_reader() {
    let root = TempRoot::new("cwriter");
    let exe = compile("writer", &[]);
    // 7 frames fit a depth-8 ring whole, so a reader after the writer sees all of them.
    let out = run_c(&root, &exe, &["fromc", "7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = root
        .cli()
        .args([
            "verify",
            "fromc",
            "--json",
            "--start",
            "oldest",
            "--timeout-ms",
            "100",
        ])
        .output()
        .unwrap();
    let j = verify_json(&v);
    assert!(v.status.success(), "{j}");
    assert_eq!(
        (j["good"].as_u64(), j["last_seq"].as_u64()),
        (Some(7), Some(6)),
        "{j}"
    );
    let info = framecache::ring::slot_info(root.path(), "fromc").unwrap();
    assert_eq!(
        (info.format.as_str(), info.width, info.height, info.depth),
        ("NV12", 320, 180, 8)
    );
    assert_eq!(info.labels, "lang=c\nuse=test");
    assert!(!info.writer_alive);
}

#[test]
fn c_programs_are_clean_under_address_sanitizer() {
    let root = TempRoot::new("asan");
    let writer = compile("writer", ASAN);
    let out = run_c(&root, &writer, &["asan", "7"]);
    assert!(
        out.status.success(),
        "writer under ASan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in ["view", "copy"] {
        let reader = compile("reader", ASAN);
        let out = run_c(&root, &reader, &["asan", "7", mode]);
        assert!(
            out.status.success(),
            "reader ({mode}) under ASan: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn installed_library_is_found_through_pkg_config() {
    let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    ensure_libraries();
    let profile = target_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let st = Command::new("bash")
        .arg(manifest().join("capi/install.sh"))
        .args(["--no-build", "--profile", &profile, "--prefix"])
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(st.success(), "install.sh failed");
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "framecache"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config (install pkgconf)");
    assert!(
        pc.status.success(),
        "{}",
        String::from_utf8_lossy(&pc.stderr)
    );
    let flags = String::from_utf8(pc.stdout).unwrap();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pc-writer");
    let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(STRICT)
        .arg(manifest().join("capi/tests/writer.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
        .status()
        .unwrap();
    assert!(st.success());
    let root = TempRoot::new("pkgconfig");
    let out = run_c(&root, &exe, &["viapc", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It runs against the installed copy, found by its soname.
    let ldd = Command::new("ldd").arg(&exe).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(
        ldd.contains(&format!(
            "libframecache.so.0 => {}",
            prefix.join("lib").display()
        )),
        "{ldd}"
    );
}

#[test]
fn the_c_example_compiles_cleanly() {
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("read_frames_example");
    let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(STRICT)
        .arg("-I")
        .arg(manifest().join("include"))
        .arg(manifest().join("examples/read_frames.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib_dir())
        .arg("-lframecache")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "examples/read_frames.c does not compile against the header"
    );
}

#[test]
fn c_packet_reader_verifies_synthetic_and_real_packets_under_asan() {
    let root = TempRoot::new("cpacket");
    let exe = compile("packet_reader", ASAN);
    // Synthetic packets from another process, read while they are published.
    let mut w = root
        .cli()
        .args([
            "testsrc",
            "syn",
            "--packets",
            "--fps",
            "1000",
            "--frames",
            "400",
            "--wait-ms",
            "500",
            "--max-kb",
            "32",
        ])
        .spawn()
        .unwrap();
    let out = run_c(&root, &exe, &["syn", "400", "synthetic"]);
    assert!(w.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("read 400 packets, last seq 399"));
    // A real H.264+AAC stream imported from ffmpeg: parameters and keyframe start from C.
    let ts = root.path().join("in.ts");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "sine",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
        ])
        .arg(&ts)
        .status()
        .expect("ffmpeg (CI installs it: see .ci/run)");
    assert!(st.success());
    common::import(&root, &ts, "real");
    let out = run_c(&root, &exe, &["real", "100", "media"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("stream 0 codec 1 media 1 320x240"), "{text}");
    assert!(text.contains("codec 3 media 2 0x0 44100 Hz 1 ch"), "{text}");
}

#[test]
fn c_ingest_engine_takes_an_ffmpeg_push_and_refuses_wrong_use() {
    use std::io::BufRead;
    let root = TempRoot::new("c-ingest");
    let src = root.path().join("src.flv");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args([
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine",
        ])
        .args([
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-y"])
        .arg(&src)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success());
    // Without a log callback the library writes nothing to stderr; with one, the messages of
    // the publisher's disconnect reach it.
    for (exe, asan, with_log) in [
        (compile("ingest", &[]), false, false),
        (compile("ingest", ASAN), true, true),
    ] {
        let mut child = Command::new(&exe)
            .args(with_log.then_some("log"))
            .env("FC_SHM_DIR", root.path())
            .env("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("LISTEN line").unwrap();
        let addr = first.strip_prefix("LISTEN ").expect(&first).to_string();
        let push = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
            .arg(&src)
            .args(["-c", "copy", "-f", "flv"])
            .arg(format!("rtmp://{addr}/live/ckey"))
            .status()
            .unwrap();
        assert!(push.success());
        let report = lines.next().expect("PACKETS line").unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "asan={asan}: {report}; stderr: {stderr}");
        assert!(report.contains("WIDTH 320"), "{report}");
        if with_log {
            assert!(!report.contains(" ENDED 0"), "{report}");
        } else {
            assert!(report.ends_with("LOGS 0 ENDED 0"), "{report}");
            assert_eq!(stderr, "", "the library printed without a log callback");
        }
    }
}

/// Programs built against the 0.1 header (kept as capi/abi/framecache-0.1.h) work with this
/// library: every C test program compiles against it, the struct_size rule holds for structs
/// of other sizes than this header's (an older fc_slot_config without `flags`, a newer one with
/// a zero or non-zero tail, outputs never written past the caller's size, arrays stepping by
/// the caller's size), under ASan; and every 0.1 function is still exported.
#[test]
fn programs_built_against_the_0_1_header_work_with_this_library() {
    let old = manifest().join("capi/abi/framecache-0.1.h");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi-0.1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&old, dir.join("framecache.h")).unwrap();
    for name in [
        "writer",
        "reader",
        "packet_reader",
        "ingest",
        "whep",
        "cuframes",
    ] {
        compile_against(name, &[], &dir, "-0.1");
    }
    let root = TempRoot::new("c-abi-0.1");
    let exe = compile_against("abi", ASAN, &dir, "-0.1");
    let out = run_c(&root, &exe, &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "abi ok\n");

    // The exported symbols: a superset of the 0.1 functions.
    let wanted = functions_of_0_1();
    let exported: std::collections::BTreeSet<String> = exported_functions().into_keys().collect();
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "0.1 functions no longer exported: {missing:?}"
    );
}

/// The functions the 0.1 header declares: `fc_name(` outside comments.
fn functions_of_0_1() -> std::collections::BTreeSet<String> {
    let header = std::fs::read_to_string(manifest().join("capi/abi/framecache-0.1.h")).unwrap();
    let wanted: std::collections::BTreeSet<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("//") && !l.trim_start().starts_with('*'))
        .flat_map(|l| l.match_indices("fc_").map(move |(i, _)| &l[i..]))
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].starts_with('(').then_some(name)
        })
        .collect();
    assert_eq!(wanted.len(), 61, "the 0.1 header declares 61 functions");
    wanted
}

/// The functions libframecache.so exports, with their symbol version ("" when unversioned).
fn exported_functions() -> BTreeMap<String, String> {
    ensure_libraries();
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(target_dir().join("libframecache.so"))
        .output()
        .expect("nm (binutils) runs");
    assert!(nm.status.success());
    String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3 && w[1] == "T").then(|| w[2].to_string())
        })
        .filter(|s| s.starts_with("fc_"))
        .map(|s| match s.split_once("@@") {
            Some((name, v)) => (name.to_string(), v.to_string()),
            None => (s, String::new()),
        })
        .collect()
}

/// Symbol versions (docs/ABI.md): every function is versioned, the 0.1 ones as FRAMECACHE_0.1
/// and later ones by a later node; a program linked against an unversioned libframecache.so.0
/// (as 0.1 shipped) still binds to this one; and the static library links without the
/// versions getting in the way.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn functions_carry_symbol_versions_and_unversioned_programs_still_bind() {
    let exported = exported_functions();
    let old = functions_of_0_1();
    for (f, v) in &exported {
        if old.contains(f) {
            assert_eq!(v, "FRAMECACHE_0.1", "{f}");
        } else {
            assert!(
                v.starts_with("FRAMECACHE_") && v.as_str() > "FRAMECACHE_0.1",
                "{f} has version {v:?}"
            );
        }
    }
    // The version definitions are in the library (lld records no parent links; the dynamic
    // loader does not use them).
    let vd = Command::new("readelf")
        .args(["-V", "-W"])
        .arg(target_dir().join("libframecache.so"))
        .output()
        .unwrap();
    let vd = String::from_utf8_lossy(&vd.stdout);
    assert!(vd.contains("Name: FRAMECACHE_0.1"), "{vd}");

    // A program linked against an unversioned library with the same soname: a stand-in built
    // from the 0.1 header's names, as the 0.1 library had them (no versions).
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unversioned-0.1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        manifest().join("capi/abi/framecache-0.1.h"),
        dir.join("framecache.h"),
    )
    .unwrap();
    let stub: String = old
        .iter()
        .map(|f| format!("void {f}(void) {{}}\n"))
        .collect();
    std::fs::write(dir.join("stub.c"), stub).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-shared", "-fPIC", "-Wl,-soname,libframecache.so.0", "-o"])
        .arg(dir.join("libframecache.so"))
        .arg(dir.join("stub.c"))
        .status()
        .unwrap();
    assert!(st.success());
    let exe = dir.join("writer");
    let st = Command::new(&cc)
        .args(STRICT)
        .arg("-I")
        .arg(&dir)
        .arg(manifest().join("capi/tests/writer.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&dir)
        .arg("-lframecache")
        .status()
        .unwrap();
    assert!(st.success());
    let refs = Command::new("objdump")
        .arg("-T")
        .arg(&exe)
        .output()
        .unwrap();
    let refs = String::from_utf8_lossy(&refs.stdout);
    let producer = refs
        .lines()
        .find(|l| l.ends_with(" fc_producer_create"))
        .unwrap_or_else(|| panic!("{refs}"));
    assert!(!producer.contains("FRAMECACHE"), "{producer}");
    let root = TempRoot::new("unversioned");
    let out = Command::new(&exe)
        .args(["old", "3"])
        .env("FC_SHM_DIR", root.path())
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same program linked statically: `.symver ..., remove` leaves one definition each.
    let exe = dir.join("writer-static");
    let st = Command::new(&cc)
        .args(STRICT)
        .arg("-I")
        .arg(manifest().join("include"))
        .arg(manifest().join("capi/tests/writer.c"))
        .arg("-o")
        .arg(&exe)
        .arg(target_dir().join("libframecache.a"))
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil"])
        .status()
        .unwrap();
    assert!(st.success(), "linking libframecache.a failed");
    let out = Command::new(&exe)
        .args(["static", "3"])
        .env("FC_SHM_DIR", root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

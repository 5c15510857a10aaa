//! cuframes between processes. Tests named `host_backend_*` run the real protocol (control
//! block, Unix socket, holds, revocation, crashes) with the host backend, the CPU
//! implementation that moves host memory: they run everywhere, CI included. Tests named
//! `cuda_*` run the same scenarios on an NVIDIA GPU and print why they skip without one.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::c::{compile, manifest, ASAN};
use common::{skip, TempRoot};
use framecache::cuda::proto::{self, Msg};
use framecache::cuda::{
    cuda_available, layout, pattern_byte, BackendChoice, Policy, Publisher, PublisherConfig,
    Subscriber, SubscriberConfig,
};
use framecache::error::*;
use framecache::{Error, PixelFormat};

/// A child process killed when the test ends, whatever happens.
struct Reaper(Option<Child>);

impl Reaper {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// Waits for the child to exit and collects its output.
    fn output(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }

    fn kill9(&mut self) {
        self.child().kill().unwrap();
        let _ = self.child().wait();
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; status {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

fn spawn(cmd: &mut Command) -> Reaper {
    Reaper(Some(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ))
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn backend(name: &str) -> BackendChoice {
    BackendChoice::parse(name).unwrap()
}

fn publisher(root: &TempRoot, key: &str, be: &str, buffers: u32, policy: Policy) -> Publisher {
    let mut cfg = PublisherConfig::new(PixelFormat::Nv12, 640, 360);
    cfg.backend = backend(be);
    cfg.buffers = buffers;
    cfg.max_subscribers = 4;
    cfg.policy = policy;
    cfg.root = Some(root.path().to_path_buf());
    Publisher::create(key, &cfg).unwrap()
}

/// Writes the pattern of the next frame into an acquired buffer and publishes it.
fn publish_one(p: &mut Publisher) -> framecache::Result<u64> {
    let b = p.acquire(0)?;
    let seq = p.next_seq();
    let g = p.geometry();
    for i in 0..b.plane_count as usize {
        let rows = if i == 0 {
            g.height
        } else {
            g.height.div_ceil(2)
        };
        let len = u64::from(b.pitches[i]) * u64::from(rows);
        p.backend()
            .fill(b.planes[i], pattern_byte(seq, i), len, 0)?;
    }
    p.publish(0, seq as i64, 1, 0)
}

fn subscriber(root: &TempRoot, key: &str, be: &str) -> framecache::Result<Subscriber> {
    let cfg = SubscriberConfig {
        backend: backend(be),
        root: Some(root.path().to_path_buf()),
        ..Default::default()
    };
    Subscriber::open(key, &cfg)
}

/// Acquires a frame and checks every byte of both planes; returns its seq.
fn take_and_verify(s: &mut Subscriber, timeout: Duration) -> framecache::Result<u64> {
    let h = s.acquire(0, timeout)?;
    let g = s.geometry().unwrap();
    let mut host = Vec::new();
    for i in 0..h.plane_count as usize {
        let rows = if i == 0 {
            g.height
        } else {
            g.height.div_ceil(2)
        };
        host.resize(h.pitches[i] as usize * rows as usize, 0);
        s.backend().copy_to_host(&mut host, h.planes[i], 0)?;
        let want = pattern_byte(h.meta.seq, i);
        assert!(
            host.iter().all(|&b| b == want),
            "frame {} plane {i} is not the pattern",
            h.meta.seq
        );
    }
    s.release(&h, 0)?;
    Ok(h.meta.seq)
}

// ---------------------------------------------------------------- layout conformance

fn doc_tables() -> BTreeMap<(String, String), (usize, usize)> {
    let doc = std::fs::read_to_string(manifest().join("docs/CUFRAMES.md")).unwrap();
    // Headings name their struct: "### 2.1 Header (fc_cuframes_header, 512 bytes)".
    common::doc_field_tables(&doc, |heading| {
        heading
            .split_once("(fc_cuframes_")
            .map(|(_, rest)| format!("fc_cuframes_{}", rest.split(',').next().unwrap()))
    })
}

#[test]
fn layout_is_the_same_in_rust_c_and_cuframes_md() {
    let mut rust = BTreeMap::new();
    for (t, fields) in layout::field_tables() {
        for (f, off, size) in fields {
            rust.insert((t.to_string(), f.to_string()), (off, size));
        }
    }
    let exe = compile("cuframes", &[]);
    let out = Command::new(exe).arg("layout").output().unwrap();
    assert!(out.status.success());
    let mut c = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w[0] == "sizeof" {
            sizes.insert(w[1].to_string(), w[2].parse::<usize>().unwrap());
        } else {
            c.insert(
                (w[0].to_string(), w[1].to_string()),
                (w[2].parse().unwrap(), w[3].parse().unwrap()),
            );
        }
    }
    assert_eq!(c, rust, "C's offsetof/sizeof differ from Rust's");
    assert_eq!(
        doc_tables(),
        rust,
        "docs/CUFRAMES.md's tables differ from the code"
    );
    assert_eq!(sizes["fc_cuframes_header"], layout::FC_CUFRAMES_HEADER_SIZE);
    assert_eq!(sizes["fc_cuframes_slot_desc"], 192);
    assert_eq!(sizes["fc_cuframes_frame_meta"], 64);
    assert_eq!(sizes["fc_cuframes_sub_slot"], 128);
}

// ---------------------------------------------------------------- scenarios, any backend

/// A publisher process and two subscriber processes (the CLI), every byte of every delivered
/// frame checked.
fn scenario_pattern_across_processes(be: &str) {
    let root = TempRoot::new(&format!("cu-pattern-{be}"));
    let publ = spawn(root.cli().args([
        "cuframes",
        "publish",
        "cam",
        "--backend",
        be,
        "--size",
        "640x360",
        "--fps",
        "250",
        "--frames",
        "500",
        "--linger-ms",
        "200",
    ]));
    wait_for("publisher socket", 10, || {
        root.path().join("cuframes-cam.sock").exists()
    });
    let fast = spawn(root.cli().args([
        "cuframes",
        "subscribe",
        "cam",
        "--backend",
        be,
        "--verify",
        "--frames",
        "200",
    ]));
    let slow = spawn(root.cli().args([
        "cuframes",
        "subscribe",
        "cam",
        "--backend",
        be,
        "--verify",
        "--frames",
        "30",
        "--hold-ms",
        "20",
    ]));
    for (name, r, n) in [("fast", fast, 200), ("slow", slow, 30)] {
        let out = r.output();
        let j = json(&out);
        assert!(out.status.success(), "{name}: {j}");
        assert_eq!(j["frames"], n, "{name}: {j}");
        assert_eq!(j["bad"], 0, "{name}: {j}");
        assert_eq!(j["verified"], n, "{name}: every frame released intact: {j}");
    }
    let out = publ.output();
    let j = json(&out);
    assert!(out.status.success(), "{j}");
    assert_eq!(j["published"], 500, "{j}");
    assert_eq!(j["revoked"], 0, "8 buffers, holders of one frame each: {j}");
}

/// A subscriber that holds two frames and sleeps: with 3 buffers the publisher must revoke
/// (or skip), and it keeps publishing.
fn scenario_slow_subscriber(be: &str, policy: Policy) {
    let root = TempRoot::new(&format!("cu-slow-{be}-{policy:?}"));
    let mut p = publisher(&root, "slow", be, 3, policy);
    let sub = spawn(root.cli().args([
        "cuframes",
        "subscribe",
        "slow",
        "--backend",
        be,
        "--verify",
        "--hold",
        "2",
        "--hold-ms",
        "40",
        "--timeout-ms",
        "1000",
    ]));
    wait_for("subscriber attached", 10, || p.stats().subscribers == 1);
    let (mut published, mut skipped) = (0u64, 0u64);
    for _ in 0..400 {
        match publish_one(&mut p) {
            Ok(_) => published += 1,
            Err(Error::NoBuffer) if policy == Policy::Skip => skipped += 1,
            Err(e) => panic!("publisher stalled or failed: {e}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let st = p.stats();
    assert_eq!(st.published, published);
    assert_eq!(st.skipped, skipped);
    drop(p);
    let out = sub.output();
    let j = json(&out);
    assert!(out.status.success(), "{j}");
    assert_eq!(j["bad"], 0, "no intact-released frame may differ: {j}");
    match policy {
        Policy::Revoke => {
            assert_eq!(published, 400, "revoke never refuses a frame");
            assert!(st.revoked > 0, "3 buffers, 2 held, 1 newest: {st:?}");
            assert!(j["overwritten"].as_u64().unwrap() > 0, "{j}");
            assert!(j["revoked_notices"].as_u64().unwrap() > 0, "{j}");
        }
        Policy::Skip => {
            assert!(skipped > 0, "{st:?}");
            assert_eq!(st.revoked, 0);
            assert_eq!(j["overwritten"], 0, "skip never revokes: {j}");
            assert!(j["verified"].as_u64().unwrap() > 0, "{j}");
        }
    }
}

/// Publisher and subscriber in one process (CUDA IPC cannot open a handle in the process that
/// made it): frames flow, and a frame held when the publisher goes stays readable until its
/// release, after which the subscriber reports the publisher gone.
fn scenario_same_process(be: &str) {
    let root = TempRoot::new(&format!("cu-oneproc-{be}"));
    let mut p = publisher(&root, "op", be, 4, Policy::Revoke);
    let mut s = subscriber(&root, "op", be).unwrap();
    let mut last = 0;
    for _ in 0..20 {
        publish_one(&mut p).unwrap();
        let seq = take_and_verify(&mut s, Duration::from_secs(5)).unwrap();
        assert!(seq > last);
        last = seq;
    }
    publish_one(&mut p).unwrap();
    let h = s.acquire(0, Duration::from_secs(5)).unwrap();
    drop(p);
    let g = s.geometry().unwrap();
    let mut host = vec![0u8; h.pitches[0] as usize * g.height as usize];
    s.backend().copy_to_host(&mut host, h.planes[0], 0).unwrap();
    let want = pattern_byte(h.meta.seq, 0);
    assert!(
        host.iter().all(|&b| b == want),
        "held frame changed after the publisher left"
    );
    let _ = s.release(&h, 0);
    match s.acquire(0, Duration::from_millis(300)) {
        Err(Error::WriterGone) | Err(Error::Timeout) => {}
        other => panic!("after the publisher left: {:?}", other.map(|h| h.meta.seq)),
    }
}

/// kill -9 of a subscriber holding frames: the publisher frees its holds and its slot.
fn scenario_kill_subscriber(be: &str) {
    let root = TempRoot::new(&format!("cu-killsub-{be}"));
    let mut p = publisher(&root, "ks", be, 8, Policy::Revoke);
    let mut sub = spawn(root.cli().args([
        "cuframes",
        "subscribe",
        "ks",
        "--backend",
        be,
        "--hold",
        "3",
        "--hold-ms",
        "60000",
    ]));
    wait_for("subscriber attached", 10, || p.stats().subscribers == 1);
    wait_for("subscriber holds a frame", 10, || {
        publish_one(&mut p).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        p.stats().held > 0
    });
    sub.kill9();
    wait_for("holds of the dead subscriber released", 5, || {
        let s = p.stats();
        s.held == 0 && s.subscribers == 0
    });
    // The slot is reusable and frames flow to a new subscriber.
    let mut s = subscriber(&root, "ks", be).unwrap();
    publish_one(&mut p).unwrap();
    let seq = take_and_verify(&mut s, Duration::from_secs(5)).unwrap();
    assert!(seq > 1);
    assert_eq!(p.stats().subscribers, 1);
}

/// kill -9 of the publisher: the subscriber reports it gone, then follows a new publisher.
fn scenario_kill_publisher(be: &str) {
    let root = TempRoot::new(&format!("cu-killpub-{be}"));
    let start = || {
        spawn(root.cli().args([
            "cuframes",
            "publish",
            "kp",
            "--backend",
            be,
            "--size",
            "640x360",
            "--fps",
            "200",
        ]))
    };
    let mut publ = start();
    wait_for("publisher socket", 10, || {
        root.path().join("cuframes-kp.sock").exists()
    });
    let mut s = subscriber(&root, "kp", be).unwrap();
    for _ in 0..10 {
        take_and_verify(&mut s, Duration::from_secs(5)).unwrap();
    }
    let held = s.acquire(0, Duration::from_secs(5)).unwrap();
    publ.kill9();
    match s.acquire(0, Duration::from_millis(800)) {
        Err(Error::WriterGone) => {}
        other => panic!("expected WriterGone, got {:?}", other.map(|h| h.meta.seq)),
    }
    assert!(!s.stats().attached);
    assert!(matches!(s.release(&held, 0), Err(Error::WriterGone)));
    // What the killed publisher left: a control block nobody locks, and its socket.
    let gc = root.cli().args(["gc", "--dry-run"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("kp.cuframes"),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
    let _publ2 = start();
    let seq = take_and_verify(&mut s, Duration::from_secs(10)).unwrap();
    assert!(seq < 100, "a new publisher counts from 1 again (got {seq})");
    for _ in 0..10 {
        take_and_verify(&mut s, Duration::from_secs(5)).unwrap();
    }
    let st = s.stats();
    assert_eq!(st.attaches, 2, "{st:?}");
    assert!(st.attached);
    // A live publisher's files are not garbage.
    let gc = root.cli().arg("gc").output().unwrap();
    assert!(!String::from_utf8_lossy(&gc.stdout).contains("kp.cuframes"));
    assert!(root.path().join("cuframes-kp.sock").exists());
}

#[test]
fn host_backend_gc_removes_what_a_killed_publisher_left() {
    let root = TempRoot::new("cu-gc");
    let mut publ = spawn(
        root.cli()
            .args(["cuframes", "publish", "g1", "--backend", "host"]),
    );
    let sock = root.path().join("cuframes-g1.sock");
    wait_for("publisher socket", 10, || sock.exists());
    publ.kill9();
    assert!(root.path().join("g1.cuframes").exists() && sock.exists());
    let out = root.cli().arg("gc").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("g1.cuframes and its socket"));
    assert!(!root.path().join("g1.cuframes").exists() && !sock.exists());
}

// ---------------------------------------------------------------- host backend (everywhere)

#[test]
fn host_backend_pattern_verified_across_processes() {
    scenario_pattern_across_processes("host");
}

#[test]
fn host_backend_slow_subscriber_is_revoked_and_never_stalls_the_publisher() {
    scenario_slow_subscriber("host", Policy::Revoke);
}

#[test]
fn host_backend_skip_policy_drops_frames_instead() {
    scenario_slow_subscriber("host", Policy::Skip);
}

#[test]
fn host_backend_publisher_and_subscriber_in_one_process() {
    scenario_same_process("host");
}

#[test]
fn host_backend_killed_subscriber_releases_its_holds() {
    scenario_kill_subscriber("host");
}

#[test]
fn host_backend_subscriber_follows_a_killed_and_restarted_publisher() {
    scenario_kill_publisher("host");
}

#[test]
fn host_backend_c_publisher_and_c_subscriber_with_wrong_use() {
    let root = TempRoot::new("cu-c");
    let exe = compile("cuframes", &[]);
    let asan = compile("cuframes", ASAN);
    let run = |exe: &std::path::Path, args: &[&str]| {
        let mut c = Command::new(exe);
        c.args(args)
            .env("FC_SHM_DIR", root.path())
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
        c
    };
    // C publisher (under ASan) → the Rust CLI verifies every byte.
    let mut cpub = spawn(&mut run(&asan, &["pub", "cpub", "150"]));
    let mut line = String::new();
    BufReader::new(cpub.child().stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY");
    let out = root
        .cli()
        .args([
            "cuframes",
            "subscribe",
            "cpub",
            "--backend",
            "host",
            "--verify",
            "--frames",
            "100",
        ])
        .output()
        .unwrap();
    let j = json(&out);
    assert!(out.status.success(), "{j}");
    assert_eq!(j["verified"], 100, "{j}");
    let out = cpub.output();
    assert!(
        out.status.success(),
        "C publisher: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("PUBLISHED 150"));

    // Rust CLI publisher → C subscriber (plain and ASan) checks every byte.
    let _publ = spawn(root.cli().args([
        "cuframes",
        "publish",
        "rpub",
        "--backend",
        "host",
        "--size",
        "320x240",
        "--buffers",
        "4",
        "--fps",
        "200",
    ]));
    for exe in [&exe, &asan] {
        let out = run(exe, &["sub", "rpub", "60", "200"]).output().unwrap();
        assert!(
            out.status.success(),
            "C subscriber: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("CHECKED 60"));
    }

    // Version 2 from C, plain and under ASan: packets beside frames and wrong use of each call.
    for exe in [&exe, &asan] {
        let out = run(exe, &["packets", "cpk"]).output().unwrap();
        assert!(
            out.status.success(),
            "C packets: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("PACKETS 100"));
    }
}

fn raw_hello(proto_min: u16, proto_max: u16, backend: u32) -> Vec<u8> {
    Msg::HelloReq {
        proto_min,
        proto_max,
        capabilities: proto::CAPS,
        pid: std::process::id(),
        backend,
        device_uuid: [0; 16],
    }
    .to_bytes()
}

/// Sends `bytes`, returns every message until the publisher closes (or 7 s pass).
fn exchange(sock_path: &std::path::Path, bytes: &[u8]) -> (Vec<Msg>, bool) {
    let mut s = UnixStream::connect(sock_path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    s.write_all(bytes).unwrap();
    let mut dec = proto::Decoder::new();
    let mut msgs = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => dec.push(&buf[..n]),
            Err(_) => break false,
        }
        while let Ok(Some(m)) = dec.next_msg() {
            msgs.push(m);
        }
        if msgs.iter().any(|m| matches!(m, Msg::Buffers(_))) {
            break false; // a handshake that went through; we stop here
        }
    };
    (msgs, closed)
}

fn error_code(msgs: &[Msg]) -> Option<i32> {
    msgs.iter().find_map(|m| match m {
        Msg::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn host_backend_handshake_versions_caps_and_hostile_bytes() {
    let root = TempRoot::new("cu-proto");
    let mut cfg = PublisherConfig::new(PixelFormat::Nv12, 640, 360);
    cfg.backend = BackendChoice::Host;
    cfg.max_subscribers = 1;
    cfg.root = Some(root.path().to_path_buf());
    let mut p = Publisher::create("proto", &cfg).unwrap();
    let sock = root.path().join("cuframes-proto.sock");

    // A v1 subscriber gets v1, its slot, and the buffers (version 2 in §10 tests).
    let (m, _) = exchange(&sock, &raw_hello(1, 1, layout::FC_CUFRAMES_BACKEND_HOST));
    match &m[0] {
        Msg::HelloResp {
            proto_version,
            buffer_count,
            epoch,
            ..
        } => {
            assert_eq!(*proto_version, 1);
            assert_eq!(*buffer_count, 8);
            assert_eq!(*epoch, p.epoch());
        }
        other => panic!("expected HELLO_RESP, got {other:?}"),
    }
    assert!(matches!(&m[1], Msg::Buffers(b) if b.len() == 8));
    // That connection is gone, so its slot is free again.
    wait_for("slot freed", 5, || p.stats().subscribers == 0);

    let host = layout::FC_CUFRAMES_BACKEND_HOST;
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("v3..4 only", raw_hello(3, 4, host), FC_ERR_VERSION),
        (
            "CUDA subscriber on a host publisher",
            raw_hello(1, 1, layout::FC_CUFRAMES_BACKEND_CUDA),
            FC_ERR_WRONG_KIND,
        ),
        (
            "unknown mandatory type",
            vec![0x42, 0, 0, 0, 0, 0, 0, 0],
            FC_ERR_PROTOCOL,
        ),
        (
            "4 GiB length",
            vec![1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            FC_ERR_PROTOCOL,
        ),
        (
            "truncated HELLO",
            {
                let mut b = raw_hello(1, 1, host);
                b[4] = 10;
                b.truncate(8 + 10);
                b
            },
            FC_ERR_PROTOCOL,
        ),
        (
            "SUBSCRIBE before HELLO",
            Msg::Subscribe(vec![[0; 64]; 8]).to_bytes(),
            FC_ERR_PROTOCOL,
        ),
        (
            "wrong magic",
            {
                let mut b = raw_hello(1, 1, host);
                b[8] = b'X';
                b
            },
            FC_ERR_PROTOCOL,
        ),
        ("silence", Vec::new(), FC_ERR_TIMEOUT),
    ];
    for (name, bytes, code) in cases {
        let (m, closed) = exchange(&sock, &bytes);
        assert_eq!(error_code(&m), Some(code), "{name}: {m:?}");
        assert!(closed, "{name}: the publisher closes after ERROR");
    }
    // Bad SUBSCRIBE after a good HELLO: handles that open nothing.
    let mut bytes = raw_hello(1, 1, host);
    bytes.extend(Msg::Subscribe(vec![[7; 64]; 8]).to_bytes());
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let mut dec = proto::Decoder::new();
    dec.push(&all);
    let mut msgs = Vec::new();
    while let Ok(Some(m)) = dec.next_msg() {
        msgs.push(m);
    }
    assert!(error_code(&msgs).is_some(), "{msgs:?}");

    // An optional unknown message before HELLO is skipped.
    let mut bytes = vec![0x01, 0x80, 0, 0, 3, 0, 0, 0, 1, 2, 3];
    bytes.extend(raw_hello(1, 1, host));
    let (m, _) = exchange(&sock, &bytes);
    assert!(matches!(m[0], Msg::HelloResp { .. }), "{m:?}");
    wait_for("slot freed", 5, || p.stats().subscribers == 0);

    // The Rust subscriber: version refused, then the cap of one subscriber.
    let v3 = SubscriberConfig {
        backend: BackendChoice::Host,
        root: Some(root.path().to_path_buf()),
        proto_range: (3, 4),
    };
    assert!(matches!(
        Subscriber::open("proto", &v3),
        Err(Error::Version { .. })
    ));
    wait_for("slot freed", 5, || {
        p.stats().subscribers == 0 && p.stats().held == 0
    });
    let mut first = subscriber(&root, "proto", "host").unwrap();
    match subscriber(&root, "proto", "host") {
        Err(Error::Rejected(msg)) => assert!(msg.contains("subscriber slots"), "{msg}"),
        other => panic!("expected Rejected, got {:?}", other.map(|_| ())),
    }
    // After all that the publisher still serves.
    publish_one(&mut p).unwrap();
    take_and_verify(&mut first, Duration::from_secs(5)).unwrap();
    assert!(matches!(
        subscriber(&root, "nope", "host"),
        Err(Error::NotFound(_))
    ));
}

// ---------------------------------------------------------------- version 2: packets

/// An H.264 + AAC MPEG-TS file made by Debian's ffmpeg (4 s, 320x240, 30 fps, a keyframe every
/// 15 frames), or `None` (skipped) without ffmpeg.
fn sample_ts(root: &TempRoot) -> Option<std::path::PathBuf> {
    if !common::have("ffmpeg") {
        skip("ffmpeg is not installed (scripts/test.sh installs it)");
        return None;
    }
    let file = root.path().join("sample.ts");
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
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
            "15",
            "-bf",
            "0",
        ])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(file)
}

/// One access unit of the sample as the test's own demux of the file sees it.
#[derive(Clone, PartialEq)]
struct Unit {
    stream: u32,
    pts: i64,
    dts: i64,
    key: bool,
    data: Vec<u8>,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum = self
            .data
            .iter()
            .fold(0u32, |a, &b| a.wrapping_mul(31).wrapping_add(b.into()));
        write!(
            f,
            "Unit(stream {} pts {} dts {} key {} {} bytes, sum {sum:08x})",
            self.stream,
            self.pts,
            self.dts,
            self.key,
            self.data.len()
        )
    }
}

/// The file's units in order, and the parameters of each stream (first seen).
fn demux(file: &std::path::Path) -> (Vec<Unit>, BTreeMap<u32, Vec<u8>>) {
    use framecache::ts::{Demuxer, Event};
    let bytes = std::fs::read(file).unwrap();
    let mut d = Demuxer::new();
    let mut events = d.push(&bytes);
    events.extend(d.flush());
    let pids: Vec<u16> = events
        .iter()
        .find_map(|e| match e {
            Event::Streams(s) => Some(s.iter().map(|s| s.pid).collect()),
            _ => None,
        })
        .unwrap();
    let index = |pid: u16| pids.iter().position(|&p| p == pid).unwrap() as u32;
    let (mut units, mut params) = (Vec::new(), BTreeMap::new());
    for e in events {
        match e {
            Event::Params { pid, data, .. } => {
                params.entry(index(pid)).or_insert(data);
            }
            Event::Unit(u) if !u.data.is_empty() => units.push(Unit {
                stream: index(u.pid),
                pts: u.pts.unwrap_or(framecache::packet::FC_NOPTS),
                dts: u.dts.unwrap_or(framecache::packet::FC_NOPTS),
                key: u.keyframe,
                data: u.data,
            }),
            _ => {}
        }
    }
    (units, params)
}

/// Reads packets until `n` were read or the publisher is gone; checks that they are a
/// contiguous run of `want`, byte for byte, starting at a video keyframe (or, `continued`, at
/// `want[0]`). Returns (index in `want` of the first, count).
fn read_run(s: &mut Subscriber, want: &[Unit], n: usize, continued: bool) -> (usize, usize) {
    let mut buf = Vec::new();
    let mut start = continued.then_some(0);
    let mut k = 0;
    while k < n {
        let info = match s.next_packet(&mut buf, Duration::from_secs(5)) {
            Ok(i) => i,
            Err(Error::WriterGone) | Err(Error::Timeout) => break,
            Err(e) => panic!("next_packet: {e}"),
        };
        let got = Unit {
            stream: info.stream,
            pts: info.pts,
            dts: info.dts,
            key: info.flags & framecache::packet::FC_PACKET_KEYFRAME != 0,
            data: buf.clone(),
        };
        let at = *start.get_or_insert_with(|| {
            let at = want
                .iter()
                .position(|u| *u == got)
                .unwrap_or_else(|| panic!("first packet {info:?} is not a unit of the file"));
            assert!(
                got.key && got.stream == 0,
                "starts at a video keyframe: {info:?}"
            );
            at
        });
        assert_eq!(
            want.get(at + k),
            Some(&got),
            "packet {k} after the start (seq {})",
            info.seq
        );
        k += 1;
    }
    (start.unwrap_or(0), k)
}

fn packet_publisher(root: &TempRoot, key: &str, file: &std::path::Path, extra: &[&str]) -> Reaper {
    let mut c = root.cli();
    c.args([
        "cuframes",
        "publish",
        key,
        "--backend",
        "host",
        "--size",
        "320x240",
    ])
    .args([
        "--fps",
        "30",
        "--frames",
        "150",
        "--linger-ms",
        "3000",
        "--packets",
    ])
    .arg(file)
    .args(extra);
    let r = spawn(&mut c);
    wait_for("publisher socket", 10, || {
        root.path().join(format!("cuframes-{key}.sock")).exists()
    });
    r
}

/// A publisher process puts an H.264 + AAC stream from a real file beside its frames: a v2
/// subscriber reads every packet byte-identical with its codec parameters, a late one starts at
/// a keyframe, a v1-only subscriber takes frames as before, a killed packet reader costs the
/// publisher nothing.
#[test]
fn host_backend_packets_beside_frames_between_processes() {
    let root = TempRoot::new("cu-packets");
    let Some(file) = sample_ts(&root) else {
        return;
    };
    let (units, params) = demux(&file);
    assert!(units.len() > 150, "{} units", units.len());
    let publ = packet_publisher(&root, "enc", &file, &[]);
    assert!(root.path().join("cuframes-enc-packets.packets").exists());

    let mut a = subscriber(&root, "enc", "host").unwrap();
    assert_eq!(a.stats().proto_version, 2);
    let streams = a.packet_streams(Duration::from_secs(5)).unwrap();
    assert_eq!(streams.len(), 2, "{streams:?}");
    assert_eq!(
        (streams[0].codec_name, streams[0].width, streams[0].height),
        ("h264", 320, 240)
    );
    assert_eq!(
        (streams[1].codec_name, streams[1].sample_rate),
        ("aac", 48000)
    );
    // Frames and packets from one handshake.
    take_and_verify(&mut a, Duration::from_secs(5)).unwrap();
    let (first_a, n) = read_run(&mut a, &units, 40, false);
    assert_eq!(n, 40);
    for st in 0..2 {
        let (gen, data) = a.codec_params(st, 0).unwrap();
        assert!(gen >= 1);
        assert_eq!(Some(&data), params.get(&st), "stream {st} parameters");
    }

    // A packet reader killed with -9 (the CLI): the publisher does not notice beyond its slot.
    let mut killed = spawn(root.cli().args([
        "cuframes",
        "subscribe",
        "enc",
        "--backend",
        "host",
        "--packets",
        "100000",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    killed.kill9();

    // A late subscriber starts at a keyframe after the first one's start.
    let mut b = subscriber(&root, "enc", "host").unwrap();
    let (first_b, n_b) = read_run(&mut b, &units, 20, false);
    assert_eq!(n_b, 20);
    assert!(first_b > first_a, "late start {first_b} after {first_a}");

    // A v1-only subscriber (offers 1..1): frames as ever, no packets.
    let v1 = SubscriberConfig {
        backend: BackendChoice::Host,
        root: Some(root.path().to_path_buf()),
        proto_range: (1, 1),
    };
    let mut c = Subscriber::open("enc", &v1).unwrap();
    assert_eq!(c.stats().proto_version, 1);
    take_and_verify(&mut c, Duration::from_secs(5)).unwrap();
    let e = c
        .next_packet(&mut Vec::new(), Duration::from_millis(100))
        .unwrap_err();
    assert_eq!(e.code(), FC_ERR_NO_PACKET_RING, "{e}");
    drop(c);

    // The first subscriber reads on to the end of the file without a gap.
    let (_, rest) = read_run(&mut a, &units[first_a + 40..], usize::MAX, true);
    assert_eq!(
        first_a + 40 + rest,
        units.len(),
        "every packet after the start, in order"
    );
    let out = publ.output();
    let j = json(&out);
    assert!(out.status.success(), "{j}");
    assert_eq!(j["published"], 150, "{j}");
    assert_eq!(j["packets"], units.len(), "{j}");
}

/// Mixed versions over the real socket (CUFRAMES.md §10.3), raw and with the library.
#[test]
fn host_backend_packets_mixed_versions() {
    let root = TempRoot::new("cu-packets-v");
    let mut cfg = PublisherConfig::new(PixelFormat::Nv12, 320, 240);
    cfg.backend = BackendChoice::Host;
    cfg.root = Some(root.path().to_path_buf());
    cfg.packet_streams = vec![framecache::packet::StreamConfig::new(
        framecache::packet::FC_CODEC_H264,
    )];
    let mut p = Publisher::create("mix", &cfg).unwrap();
    assert_eq!(p.packet_slot(), Some("cuframes-mix-packets"));
    let key = [0, 0, 0, 1, 0x65, 0x88];
    let seq = p
        .publish_packet(&framecache::packet::Packet {
            stream: 0,
            pts: 0,
            dts: 0,
            flags: framecache::packet::FC_PACKET_KEYFRAME,
            data: &key,
        })
        .unwrap();
    let sock = root.path().join("cuframes-mix.sock");
    let host = layout::FC_CUFRAMES_BACKEND_HOST;

    // v2 subscriber, raw: HELLO_RESP v2 with PACKET_RING, then PACKET_RING, then BUFFERS.
    let (m, _) = exchange(&sock, &raw_hello(1, 2, host));
    match &m[0] {
        Msg::HelloResp {
            proto_version: 2,
            capabilities,
            ..
        } => {
            assert_ne!(capabilities & proto::CAP_PACKET_RING, 0)
        }
        other => panic!("expected HELLO_RESP v2, got {other:?}"),
    }
    assert_eq!(
        m[1],
        Msg::PacketRing {
            initial_packet_seq: seq,
            stream_count: 1,
            name: "cuframes-mix-packets".into()
        }
    );
    assert!(matches!(&m[2], Msg::Buffers(b) if b.len() == 8), "{m:?}");
    wait_for("slot freed", 5, || p.stats().subscribers == 0);
    // v1 subscriber, raw, offering every capability bit: exactly the v1 exchange.
    let (m, _) = exchange(&sock, &raw_hello(1, 1, host));
    match &m[0] {
        Msg::HelloResp {
            proto_version: 1,
            capabilities,
            ..
        } => {
            assert_eq!(capabilities & proto::CAP_PACKET_RING, 0)
        }
        other => panic!("expected HELLO_RESP v1, got {other:?}"),
    }
    assert!(
        matches!(&m[1], Msg::Buffers(_)),
        "v1 sees no PACKET_RING: {m:?}"
    );
    wait_for("slot freed", 5, || p.stats().subscribers == 0);
    // Versions only above ours.
    let (m, _) = exchange(&sock, &raw_hello(3, 4, host));
    assert_eq!(error_code(&m), Some(FC_ERR_VERSION), "{m:?}");

    // The library's v2 subscriber reads the packet published before it came (a keyframe).
    let mut s = subscriber(&root, "mix", "host").unwrap();
    let mut buf = Vec::new();
    let info = s.next_packet(&mut buf, Duration::from_secs(2)).unwrap();
    assert_eq!((info.seq, buf.as_slice()), (seq, &key[..]));
    let e = s.codec_params(0, 0).unwrap_err();
    assert_eq!(e.code(), FC_ERR_NO_CODEC_PARAMS, "{e}");
    p.set_codec_params(0, &[0, 0, 0, 1, 0x67, 1, 2]).unwrap();
    assert_eq!(
        s.codec_params(0, 0).unwrap(),
        (1, vec![0, 0, 0, 1, 0x67, 1, 2])
    );
    let big = vec![0u8; (32 << 20) / 4 + 1];
    let e = p
        .publish_packet(&framecache::packet::Packet {
            stream: 0,
            pts: 1,
            dts: 1,
            flags: 0,
            data: &big,
        })
        .unwrap_err();
    assert_eq!(e.code(), FC_ERR_OVERSIZED, "{e}");
    drop(s);
    drop(p);
    assert!(
        !root.path().join("cuframes-mix-packets.packets").exists(),
        "removed with the publisher"
    );

    // A publisher acting as v1 (with packets it cannot announce) and a v2 publisher without
    // packet streams: the v2 subscriber takes frames and gets NO_PACKET_RING for packets.
    for (proto_max, streams, version) in [(1u16, 1usize, 1u16), (2, 0, 2)] {
        let mut cfg = cfg.clone();
        cfg.proto_max = proto_max;
        cfg.packet_streams.truncate(streams);
        let mut p = Publisher::create("mix", &cfg).unwrap();
        let mut s = subscriber(&root, "mix", "host").unwrap();
        assert_eq!(s.stats().proto_version, version);
        publish_one(&mut p).unwrap();
        take_and_verify(&mut s, Duration::from_secs(5)).unwrap();
        let e = s
            .next_packet(&mut buf, Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(
            e.code(),
            FC_ERR_NO_PACKET_RING,
            "v{proto_max} publisher, {streams} streams: {e}"
        );
    }

    // A key too long for its packet slot's id is refused with the reason.
    let long = "k".repeat(48);
    match Publisher::create(&long, &cfg) {
        Err(Error::InvalidArg(m)) => assert!(m.contains("47"), "{m}"),
        other => panic!("expected InvalidArg, got {:?}", other.map(|_| ())),
    }
}

/// A subscriber that falls more than the ring behind resumes at a keyframe with every packet
/// it gets intact; kill -9 of the publisher: the packets left are read, then WriterGone, then
/// the restarted publisher's stream with a discontinuity.
#[test]
fn host_backend_packets_fall_behind_and_follow_a_killed_publisher() {
    let root = TempRoot::new("cu-packets-k");
    let mut cfg = PublisherConfig::new(PixelFormat::Nv12, 320, 240);
    cfg.backend = BackendChoice::Host;
    cfg.root = Some(root.path().to_path_buf());
    cfg.packet_streams = vec![framecache::packet::StreamConfig::new(
        framecache::packet::FC_CODEC_H264,
    )];
    cfg.packet_payload_size = 1 << 20;
    let mut p = Publisher::create("lag", &cfg).unwrap();
    // Packet i: 20 KiB of (i mod 251), a keyframe every 10.
    let body = |i: u64| vec![(i % 251) as u8; 20 << 10];
    let publish = |p: &mut Publisher, i: u64| {
        let flags = if i.is_multiple_of(10) {
            framecache::packet::FC_PACKET_KEYFRAME
        } else {
            0
        };
        p.publish_packet(&framecache::packet::Packet {
            stream: 0,
            pts: i as i64,
            dts: i as i64,
            flags,
            data: &body(i),
        })
        .unwrap()
    };
    publish(&mut p, 0);
    let mut s = subscriber(&root, "lag", "host").unwrap();
    let mut buf = Vec::new();
    for i in 1..5 {
        publish(&mut p, i);
    }
    for i in 0..5 {
        let info = s.next_packet(&mut buf, Duration::from_secs(2)).unwrap();
        assert_eq!((info.pts, &buf), (i, &body(i as u64)));
    }
    // 200 packets of 20 KiB through a 1 MiB ring while the subscriber sleeps.
    for i in 5..205 {
        publish(&mut p, i);
    }
    let info = s.next_packet(&mut buf, Duration::from_secs(2)).unwrap();
    assert_eq!(info.pts % 10, 0, "resumes at a keyframe: {info:?}");
    assert!(info.pts > 150, "and at one still in the ring: {info:?}");
    assert_eq!(buf, body(info.pts as u64), "intact");
    assert!(
        info.skipped > 0 && s.stats().packets_skipped > 0,
        "{info:?}"
    );
    let mut last = info.pts;
    while let Ok(info) = s.next_packet(&mut buf, Duration::from_millis(200)) {
        assert_eq!((info.pts, &buf), (last + 1, &body(last as u64 + 1)));
        last = info.pts;
    }
    assert_eq!(last, 204);
    drop(s);
    drop(p);

    // kill -9 of a publisher process: what it left in the ring is read, then WriterGone; a
    // restarted publisher is followed, its first packet flagged as a discontinuity.
    let Some(file) = sample_ts(&root) else {
        return;
    };
    let (units, _) = demux(&file);
    let mut publ = packet_publisher(&root, "kp", &file, &[]);
    let mut s = subscriber(&root, "kp", "host").unwrap();
    let (first, n) = read_run(&mut s, &units, 10, false);
    assert_eq!(n, 10);
    std::thread::sleep(Duration::from_millis(300));
    publ.kill9();
    let mut drained = 0;
    let gone = loop {
        match s.next_packet(&mut buf, Duration::from_millis(800)) {
            Ok(info) => {
                assert_eq!(units[first + 10 + drained].data, buf, "{info:?}");
                drained += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(gone, Error::WriterGone), "{gone}");
    assert!(
        drained > 0,
        "the packets published before the kill are still read"
    );
    let _publ2 = packet_publisher(&root, "kp", &file, &[]);
    let info = s.next_packet(&mut buf, Duration::from_secs(10)).unwrap();
    assert_ne!(
        info.flags & framecache::packet::FC_PACKET_DISCONTINUITY,
        0,
        "{info:?}"
    );
    assert_ne!(
        info.flags & framecache::packet::FC_PACKET_KEYFRAME,
        0,
        "{info:?}"
    );
    assert_eq!(s.stats().attaches, 2);
}

// ---------------------------------------------------------------- no GPU / GPU

#[test]
fn without_cuda_every_cuda_call_is_no_cuda_and_the_rest_works() {
    if cuda_available() {
        skip("CUDA is available on this machine (this test is for machines without)");
        return;
    }
    let root = TempRoot::new("cu-nocuda");
    let mut cfg = PublisherConfig::new(PixelFormat::Nv12, 640, 360);
    cfg.root = Some(root.path().to_path_buf());
    assert!(matches!(
        Publisher::create("g", &cfg),
        Err(Error::NoCuda(_))
    ));
    assert!(matches!(
        subscriber(&root, "g", "cuda"),
        Err(Error::NoCuda(_))
    ));
    let out = root
        .cli()
        .args(["cuframes", "publish", "g", "--frames", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUDA not available"));
    let exe = compile("cuframes", &[]);
    let out = Command::new(exe).arg("nocuda").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was left behind, and the host backend works in the same process.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    let mut p = publisher(&root, "h", "host", 4, Policy::Revoke);
    let mut s = subscriber(&root, "h", "host").unwrap();
    publish_one(&mut p).unwrap();
    take_and_verify(&mut s, Duration::from_secs(5)).unwrap();
}

fn gpu() -> bool {
    if cuda_available() {
        true
    } else {
        skip("no CUDA driver or device on this machine (the host_backend_* tests ran the same scenarios)");
        false
    }
}

#[test]
fn cuda_pattern_verified_across_processes() {
    if gpu() {
        scenario_pattern_across_processes("cuda");
    }
}

#[test]
fn cuda_slow_subscriber_is_revoked_and_never_stalls_the_publisher() {
    if gpu() {
        scenario_slow_subscriber("cuda", Policy::Revoke);
        scenario_slow_subscriber("cuda", Policy::Skip);
    }
}

#[test]
fn cuda_publisher_and_subscriber_in_one_process() {
    if gpu() {
        scenario_same_process("cuda");
    }
}

#[test]
fn cuda_kill_either_side_and_the_other_recovers() {
    if gpu() {
        scenario_kill_subscriber("cuda");
        scenario_kill_publisher("cuda");
    }
}

//! Frame-ring benchmark: framecache against iceoryx2, GStreamer's shmsink/shmsrc, a pipe and a
//! Unix stream socket, in separate processes, as a capture process and its consumers would run.
//!
//! `cargo bench --bench frame_ring` prints markdown tables ready for README.md:
//!
//! 1. framecache ÷ iceoryx2 (frames/s, CPU per frame, loss, wake-up latency; the writer copying
//!    in or filling in place; framecache also with a ring of 4 frames) and ÷ GStreamer, and a
//!    slow reader against a flat-out writer;
//! 2. memcpy ceiling: one thread copying frames from buffers larger than the caches into
//!    ring-like page-aligned slots;
//! 3. throughput with 1, 4 and 8 reader processes, 1080p and 2160p UYVY, for every transport;
//! 4. writer bandwidth with no reader, against the memcpy ceiling;
//! 5. publish→wake latency percentiles.
//!
//! The peers run from `benches/anchors/` (`iox_anchor`, built on first use in a workspace of its
//! own; `gst_anchor.py` with Debian's python3-gst-1.0); where one cannot run, its rows are left
//! out and the report says why.
//!
//! The binary re-executes itself (`current_exe()`) with [`CHILD_ARG`] and `key=value` arguments
//! for every writer and reader: the parent only orchestrates. Children report back over their
//! stdout (`ready`, then one `result k=v ...` line); the writer starts on a `go` line on its
//! stdin, sent once every reader is attached. All clocks are CLOCK_MONOTONIC, shared by the
//! processes, so the parent can compare timestamps taken in different children.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use framecache::slot::monotonic_ns;
use framecache::{
    Consumer, ConsumerConfig, Error, FrameGeometry, FrameMeta, PixelFormat, Producer, ReadMode,
    SlotConfig, StartAt,
};

mod common;
use common::frames::*;
use common::*;

/// Slot id used in the private root.
const SLOT: &str = "bench";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        child_main(&args[2..]);
        return;
    }
    // cargo passes `--bench` (and maybe filters); this harness takes no options.
    parent_main();
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

fn frame_size(w: u32, h: u32) -> usize {
    FrameGeometry::new(PixelFormat::Uyvy, w, h, 1)
        .expect("geometry")
        .frame_size as usize
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

fn child_main(args: &[String]) {
    let kv = parse_kv(args.iter().map(String::as_str));
    let role: String = get(&kv, "role");
    let transport: String = get(&kv, "transport");
    match (role.as_str(), transport.as_str()) {
        ("writer", "ring" | "ringcopy" | "ringfill") => ring_writer(&kv, transport == "ringfill"),
        ("writer", "pipe" | "socket") => stream_writer(&kv),
        ("reader", "ring" | "ringfill") => ring_reader(&kv, false),
        ("reader", "ringcopy") => ring_reader(&kv, true),
        ("reader", "pipe" | "socket") => stream_reader(&kv),
        ("memcpy", _) => memcpy_child(&kv),
        other => panic!("unknown child role {other:?}"),
    }
}

/// The ring's writer: copies each frame from the rotating sources (`write`), or with `fill`
/// fills it in place in the ring (`acquire`/`commit`, the zero-copy way, as iceoryx2's loan).
fn ring_writer(kv: &Kv, fill: bool) {
    let root = PathBuf::from(get::<String>(kv, "root"));
    let (w, h, n): (u32, u32, u64) = (get(kv, "w"), get(kv, "h"), get(kv, "frames"));
    let mut cfg = SlotConfig::new(PixelFormat::Uyvy, w, h);
    cfg.depth = get(kv, "depth");
    cfg.source_type = "bench".into();
    let mut p = Producer::create_in(&root, SLOT, &cfg).expect("create slot");
    let srcs = if fill {
        Vec::new()
    } else {
        sources(frame_size(w, h))
    };
    say("ready");
    wait_go();
    let (c0, t0) = (cpu_ns(), monotonic_ns());
    let pacer = Pacer::new(kv, t0);
    let mut written = 0;
    while written < n && pacer.next(written) {
        let i = written;
        let meta = FrameMeta {
            pts: i as i64,
            ..Default::default()
        };
        if fill {
            let mut f = p.acquire().expect("acquire");
            let d = f.data();
            // SAFETY: the frame's memory, d.len() bytes.
            unsafe { fill_in_place(d.as_mut_ptr(), d.len(), i) };
            f.commit(meta).expect("commit");
        } else {
            // One memcpy per frame from a buffer the "capture" filled, as a real source would.
            p.write(&srcs[i as usize % srcs.len()], meta)
                .expect("write");
        }
        written += 1;
    }
    let (t1, c1) = (monotonic_ns(), cpu_ns());
    // Tearing down the writer's mapping right after its last publish delayed the reader's
    // wake-up for that frame by 1-3 ms on 2 cores (the p99.9 of a 284-sample run was that one
    // frame). The iceoryx2 and GStreamer writers stay up until the readers are done, so this
    // one lingers too, for longer than a paced frame would take.
    std::thread::sleep(Duration::from_millis(50));
    drop(p); // readers keep their mapping, drain what is left, then see WriterGone
    say(&format!(
        "result start_ns={t0} end_ns={t1} frames={written} cpu_ns={}",
        c1 - c0
    ));
}

/// The memcpy ceiling: the ring writer's copies without the ring. Same source frames, same
/// primitive (libc memcpy through `copy_nonoverlapping`), destinations laid out like ring
/// slots (page-aligned, `depth` of them, pre-faulted like the writer's MAP_POPULATE).
fn memcpy_child(kv: &Kv) {
    let (w, h, depth): (u32, u32, usize) = (get(kv, "w"), get(kv, "h"), get(kv, "depth"));
    let size = frame_size(w, h);
    let srcs = sources(size);
    let stride = size.next_multiple_of(PAGE);
    let layout = std::alloc::Layout::from_size_align(stride * depth, PAGE).expect("layout");
    // SAFETY: non-zero size; freed below with the same layout.
    let base = unsafe { std::alloc::alloc(layout) };
    assert!(!base.is_null(), "out of memory");
    unsafe { std::ptr::write_bytes(base, 0x55, stride * depth) };
    say("ready");
    wait_go();
    let (c0, t0) = (cpu_ns(), monotonic_ns());
    let pacer = Pacer::new(kv, t0);
    let mut n = 0u64;
    while pacer.next(n) {
        let k = n as usize;
        // SAFETY: slot k % depth lies inside the allocation; sources hold `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                srcs[k % srcs.len()].as_ptr(),
                base.add((k % depth) * stride),
                size,
            )
        };
        n += 1;
    }
    let (t1, c1) = (monotonic_ns(), cpu_ns());
    std::hint::black_box(base);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(base, layout) };
    say(&format!(
        "result start_ns={t0} end_ns={t1} frames={n} cpu_ns={}",
        c1 - c0
    ));
}

fn stream_writer(kv: &Kv) {
    let (w, h, n): (u32, u32, u64) = (get(kv, "w"), get(kv, "h"), get(kv, "frames"));
    let nfds: usize = get(kv, "fds");
    let fds: Vec<RawFd> = (0..nfds).map(|i| FD_BASE + i as RawFd).collect();
    for &fd in &fds {
        // SAFETY: fd was dup2'd into this process by the parent before exec.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            assert!(fl >= 0, "fd {fd} missing");
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let mut srcs = sources(frame_size(w, h));
    let mut off = vec![0usize; nfds];
    let mut pfds = Vec::with_capacity(nfds);
    say("ready");
    wait_go();
    let (c0, t0) = (cpu_ns(), monotonic_ns());
    let pacer = Pacer::new(kv, t0);
    let mut written = 0;
    while written < n && pacer.next(written) {
        let k = written as usize % srcs.len();
        // Header: the send time, taken right before the first write() of the frame.
        srcs[k][..8].copy_from_slice(&monotonic_ns().to_le_bytes());
        broadcast(&fds, &srcs[k], &mut off, &mut pfds);
        written += 1;
    }
    let (t1, c1) = (monotonic_ns(), cpu_ns());
    // Exiting closes the write ends: readers see EOF after the last frame.
    say(&format!(
        "result start_ns={t0} end_ns={t1} frames={written} cpu_ns={}",
        c1 - c0
    ));
}

fn ring_reader(kv: &Kv, copy: bool) {
    let root = PathBuf::from(get::<String>(kv, "root"));
    let hold_ms: u64 = get(kv, "hold_ms");
    let n: u64 = get(kv, "frames");
    let cfg = ConsumerConfig {
        mode: ReadMode::Sequential,
        start: StartAt::Oldest,
    };
    // The parent starts readers after the writer created the slot; retry anyway.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match Consumer::open_in(&root, SLOT, cfg) {
            Ok(c) => break c,
            Err(Error::NotFound(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("open slot: {e}"),
        }
    };
    let mut buf = vec![
        0u8;
        if copy {
            c.geometry().frame_size as usize
        } else {
            0
        }
    ];
    let mut t = ReaderTally {
        lat: Vec::with_capacity(n as usize),
        ..Default::default()
    };
    say("ready");
    let c0 = cpu_ns();
    // Short waits: a time-capped writer's end shows up as WriterGone one timeout after it
    // closed (not counted: last_ns is the last frame's time).
    let timeout = Duration::from_millis(100);
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let got = if copy {
            c.read_copy(&mut buf, timeout).map(|info| {
                let now = monotonic_ns();
                touch(&buf);
                (info.seq, info.publish_ns, now, true)
            })
        } else {
            c.read(timeout).map(|f| {
                let now = monotonic_ns();
                touch(f.data());
                // Only an intact view counts as delivered: the writer may have lapped us.
                (f.info.seq, f.info.publish_ns, now, f.is_intact())
            })
        };
        match got {
            Ok((seq, publish_ns, now, intact)) => {
                if hold_ms > 0 {
                    std::thread::sleep(Duration::from_millis(hold_ms));
                }
                if intact {
                    t.delivered += 1;
                    t.last_ns = now;
                    t.lat.push(now.saturating_sub(publish_ns));
                } else {
                    t.torn += 1;
                }
                if seq + 1 >= n {
                    break;
                }
            }
            Err(Error::WriterGone) => break,
            Err(Error::Timeout) if Instant::now() < give_up => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let cpu = cpu_ns() - c0;
    t.skipped = c.stats().frames_skipped;
    t.report(get(kv, "warmup"), cpu);
}

/// Reads exactly `buf.len()` bytes from `fd`; false on EOF.
fn read_full(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: in-bounds pointer and length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().add(off).cast(), buf.len() - off) };
        if r > 0 {
            off += r as usize;
        } else if r == 0 {
            return false;
        } else if errno() != libc::EINTR {
            panic!("read from writer: errno {}", errno());
        }
    }
    true
}

fn stream_reader(kv: &Kv) {
    let (w, h, n): (u32, u32, u64) = (get(kv, "w"), get(kv, "h"), get(kv, "frames"));
    let mut buf = vec![0u8; frame_size(w, h)];
    let mut t = ReaderTally {
        lat: Vec::with_capacity(n as usize),
        ..Default::default()
    };
    say("ready");
    let c0 = cpu_ns();
    // The data stream is our stdin.
    while t.delivered < n && read_full(0, &mut buf) {
        let now = monotonic_ns();
        touch(&buf);
        let sent = u64::from_le_bytes(buf[..8].try_into().unwrap());
        t.delivered += 1;
        t.last_ns = now;
        t.lat.push(now.saturating_sub(sent));
    }
    let cpu = cpu_ns() - c0;
    t.report(get(kv, "warmup"), cpu);
}

// ---------------------------------------------------------------------------------------------
// Parent: orchestration
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Ring,
    RingCopy,
    Pipe,
    Socket,
    /// framecache, the writer filling each frame in place (`acquire`/`commit`), `read`.
    RingFill,
    /// iceoryx2 publish-subscribe, the writer copying from the same sources, zero-copy receive.
    IoxCopy,
    /// iceoryx2, the writer filling each loaned sample in place.
    IoxZc,
    /// GStreamer 1.22 `appsrc ! shmsink` → `shmsrc ! appsink` (PyGObject).
    GstShm,
}

impl Transport {
    fn arg(self) -> &'static str {
        match self {
            Transport::Ring => "ring",
            Transport::RingCopy => "ringcopy",
            Transport::Pipe => "pipe",
            Transport::Socket => "socket",
            Transport::RingFill => "ringfill",
            Transport::IoxCopy => "ioxcopy",
            Transport::IoxZc => "ioxzc",
            Transport::GstShm => "gstshm",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Transport::Ring => "framecache `read` (zero-copy)",
            Transport::RingCopy => "framecache `read_copy`",
            Transport::Pipe => "pipe per reader",
            Transport::Socket => "Unix socket per reader",
            Transport::RingFill => "framecache, writer fills in place (`acquire`/`commit`)",
            Transport::IoxCopy => "iceoryx2, writer copies in",
            Transport::IoxZc => "iceoryx2, writer fills the loan in place",
            Transport::GstShm => "GStreamer shmsink → shmsrc",
        }
    }
}

#[derive(Clone, Copy)]
struct Res {
    name: &'static str,
    w: u32,
    h: u32,
    depth: u32,
}

const P1080: Res = Res {
    name: "1080p",
    w: 1920,
    h: 1080,
    depth: 120,
};
const P2160: Res = Res {
    name: "2160p",
    w: 3840,
    h: 2160,
    depth: 32,
};
const TINY: Res = Res {
    name: "64x64",
    w: 64,
    h: 64,
    depth: 16,
};

struct Case {
    t: Transport,
    res: Res,
    depth: u32,
    frames: u64,
    readers: usize,
    fps: u32,
    /// Time cap of the writer, ms (0 = none: it writes all `frames`).
    max_ms: u64,
    warmup: usize,
    /// Readers sleep this long after each frame (a slow consumer), ms.
    hold_ms: u64,
}

/// A socketpair or a pipe: (writer end, reader end), both O_CLOEXEC, buffers enlarged.
fn stream_pair(t: Transport) -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid out-array; the fds are owned right after.
    unsafe {
        if t == Transport::Pipe {
            assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
            // Best effort: an unprivileged user is capped at /proc/sys/fs/pipe-max-size.
            libc::fcntl(fds[1], F_SETPIPE_SZ, STREAM_BUF);
            (OwnedFd::from_raw_fd(fds[1]), OwnedFd::from_raw_fd(fds[0]))
        } else {
            let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
            assert_eq!(
                libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()),
                0,
                "socketpair"
            );
            for (fd, opt) in [(fds[0], libc::SO_SNDBUF), (fds[1], libc::SO_RCVBUF)] {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&STREAM_BUF as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }
}

/// "a / b = ratio×", the values with `d` decimals: one framecache figure against a peer's.
fn vs(a: f64, b: f64, d: usize) -> String {
    format!("{a:.d$} / {b:.d$} = {:.2}×", a / b)
}

/// [`vs`] of latency percentile `k` (ns in the readers' results) in µs.
fn lat_vs(a: &Kv, b: &Kv, k: &str) -> String {
    let us = |r: &Kv| get::<u64>(r, k) as f64 / 1e3;
    vs(us(a), us(b), 1)
}

/// A number per case, for names that must not repeat within a run.
fn next_case() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The iceoryx2 anchor (`benches/anchors/`, a workspace of its own so that iceoryx2 is built for
/// this benchmark only): built on first use with the cargo that runs the benchmark. `Err` says
/// why it is not there (then its rows are left out and the report says so).
fn iox_anchor() -> Result<&'static Path, &'static str> {
    static EXE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let r = EXE.get_or_init(|| {
        if std::env::var_os("FC_BENCH_NO_IOX").is_some() {
            return Err("FC_BENCH_NO_IOX is set".into());
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/anchors");
        let exe = dir.join("target/release/iox_anchor");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!(
            "frame_ring bench: building the iceoryx2 anchor ({})",
            dir.display()
        );
        let st = std::process::Command::new(cargo)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .env_remove("RUSTFLAGS")
            .status();
        match st {
            Ok(s) if s.success() && exe.exists() => Ok(exe),
            Ok(s) => Err(format!("building benches/anchors failed ({s})")),
            Err(e) => Err(format!("cargo could not run: {e}")),
        }
    });
    match r {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(e.as_str()),
    }
}

/// GStreamer's shm elements through Debian's python3-gst-1.0 (`benches/anchors/gst_anchor.py`),
/// or why they cannot run here.
fn gst_anchor() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/anchors/gst_anchor.py");
    let probe = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; \
             Gst.init(None); assert Gst.ElementFactory.find('shmsink'); print(Gst.version_string())",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => Ok(script),
        _ => Err(
            "Debian's python3-gst-1.0 with shmsink (gstreamer1.0-plugins-bad) is not installed"
                .into(),
        ),
    }
}

fn run_case(root: &Path, c: &Case) -> Outcome {
    let args = |role: &str| -> Vec<String> {
        vec![
            format!("role={role}"),
            format!("transport={}", c.t.arg()),
            format!("root={}", root.display()),
            format!("w={}", c.res.w),
            format!("h={}", c.res.h),
            format!("depth={}", c.depth),
            format!("frames={}", c.frames),
            format!("fps={}", c.fps),
            format!("fds={}", c.readers),
            format!("warmup={}", c.warmup),
            format!("max_ms={}", c.max_ms),
            format!("hold_ms={}", c.hold_ms),
            format!("size={}", frame_size(c.res.w, c.res.h)),
            format!("readers={}", c.readers),
            // iceoryx2 services of different cases must not meet (a killed case leaves its own).
            format!("service=fcbench/{}/{}", std::process::id(), next_case()),
        ]
    };
    let (mut writer, mut readers) = match c.t {
        Transport::GstShm => {
            let exe = gst_anchor().expect("GStreamer anchor");
            let socket = format!("socket={}/gst-{}.sock", root.display(), next_case());
            let mut a = args("writer");
            a.push(socket.clone());
            let mut writer = Proc::spawn_exe(&exe, &a, Stdio::piped(), Vec::new());
            writer.expect("ready");
            let readers: Vec<Proc> = (0..c.readers)
                .map(|_| {
                    let mut r = args("reader");
                    r.push(socket.clone());
                    Proc::spawn_exe(&exe, &r, Stdio::null(), Vec::new())
                })
                .collect();
            (writer, readers)
        }
        Transport::IoxCopy | Transport::IoxZc => {
            let exe = iox_anchor().expect("iceoryx2 anchor built");
            let a = args("writer");
            let mut writer = Proc::spawn_exe(exe, &a, Stdio::piped(), Vec::new());
            writer.expect("ready");
            let service = a.last().unwrap().clone();
            let readers: Vec<Proc> = (0..c.readers)
                .map(|_| {
                    let mut r = args("reader");
                    *r.last_mut().unwrap() = service.clone();
                    Proc::spawn_exe(exe, &r, Stdio::null(), Vec::new())
                })
                .collect();
            (writer, readers)
        }
        Transport::Ring | Transport::RingCopy | Transport::RingFill => {
            // Writer first (it creates the slot), then readers attach at the oldest frame.
            let mut writer = Proc::spawn(&args("writer"), Stdio::piped(), Vec::new());
            writer.expect("ready");
            let readers: Vec<Proc> = (0..c.readers)
                .map(|_| Proc::spawn(&args("reader"), Stdio::null(), Vec::new()))
                .collect();
            (writer, readers)
        }
        Transport::Pipe | Transport::Socket => {
            let pairs: Vec<(OwnedFd, OwnedFd)> = (0..c.readers).map(|_| stream_pair(c.t)).collect();
            let mut write_ends = Vec::new();
            let mut readers = Vec::new();
            for (wr, rd) in pairs {
                // The reader's stdin is its end; the Command (and our copy) close on return.
                readers.push(Proc::spawn(&args("reader"), Stdio::from(rd), Vec::new()));
                write_ends.push(wr);
            }
            let raw = write_ends.iter().map(|f| f.as_raw_fd()).collect();
            let mut writer = Proc::spawn(&args("writer"), Stdio::piped(), raw);
            drop(write_ends); // only the writer holds them now, so readers see EOF if it dies
            writer.expect("ready");
            (writer, readers)
        }
    };
    for r in &mut readers {
        r.expect("ready");
    }
    writer.go();
    let writer_kv = writer.finish();
    let readers = readers.into_iter().map(Proc::finish).collect();
    Outcome {
        writer: writer_kv,
        readers,
    }
}

/// Throughput figures of one case.
struct Tput {
    case: String,
    t: Transport,
    res: &'static str,
    readers: usize,
    fps_mean: f64,
    fps_min: f64,
    writer_fps: f64,
    gbps: f64,
    skipped_mean: f64,
    torn: u64,
    cpu_all_ms: f64,
    cpu_reader_ms: f64,
    secs: f64,
}

fn throughput(c: &Case, o: &Outcome) -> Tput {
    let size = frame_size(c.res.w, c.res.h) as f64;
    let start: u64 = get(&o.writer, "start_ns");
    let end: u64 = get(&o.writer, "end_ns");
    let writer_cpu: u64 = get(&o.writer, "cpu_ns");
    let written: u64 = get(&o.writer, "frames");
    let writer_fps = written as f64 * 1e9 / (end - start) as f64;
    let mut rates = Vec::new();
    let (mut delivered, mut skipped, mut torn, mut reader_cpu, mut last) =
        (0u64, 0u64, 0, 0u64, end);
    for r in &o.readers {
        let d: u64 = get(r, "delivered");
        let l: u64 = get(r, "last_ns");
        // Per reader: frames it got, over the time from the writer's start to its last frame.
        rates.push(d as f64 * 1e9 / l.saturating_sub(start).max(1) as f64);
        delivered += d;
        skipped += get::<u64>(r, "skipped");
        torn += get::<u64>(r, "torn");
        reader_cpu += get::<u64>(r, "cpu_ns");
        last = last.max(l);
    }
    let n = o.readers.len().max(1) as f64;
    let per_frame = |ns: u64| ns as f64 / 1e6 / delivered.max(1) as f64;
    Tput {
        case: format!("{} {} x{}", c.res.name, c.t.arg(), c.readers),
        t: c.t,
        res: c.res.name,
        readers: c.readers,
        fps_mean: rates.iter().sum::<f64>() / n,
        fps_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        writer_fps,
        gbps: rates.iter().sum::<f64>() * size / 1e9,
        skipped_mean: skipped as f64 / n,
        torn,
        cpu_all_ms: per_frame(writer_cpu + reader_cpu),
        cpu_reader_ms: per_frame(reader_cpu),
        secs: (last - start) as f64 / 1e9,
    }
}

/// Writer bandwidth with no reader against plain memcpy, in alternating child processes run
/// the same way (the host's memory bandwidth drifts by 10-15 % between runs, so one run of
/// each could rank them either way): (memcpy GB/s, ring writer frames/s), medians.
fn solo_runs(root: &Path, res: Res, rounds: usize, cap_ms: u64) -> (f64, f64) {
    let size = frame_size(res.w, res.h) as f64;
    let (mut copies, mut writes) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let args = vec![
            "role=memcpy".to_string(),
            "transport=none".into(),
            format!("w={}", res.w),
            format!("h={}", res.h),
            format!("depth={}", res.depth),
            "fps=0".into(),
            format!("max_ms={cap_ms}"),
        ];
        let mut p = Proc::spawn(&args, Stdio::piped(), Vec::new());
        p.expect("ready");
        p.go();
        let kv = p.finish();
        let secs = (get::<u64>(&kv, "end_ns") - get::<u64>(&kv, "start_ns")) as f64 / 1e9;
        copies.push(get::<u64>(&kv, "frames") as f64 * size / secs / 1e9);

        let c = Case {
            t: Transport::Ring,
            res,
            depth: res.depth,
            frames: 1_000_000,
            readers: 0,
            fps: 0,
            max_ms: cap_ms,
            warmup: 0,
            hold_ms: 0,
        };
        let o = run_case(root, &c);
        writes.push(throughput(&c, &o).writer_fps);
    }
    (median(copies), median(writes))
}

/// Effective kernel buffer sizes of a pipe and a socketpair, for the notes.
fn stream_buffers() -> (i32, i32) {
    let (pw, _pr) = stream_pair(Transport::Pipe);
    let (sw, _sr) = stream_pair(Transport::Socket);
    // SAFETY: valid fds and out-parameters.
    unsafe {
        let pipe = libc::fcntl(pw.as_raw_fd(), 1032 /* F_GETPIPE_SZ */);
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(
            sw.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        );
        (pipe, v)
    }
}

fn free_bytes(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path and out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_bavail as u64 * s.f_frsize as u64
}

fn parent_main() {
    let began = Instant::now();
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let root = RootDir(base.join(format!("fc-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).expect("create bench root");
    // Largest slot: 2160p x 32 = 531 MB, 1080p x 120 = 498 MB.
    let free = free_bytes(&root.0);
    if free < 700 << 20 {
        eprintln!(
            "warning: only {} MiB free in {}",
            free >> 20,
            base.display()
        );
    }
    let machine = machine_line();
    let (pipe_buf, sock_buf) = stream_buffers();
    eprintln!("frame_ring bench: {machine}; slots in {}", root.0.display());

    // 1 + 3. memcpy ceiling and the ring writer alone, alternating, median of 3 each.
    let mut solo = Vec::new();
    for res in [P1080, P2160] {
        let (copy_gbps, writer_fps) = solo_runs(&root.0, res, 3, 1000);
        eprintln!(
            "  {}: memcpy {copy_gbps:.2} GB/s, writer alone {writer_fps:.0} frames/s",
            res.name
        );
        solo.push((res, copy_gbps, writer_fps));
    }

    // Flat-out cases stop after CAP_MS (`frames` is out of reach).
    const CAP_MS: u64 = 1500;
    let case = |t, res: Res, readers| Case {
        t,
        res,
        depth: res.depth,
        frames: 1_000_000,
        readers,
        fps: 0,
        max_ms: CAP_MS,
        warmup: 0,
        hold_ms: 0,
    };

    // The transports of every case: framecache's, the pipe and socket baselines, and the
    // iceoryx2 anchor when it builds (its rows are left out otherwise, saying why).
    let iox = iox_anchor();
    let mut transports = vec![
        Transport::Ring,
        Transport::RingCopy,
        Transport::RingFill,
        Transport::Pipe,
        Transport::Socket,
    ];
    if iox.is_ok() {
        transports.extend([Transport::IoxCopy, Transport::IoxZc]);
    }
    // GStreamer's shm pair: 1080p with 1 and 4 readers, and the 1080p latency.
    let gst = gst_anchor();

    // 2. Throughput matrix.
    let mut tputs: Vec<Tput> = Vec::new();
    for res in [P1080, P2160] {
        for readers in [1, 4, 8] {
            let gst_here = gst.is_ok() && res.name == "1080p" && readers <= 4;
            for &t in transports
                .iter()
                .chain(gst_here.then_some(&Transport::GstShm))
            {
                let c = case(t, res, readers);
                let o = run_case(&root.0, &c);
                let tp = throughput(&c, &o);
                eprintln!(
                    "  {:<24} {:8.1} frames/s per reader, writer {:8.1}, {:.2} s",
                    tp.case, tp.fps_mean, tp.writer_fps, tp.secs
                );
                tputs.push(tp);
            }
        }
    }

    // 2b. framecache with a shallow ring (4 frames): iceoryx2 reuses the chunk a reader just
    // released, so its writer keeps writing memory that is still in the caches, while a ring of
    // the default 120 frames (500 MB at 1080p) always writes the oldest, coldest slot. The same
    // cases at depth 4 show what that costs.
    let mut shallow: Vec<Tput> = Vec::new();
    if iox.is_ok() {
        for res in [P1080, P2160] {
            for readers in [1, 4, 8] {
                for t in [Transport::Ring, Transport::RingFill] {
                    let c = Case {
                        depth: 4,
                        ..case(t, res, readers)
                    };
                    let o = run_case(&root.0, &c);
                    let tp = throughput(&c, &o);
                    eprintln!(
                        "  {:<24} depth 4 {:8.1} frames/s per reader",
                        tp.case, tp.fps_mean
                    );
                    shallow.push(tp);
                }
            }
        }
    }

    // 4. Publish→wake latency, one reader, paced writer. The last two are the other corners of
    // rate against size: a reader that sleeps 16 ms between frames wakes from a deeper idle
    // state than one woken every millisecond, so 64x64 at 1000 fps against 1080p at 60 fps
    // mixes two causes; framecache and iceoryx2 only there.
    let mut lats = Vec::new();
    for (res, fps, secs, corner) in [
        (TINY, 1000u32, 3u64, false),
        (P1080, 60, 5, false),
        (TINY, 60, 5, true),
        (P1080, 1000, 3, true),
    ] {
        let gst_here = gst.is_ok() && res.name == "1080p" && !corner;
        for &t in transports
            .iter()
            .filter(|&&t| !corner || matches!(t, Transport::Ring | Transport::IoxCopy))
            .chain(gst_here.then_some(&Transport::GstShm))
        {
            let c = Case {
                t,
                res,
                depth: 16,
                frames: fps as u64 * secs,
                readers: 1,
                fps,
                max_ms: 0,
                // Drop the first ring pass: it takes the reader's first-touch page faults.
                warmup: 16,
                hold_ms: 0,
            };
            let o = run_case(&root.0, &c);
            let r = &o.readers[0];
            eprintln!(
                "  latency {} at {fps} {}: p50 {} ns",
                res.name,
                t.arg(),
                r["p50"]
            );
            lats.push((res, fps, t, r.clone()));
        }
    }

    // 5. A slow reader (holds each frame 20 ms) against a writer flat out: who waits?
    let mut slow = Vec::new();
    for t in [Transport::Ring, Transport::IoxCopy, Transport::GstShm] {
        let ok = match t {
            Transport::IoxCopy => iox.is_ok(),
            Transport::GstShm => gst.is_ok(),
            _ => true,
        };
        if !ok {
            continue;
        }
        let c = Case {
            hold_ms: 20,
            ..case(t, P1080, 1)
        };
        let o = run_case(&root.0, &c);
        let tp = throughput(&c, &o);
        eprintln!(
            "  slow reader {}: writer {:.0} frames/s, reader {:.0}",
            t.arg(),
            tp.writer_fps,
            tp.fps_mean
        );
        slow.push(tp);
    }

    // ---- Report ----
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line("### framecache frame ring benchmark\n".to_string());
    line(format!("Machine: {machine}  "));
    line(format!(
        "Frames: UYVY 1080p = {} B, 2160p = {} B. GB = 10^9 bytes. Each process is separate; \
         the writer copies every frame from one of {}+ MB of pre-filled source frames (one memcpy \
         per frame).\n",
        frame_size(1920, 1080),
        frame_size(3840, 2160),
        SOURCE_BYTES / 1_000_000
    ));

    match iox {
        Err(why) => line(format!("iceoryx2 anchor SKIPPED: {why}\n")),
        Ok(_) => {
            line("#### framecache ÷ iceoryx2 0.10, same run\n".into());
            line(
                "Copy-in: both writers copy each frame from the same rotating sources (framecache \
                 `write`, iceoryx2 `loan_slice_uninit` + copy); zero-copy: both fill the frame in \
                 place in shared memory (framecache `acquire`/`commit`, iceoryx2's loan). Readers \
                 take frames without a copy and touch one byte per page. Frames/s: higher is \
                 better, so a ratio above 1 favours framecache; CPU per frame and latency: lower \
                 is better, so a ratio below 1 favours framecache. Loss = frames a reader never \
                 got (framecache: skipped; iceoryx2: gaps in the frame numbers, its safe overflow \
                 dropping the oldest queued sample).\n"
                    .into(),
            );
            line(
                "| Frame | Readers | Writer | Frames/s per reader (fc / iox = ratio) | same, fc \
                 ring of 4 frames | CPU ms per delivered frame (fc / iox = ratio) | same, fc \
                 ring of 4 | Loss per reader (fc / iox) |"
                    .into(),
            );
            line("|---|---:|---|---:|---:|---:|---:|---:|".into());
            for res in ["1080p", "2160p"] {
                for readers in [1, 4, 8] {
                    for (mode, fc, ix) in [
                        ("copy-in", Transport::Ring, Transport::IoxCopy),
                        ("zero-copy", Transport::RingFill, Transport::IoxZc),
                    ] {
                        let f = |t: Transport| {
                            tputs
                                .iter()
                                .find(|x| x.res == res && x.readers == readers && x.t == t)
                        };
                        let (Some(a), Some(b)) = (f(fc), f(ix)) else {
                            continue;
                        };
                        let sh = shallow
                            .iter()
                            .find(|x| x.res == res && x.readers == readers && x.t == fc);
                        let (sf, sc) = sh.map_or(("–".to_string(), "–".to_string()), |x| {
                            (
                                format!("{:.0} = {:.2}×", x.fps_mean, x.fps_mean / b.fps_mean),
                                format!(
                                    "{:.3} = {:.2}×",
                                    x.cpu_all_ms,
                                    x.cpu_all_ms / b.cpu_all_ms
                                ),
                            )
                        });
                        line(format!(
                            "| {res} | {readers} | {mode} | {} | {sf} | {} | {sc} | {:.0} / {:.0} |",
                            vs(a.fps_mean, b.fps_mean, 0),
                            vs(a.cpu_all_ms, b.cpu_all_ms, 3),
                            a.skipped_mean,
                            b.skipped_mean
                        ));
                    }
                }
            }
            line(
                "\n| Frame | Rate | Writer | Wake p50 µs (fc / iox = ratio) | p99 | p99.9 |".into(),
            );
            line("|---|---:|---|---:|---:|---:|".into());
            for (res, fps) in [(TINY.name, 1000u32), (P1080.name, 60)] {
                for (mode, fc, ix) in [
                    ("copy-in", Transport::Ring, Transport::IoxCopy),
                    ("zero-copy", Transport::RingFill, Transport::IoxZc),
                ] {
                    let f = |t: Transport| {
                        lats.iter()
                            .find(|x| x.0.name == res && x.1 == fps && x.2 == t)
                            .map(|x| &x.3)
                    };
                    let (Some(a), Some(b)) = (f(fc), f(ix)) else {
                        continue;
                    };
                    line(format!(
                        "| {res} | {fps} fps | {mode} | {} | {} | {} |",
                        lat_vs(a, b, "p50"),
                        lat_vs(a, b, "p99"),
                        lat_vs(a, b, "p999")
                    ));
                }
            }
            line(String::new());
        }
    }

    match &gst {
        Err(why) => line(format!("GStreamer anchor SKIPPED: {why}\n")),
        Ok(_) => {
            line("#### framecache ÷ GStreamer 1.22 shmsink/shmsrc, same run (1080p)\n".into());
            line(
                "| Readers | Frames/s per reader (fc / gst = ratio) | CPU ms per delivered frame \
                 (fc / gst = ratio) | Loss per reader (fc / gst) |"
                    .into(),
            );
            line("|---:|---:|---:|---:|".into());
            for readers in [1, 4] {
                let f = |t: Transport| {
                    tputs
                        .iter()
                        .find(|x| x.res == "1080p" && x.readers == readers && x.t == t)
                };
                if let (Some(a), Some(b)) = (f(Transport::Ring), f(Transport::GstShm)) {
                    line(format!(
                        "| {readers} | {} | {} | {:.0} / {:.0} |",
                        vs(a.fps_mean, b.fps_mean, 0),
                        vs(a.cpu_all_ms, b.cpu_all_ms, 3),
                        a.skipped_mean,
                        b.skipped_mean
                    ));
                }
            }
            let f = |t: Transport| {
                lats.iter()
                    .find(|x| x.0.name == "1080p" && x.1 == 60 && x.2 == t)
            };
            if let (Some(a), Some(b)) = (f(Transport::Ring), f(Transport::GstShm)) {
                line(format!(
                    "\nWake latency at 1080p 60 fps, µs (fc / gst = ratio): p50 {}, p99 {}, p99.9 {}.\n",
                    lat_vs(&a.3, &b.3, "p50"),
                    lat_vs(&a.3, &b.3, "p99"),
                    lat_vs(&a.3, &b.3, "p999")
                ));
            }
        }
    }
    line("#### Wake-up latency: frame rate against frame size (1 reader)\n".into());
    line("| Frame | Rate | Transport | p50 µs | p99 µs | p99.9 µs |".into());
    line("|---|---:|---|---:|---:|---:|".into());
    for (res, fps, t, r) in lats
        .iter()
        .filter(|x| matches!(x.2, Transport::Ring | Transport::IoxCopy))
    {
        let us = |k: &str| get::<u64>(r, k) as f64 / 1000.0;
        line(format!(
            "| {} | {fps} fps | {} | {:.1} | {:.1} | {:.1} |",
            res.name,
            t.label(),
            us("p50"),
            us("p99"),
            us("p999")
        ));
    }
    line(String::new());
    if !slow.is_empty() {
        line("#### A slow reader (holds each 1080p frame 20 ms), writer flat out\n".into());
        line(
            "| Transport | Writer frames/s | Reader frames/s | Frames the reader skipped |".into(),
        );
        line("|---|---:|---:|---:|".into());
        for tp in &slow {
            line(format!(
                "| {} | {:.0} | {:.0} | {:.0} |",
                tp.t.label(),
                tp.writer_fps,
                tp.fps_mean,
                tp.skipped_mean
            ));
        }
        line(String::new());
    }

    line("#### memcpy ceiling and writer bandwidth (no reader)\n".into());
    line("| Frame | memcpy, 1 thread (GB/s) | Ring writer alone (frames/s) | Ring writer (GB/s) | % of memcpy |".into());
    line("|---|---:|---:|---:|---:|".into());
    for (res, cap, fps) in &solo {
        let gbps = fps * frame_size(res.w, res.h) as f64 / 1e9;
        line(format!(
            "| {} | {cap:.2} | {fps:.0} | {gbps:.2} | {:.0} % |",
            res.name,
            100.0 * gbps / cap
        ));
    }

    line("\n#### Throughput: one writer flat out, N reader processes\n".into());
    line(
        "| Frame | Readers | Transport | Frames/s per reader (mean / min) | Writer frames/s \
         | Delivered GB/s (all readers) | Skipped per reader | Torn views | CPU ms per delivered \
         frame (all processes) | of which readers |"
            .into(),
    );
    line("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|".into());
    for tp in &tputs {
        line(format!(
            "| {} | {} | {} | {:.0} / {:.0} | {:.0} | {:.2} | {:.0} | {} | {:.3} | {:.3} |",
            tp.res,
            tp.readers,
            tp.t.label(),
            tp.fps_mean,
            tp.fps_min,
            tp.writer_fps,
            tp.gbps,
            tp.skipped_mean,
            tp.torn,
            tp.cpu_all_ms,
            tp.cpu_reader_ms
        ));
    }

    line("\n#### Ratio of frames/s per reader: framecache ÷ baseline\n".into());
    line("| Frame | Readers | `read` ÷ pipe | `read` ÷ socket | `read_copy` ÷ pipe | `read_copy` ÷ socket |".into());
    line("|---|---:|---:|---:|---:|---:|".into());
    for res in ["1080p", "2160p"] {
        for readers in [1, 4, 8] {
            let f = |t: Transport| {
                tputs
                    .iter()
                    .find(|x| x.res == res && x.readers == readers && x.t == t)
                    .map_or(f64::NAN, |x| x.fps_mean)
            };
            let (r, rc, p, so) = (
                f(Transport::Ring),
                f(Transport::RingCopy),
                f(Transport::Pipe),
                f(Transport::Socket),
            );
            line(format!(
                "| {res} | {readers} | {:.1}× | {:.1}× | {:.1}× | {:.1}× |",
                r / p,
                r / so,
                rc / p,
                rc / so
            ));
        }
    }

    line("\n#### Publish → reader wake-up latency (1 reader, paced writer)\n".into());
    line(
        "| Frame | Rate | Transport | Samples | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) |"
            .into(),
    );
    line("|---|---:|---|---:|---:|---:|---:|---:|".into());
    for (res, fps, t, r) in &lats {
        let us = |k: &str| get::<u64>(r, k) as f64 / 1000.0;
        line(format!(
            "| {} | {fps} fps | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            res.name,
            t.label(),
            r["samples"],
            us("p50"),
            us("p99"),
            us("p999"),
            us("max")
        ));
    }

    line(format!(
        "\nNotes:\n\
         - memcpy ceiling: one thread copying from the writer's source frames into page-aligned \
         buffers laid out like the ring's slots; it and the writer alone run alternately, \
         median of 3 runs of 1 s each (run-to-run drift on a shared host is 10-15 %).\n\
         - Throughput runs: the writer publishes flat out for {:.1} s; readers attach before \
         it starts (Sequential, StartAt::Oldest) and touch one byte per 4096 B of every \
         frame. A zero-copy view counts as delivered only if `is_intact()` held afterwards \
         (\"torn\" otherwise). Frames/s per reader = frames delivered ÷ time from the \
         writer's first frame to that reader's last.\n\
         - The ring writer never waits for readers, so slow readers skip frames; pipes and \
         sockets apply back-pressure, so their writer (non-blocking writes + poll over all \
         readers, one copy per reader) runs at the slowest reader's pace. Kernel buffers: \
         pipe {} KiB (F_SETPIPE_SZ), socket SO_SNDBUF {} KiB.\n\
         - CPU = user + system time (getrusage) of the writer and all readers during the run.\n\
         - Ring latency = `monotonic_ns()` after `read`/`read_copy` returns − \
         `FrameInfo.publish_ns` (stamped after the writer's copy); pipe/socket latency = time \
         the reader has the whole frame − a timestamp taken right before the writer's first \
         `write()` (so it includes both copies). Nearest-rank percentiles after a 16-frame \
         warm-up; with fewer than 1000 samples p99.9 is the maximum.\n\
         - Ring depth 120 (1080p) / 32 (2160p) for throughput, 16 for latency.",
        CAP_MS as f64 / 1000.0,
        pipe_buf / 1024,
        sock_buf / 1024
    ));
    print!("{s}");
    eprintln!(
        "frame_ring bench done in {:.0} s",
        began.elapsed().as_secs_f64()
    );
}

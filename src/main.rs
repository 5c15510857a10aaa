//! `framecache`: list, inspect, feed and clean up framecache slots.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

mod api;
mod cuframes;
mod ingest;
mod logger;
mod packets;
mod pipe;
mod serve;
mod transcode;
use framecache::format::{fourcc_str, ALL_FORMATS};
use framecache::ring::{self, SlotInfo};
use framecache::{
    slot, testsrc, Consumer, ConsumerConfig, Error, FrameMeta, PixelFormat, Producer, ReadMode,
    SlotConfig, StartAt,
};

#[derive(Parser)]
#[command(
    name = "framecache",
    version,
    about = "Shared-memory rings for live video between processes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// More log detail on stderr (-v debug, -vv trace); the default shows what happened.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the slots under the root directory ($FC_SHM_DIR, default /dev/shm/framecache).
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Live statistics of a slot, refreshed in place like `top`.
    Stat {
        /// Slot id.
        slot: String,
        /// Print one sample and exit.
        #[arg(long)]
        once: bool,
        /// Sampling interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish a moving test pattern into a frame slot (creating it).
    Testsrc {
        /// Slot id.
        slot: String,
        /// Frame size WIDTHxHEIGHT.
        #[arg(long, default_value = "1920x1080")]
        size: String,
        /// Pixel format (FourCC or ffmpeg name): uyvy422, yuyv422, nv12, yuv420p, p010le, v210, bgra, rgb24.
        #[arg(long, default_value = "uyvy422")]
        format: String,
        /// Frame rate (e.g. 30, 30000/1001).
        #[arg(long, default_value = "30")]
        fps: String,
        /// Publish as fast as possible instead of at the frame rate.
        #[arg(long)]
        unpaced: bool,
        /// Stop after this many frames (default: run until interrupted).
        #[arg(long)]
        frames: Option<u64>,
        /// Ring depth in frames.
        #[arg(long, default_value_t = 120)]
        depth: u32,
        /// Keep the slot file after exit (readers that join later still find the last frames).
        #[arg(long)]
        keep: bool,
        /// Wait this long after creating the slot before the first frame (lets readers attach).
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Publish synthetic packets into a packet slot instead of frames (--fps = packets/s).
        #[arg(long)]
        packets: bool,
        /// Packets: largest packet in KiB.
        #[arg(long, default_value_t = 64)]
        max_kb: usize,
        /// Packets: payload ring in KiB.
        #[arg(long, default_value_t = 32768)]
        payload_kb: u64,
        /// Packets: descriptors in the ring.
        #[arg(long, default_value_t = 16384)]
        descs: u32,
        /// Packets: video keyframe interval in packets.
        #[arg(long, default_value_t = 30)]
        gop: u64,
    },
    /// Demux an MPEG-TS file into a packet slot (H.264/HEVC/AAC/MP2/MP3/AC-3/Opus streams).
    Import {
        /// The .ts file.
        file: String,
        /// Slot id.
        slot: String,
        /// Publish at the stream's own pace (by dts) instead of as fast as possible.
        #[arg(long)]
        realtime: bool,
        /// Keep the slot file after exit.
        #[arg(long)]
        keep: bool,
        /// Payload ring in MiB.
        #[arg(long, default_value_t = 32)]
        payload_mb: u64,
    },
    /// Write a packet slot's streams to an MPEG-TS file.
    Export {
        /// Slot id.
        slot: String,
        /// Output .ts file.
        out: String,
        /// Stop after this many packets.
        #[arg(long)]
        packets: Option<u64>,
        /// Stop after this long without a packet, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Start at the oldest keyframe in the ring instead of the most recent one.
        #[arg(long)]
        oldest: bool,
    },
    /// Write a slot to stdout for programs without a framecache device: a frame slot as
    /// rawvideo (tightly packed; stderr says the ffmpeg input options), a packet slot as MPEG-TS.
    /// E.g. `framecache cat cam | ffmpeg -f rawvideo -pix_fmt uyvy422 -video_size 1920x1080
    /// -framerate 30 -i - out.mkv`.
    Cat {
        /// Slot id.
        slot: String,
        /// Stop after this many frames (packets).
        #[arg(long)]
        frames: Option<u64>,
        /// Stop after this long without a frame, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Start at the oldest frame (packet slots: keyframe) in the ring, not the newest.
        #[arg(long)]
        oldest: bool,
    },
    /// Read rawvideo frames from stdin into a new frame slot, e.g. `ffmpeg -i in.mp4 -f rawvideo
    /// -pix_fmt uyvy422 - | framecache write cam --size 1920x1080 --format uyvy422 --fps 30`.
    Write {
        /// Slot id.
        slot: String,
        /// Frame size WIDTHxHEIGHT.
        #[arg(long)]
        size: String,
        /// Pixel format (FourCC or ffmpeg name), as the input's -pix_fmt.
        #[arg(long)]
        format: String,
        /// Frame rate (e.g. 30, 30000/1001).
        #[arg(long, default_value = "30")]
        fps: String,
        /// Ring depth in frames.
        #[arg(long, default_value_t = 120)]
        depth: u32,
        /// Keep the slot file after the input ends (readers that come later find the last frames).
        #[arg(long)]
        keep: bool,
    },
    /// Read frames of a `testsrc` slot and verify every byte against the pattern.
    Verify {
        /// Slot id.
        slot: String,
        /// Stop after this many delivered frames (default: until the writer is gone).
        #[arg(long)]
        frames: Option<u64>,
        /// Cursor mode.
        #[arg(long, value_enum, default_value_t = Mode::Sequential)]
        mode: Mode,
        /// Start position.
        #[arg(long, value_enum, default_value_t = Start::Oldest)]
        start: Start,
        /// Copy each frame out (validated copy) instead of verifying the zero-copy view.
        #[arg(long)]
        copy: bool,
        /// Give up after this long without a frame, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Wait this long for the slot to appear, in milliseconds.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
        /// Sleep this long after each frame (simulates a slow reader), in microseconds.
        #[arg(long, default_value_t = 0)]
        delay_us: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Verify a `testsrc --packets` packet slot.
        #[arg(long)]
        packets: bool,
    },
    /// The demo: a `testsrc` writer process (1080p UYVY at 60 fps into slot `demo`) and its live
    /// statistics read from this process, until interrupted.
    Demo {
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Run the ingest engine until interrupted: listener URLs (`rtmp://ADDR:PORT`,
    /// `rtmps://ADDR:PORT` with --tls-cert/--tls-key,
    /// `srt://0.0.0.0:PORT`) start push listeners routed by stream key; `publish://KEY` accepts
    /// pushes of KEY into --slot; other URLs (udp://, srt://HOST:PORT?streamid=,
    /// rtmp[s]://HOST/APP/KEY, http(s)://...m3u8, file://MOUNT/path, copy://SLOT,
    /// rtsp://[USER:PASS@]HOST/PATH[?transport=udp]) are pull inputs of --slot, highest priority
    /// first, with failover and failback.
    Ingest(ingest::IngestOpts),
    /// The all-in-one main job: RTMP and SRT ingest routed by stream key, RTMP play, WHEP for
    /// browsers, a page listing live streams with a player each, /metrics and /health, and a
    /// looped demo stream (slot `demo`). Binds to loopback unless told otherwise.
    Serve(serve::ServeOpts),
    /// GPU frames across processes (CUDA IPC): a test publisher and a verifying subscriber.
    #[command(subcommand)]
    Cuframes(CuCmd),
    /// Remove slots whose writer is gone, and leftovers of crashed creators.
    Gc {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum CuCmd {
    /// Publish a test pattern (every byte of plane p of frame n is a function of n and p).
    Publish(cuframes::PubOpts),
    /// Take frames, optionally check every byte, print a JSON summary.
    Subscribe(cuframes::SubOpts),
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Sequential,
    Latest,
}

#[derive(Clone, Copy, ValueEnum)]
enum Start {
    Newest,
    Oldest,
    Next,
}

pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// SIGINT and SIGTERM of a long-running command (ingest, serve) are blocked in every thread
/// and taken by [`wait_stop`]: the main thread sleeps until a signal comes, instead of waking
/// every 100 ms to look at a flag. Call before any thread starts (threads inherit the mask;
/// child processes get an empty one from std).
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if TAKE_HUP.load(Ordering::Relaxed) {
            libc::sigaddset(&mut set, libc::SIGHUP);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// `serve` takes SIGHUP as "reload the configuration" (set before [`block_stop_signals`]).
pub(crate) static TAKE_HUP: AtomicBool = AtomicBool::new(false);
/// A SIGHUP came and was not handled yet.
pub(crate) static RELOAD: AtomicBool = AtomicBool::new(false);

/// Waits up to `d` for SIGINT or SIGTERM (blocked by [`block_stop_signals`]); true, with
/// [`STOP`] set, when one came. A SIGHUP (where taken) sets [`RELOAD`] and returns early.
pub(crate) fn wait_stop(d: Duration) -> bool {
    let set = block_stop_signals();
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; no siginfo is asked for.
    let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if r == libc::SIGHUP {
        RELOAD.store(true, Ordering::Relaxed);
    } else if r > 0 {
        STOP.store(true, Ordering::Relaxed);
    }
    STOP.load(Ordering::Relaxed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(cli.verbose, cli.quiet);
    let r = match cli.cmd {
        Cmd::Ls { json } => ls(json),
        Cmd::Stat {
            slot,
            once,
            interval_ms,
            json,
        } => stat(&slot, once, interval_ms, json, None),
        Cmd::Testsrc {
            slot,
            size,
            format,
            fps,
            unpaced,
            frames,
            depth,
            keep,
            wait_ms,
            packets,
            max_kb,
            payload_kb,
            descs,
            gop,
        } => {
            if packets {
                let rate = parse_fps(&fps).map(|(n, d)| f64::from(n) / f64::from(d));
                match rate {
                    Ok(rate) => {
                        let o = packets::PacketSrcOpts {
                            rate,
                            unpaced,
                            packets: frames,
                            max_kb,
                            payload_kb,
                            descs,
                            wait_ms,
                            keep,
                            gop: gop.max(1),
                        };
                        catch_signals();
                        packets::testsrc_packets(&slot, &o)
                    }
                    Err(e) => Err(e.into()),
                }
            } else {
                let opts = TestsrcOpts {
                    unpaced,
                    frames,
                    depth,
                    keep,
                    wait_ms,
                };
                testsrc_cmd(&slot, &size, &format, &fps, &opts)
            }
        }
        Cmd::Ingest(o) => {
            block_stop_signals();
            ingest::run(o)
        }
        Cmd::Import {
            file,
            slot,
            realtime,
            keep,
            payload_mb,
        } => {
            catch_signals();
            packets::import(&file, &slot, realtime, keep, payload_mb)
        }
        Cmd::Export {
            slot,
            out,
            packets,
            timeout_ms,
            oldest,
        } => {
            catch_signals();
            packets::export(&slot, &out, packets, timeout_ms, oldest)
        }
        Cmd::Cat {
            slot,
            frames,
            timeout_ms,
            oldest,
        } => {
            catch_signals();
            let o = pipe::CatOpts {
                frames,
                timeout_ms,
                oldest,
            };
            pipe::cat(&slot, &o)
        }
        Cmd::Write {
            slot,
            size,
            format,
            fps,
            depth,
            keep,
        } => {
            catch_signals();
            let o = pipe::WriteOpts {
                size,
                format,
                fps,
                depth,
                keep,
            };
            pipe::write(&slot, &o)
        }
        Cmd::Verify {
            slot,
            frames,
            mode,
            start,
            copy,
            timeout_ms,
            wait_ms,
            delay_us,
            json,
            packets,
        } => {
            if packets {
                packets::verify(&slot, frames, copy, timeout_ms, wait_ms, delay_us, json)
            } else {
                verify(
                    &slot, frames, mode, start, copy, timeout_ms, wait_ms, delay_us, json,
                )
            }
        }
        Cmd::Demo { seconds } => demo(seconds),
        Cmd::Serve(o) => {
            TAKE_HUP.store(true, Ordering::Relaxed);
            block_stop_signals();
            serve::run(o)
        }
        Cmd::Cuframes(CuCmd::Publish(o)) => cuframes::publish(o),
        Cmd::Cuframes(CuCmd::Subscribe(o)) => cuframes::subscribe(o),
        Cmd::Gc { dry_run } => gc(dry_run),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("framecache: error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

pub(crate) fn ago(mono_ns: u64) -> String {
    if mono_ns == 0 {
        return "never".into();
    }
    let d = slot::monotonic_ns().saturating_sub(mono_ns);
    format!("{:.1}s ago", d as f64 / 1e9)
}

/// Bytes a slot takes in the root (its file), 0 if unknown.
pub(crate) fn slot_bytes(root: &std::path::Path, id: &str, kind: slot::SlotKind) -> u64 {
    slot::slot_path(root, id, kind)
        .ok()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// "474.9M", for the `ls` table.
pub(crate) fn mib(n: u64) -> String {
    format!("{:.1}M", n as f64 / (1024.0 * 1024.0))
}

fn ls(json: bool) -> CliResult {
    let root = slot::root_dir();
    let slots = ring::list_slots(&root)?;
    if json {
        let mut rows: Vec<serde_json::Value> = slots
            .iter()
            .map(|(id, r)| {
                let bytes = slot_bytes(&root, id, slot::SlotKind::Frames);
                match r {
                    Ok(i) => serde_json::json!({"kind": "frames", "info": i, "bytes": bytes}),
                    Err(e) => serde_json::json!({"kind": "frames", "id": id, "bytes": bytes, "error": e.to_string(), "code": e.code()}),
                }
            })
            .collect();
        rows.extend(packets::ls_rows(&root)?);
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (packet_rows, packet_bytes) = packets::ls_table(&root)?;
    let space = match slot::fs_space(&root) {
        Some((free, total)) => format!("{} free of {} on its filesystem", mib(free), mib(total)),
        None => "free space unknown".into(),
    };
    if slots.is_empty() && packet_rows.is_empty() {
        println!("no slots in {} ({space})", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<7} {:<10} {:>11} {:>9} {:>5} {:>10} {:>9} {:<12} {:<8} LAST",
        "SLOT", "KIND", "FORMAT", "SIZE", "FPS", "DEPTH", "FRAMES", "MEMORY", "WRITER", "SOURCE"
    );
    let mut total = packet_bytes;
    for (id, r) in &slots {
        let bytes = slot_bytes(&root, id, slot::SlotKind::Frames);
        total += bytes;
        match r {
            Ok(i) => println!(
                "{:<24} {:<7} {:<10} {:>11} {:>9} {:>5} {:>10} {:>9} {:<12} {:<8} {}",
                i.id,
                "frames",
                i.format,
                format!("{}x{}", i.width, i.height),
                fps_text(i.fps_num, i.fps_den),
                i.depth,
                i.frames_written,
                mib(bytes),
                writer_text(i),
                i.source_type,
                ago(i.last_publish_ns)
            ),
            Err(e) => println!("{id:<24} {:<7} unreadable: {e}", "frames"),
        }
    }
    for row in &packet_rows {
        println!("{row}");
    }
    println!(
        "{} slots, {} in {} ({space})",
        slots.len() + packet_rows.len(),
        mib(total),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn fps_text(num: u32, den: u32) -> String {
    if num == 0 {
        "?".into()
    } else if den == 1 {
        format!("{num}")
    } else {
        format!("{:.3}", f64::from(num) / f64::from(den))
    }
}

fn writer_text(i: &SlotInfo) -> String {
    if i.writer_alive {
        format!("live {}", i.writer_pid)
    } else {
        "gone".into()
    }
}

fn demo(seconds: Option<u64>) -> CliResult {
    let id = "demo";
    let mut writer = std::process::Command::new(std::env::current_exe()?)
        .args(["testsrc", id, "--size", "1920x1080", "--fps", "60"])
        .spawn()?;
    let path = slot::slot_path(&slot::root_dir(), id, slot::SlotKind::Frames)?;
    let t0 = Instant::now();
    while !path.exists() {
        if let Some(status) = writer.try_wait()? {
            return Err(format!("the testsrc writer exited early ({status})").into());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = writer.kill();
            return Err("the testsrc writer did not create the slot".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "framecache: demo: writer pid {} → slot {id}; reading it here (Ctrl-C stops both)",
        writer.id()
    );
    let r = stat(id, false, 1000, false, seconds.map(Duration::from_secs));
    // SAFETY: plain kill(2) of our own child: SIGTERM makes it close the slot cleanly.
    unsafe { libc::kill(writer.id() as i32, libc::SIGTERM) };
    writer.wait()?;
    r
}

fn stat(id: &str, once: bool, interval_ms: u64, json: bool, limit: Option<Duration>) -> CliResult {
    catch_signals();
    let root = slot::root_dir();
    if !slot::slot_path(&root, id, slot::SlotKind::Frames)?.exists()
        && slot::slot_path(&root, id, slot::SlotKind::Packets)?.exists()
    {
        return packets::stat(id, once, interval_ms, json);
    }
    let started = Instant::now();
    catch_signals();
    let mut c = Consumer::open(
        id,
        ConsumerConfig {
            mode: ReadMode::Latest,
            start: StartAt::Next,
        },
    )?;
    let interval = Duration::from_millis(interval_ms.max(50));
    let tty = std::io::stdout().is_terminal() && !json && !once;
    let mut last_written = c.writer_frames();
    let mut last_stats = c.stats();
    loop {
        let t0 = Instant::now();
        // Read the newest frame as it comes for one interval: measures what a live reader sees.
        while t0.elapsed() < interval && !STOP.load(Ordering::Relaxed) {
            match c.read(interval.saturating_sub(t0.elapsed())) {
                Ok(_) | Err(Error::Timeout) | Err(Error::WriterGone) => {}
                Err(e) => return Err(e.into()),
            }
            if !c.writer_alive() && c.writer_frames() == last_written {
                std::thread::sleep(interval.saturating_sub(t0.elapsed()));
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let s = c.stats();
        let written = c.writer_frames();
        let fps = written.saturating_sub(last_written) as f64 / secs;
        let read = s.frames_read - last_stats.frames_read;
        let skipped = s.frames_skipped - last_stats.frames_skipped;
        let g = *c.geometry();
        let (fn_, fd) = c.fps();
        if json {
            println!(
                "{}",
                serde_json::json!({"slot": id, "format": fourcc_str(g.format.fourcc()), "width": g.width,
                    "height": g.height, "declared_fps": fps_text(fn_, fd), "fps": fps, "frames_written": written,
                    "frames_read": read, "frames_skipped": skipped, "writer_alive": s.writer_alive,
                    "latency_last_us": s.latency_last_ns / 1000, "latency_avg_us": s.latency_avg_ns / 1000,
                    "latency_max_us": s.latency_max_ns / 1000, "reattached": s.reattached,
                    "mb_per_s": fps * g.frame_size as f64 / 1e6})
            );
        } else {
            let mut out = String::new();
            if tty {
                out.push_str("\x1b[H\x1b[2J");
            }
            out.push_str(&format!(
                "slot {id}  {} {}x{}  declared {} fps  source {}\n\
                 writer    {}  frames {written}  {fps:.2} fps  {:.1} MB/s\n\
                 reader    read {read}  skipped {skipped} (latest mode)  reattached {}\n\
                 latency   publish→read last {:.1} µs  avg {:.1} µs  max {:.1} µs\n",
                fourcc_str(g.format.fourcc()),
                g.width,
                g.height,
                fps_text(fn_, fd),
                c.source_type(),
                if s.writer_alive { "live" } else { "GONE" },
                fps * g.frame_size as f64 / 1e6,
                s.reattached,
                s.latency_last_ns as f64 / 1e3,
                s.latency_avg_ns as f64 / 1e3,
                s.latency_max_ns as f64 / 1e3,
            ));
            print!("{out}");
            std::io::stdout().flush()?;
        }
        last_written = written;
        last_stats = s;
        if once || STOP.load(Ordering::Relaxed) || limit.is_some_and(|l| started.elapsed() >= l) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or(format!("size {s:?}: use WIDTHxHEIGHT"))?;
    Ok((
        w.parse().map_err(|_| format!("width {w:?}"))?,
        h.parse().map_err(|_| format!("height {h:?}"))?,
    ))
}

pub(crate) fn parse_fps(s: &str) -> Result<(u32, u32), String> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let n: u32 = n.parse().map_err(|_| format!("fps {s:?}"))?;
    let d: u32 = d.parse().map_err(|_| format!("fps {s:?}"))?;
    if n == 0 || d == 0 {
        return Err(format!("fps {s:?} must be positive"));
    }
    Ok((n, d))
}

struct TestsrcOpts {
    unpaced: bool,
    frames: Option<u64>,
    depth: u32,
    keep: bool,
    wait_ms: u64,
}

fn testsrc_cmd(id: &str, size: &str, format: &str, fps: &str, o: &TestsrcOpts) -> CliResult {
    let TestsrcOpts {
        unpaced,
        frames,
        depth,
        keep,
        wait_ms,
    } = *o;
    let format = PixelFormat::parse(format).map_err(|e| {
        let names: Vec<&str> = ALL_FORMATS.iter().map(|f| f.ffmpeg_name()).collect();
        format!("{e} (known: {})", names.join(", "))
    })?;
    let (w, h) = parse_size(size)?;
    let (fps_num, fps_den) = parse_fps(fps)?;
    let mut cfg = SlotConfig::new(format, w, h);
    cfg.fps_num = fps_num;
    cfg.fps_den = fps_den;
    cfg.depth = depth;
    cfg.source_type = "testsrc".into();
    cfg.keep_on_close = keep;
    catch_signals();
    let mut p = Producer::create(id, &cfg)?;
    let g = *p.geometry();
    eprintln!(
        "framecache: testsrc → slot {id}: {} {w}x{h} @ {} fps, depth {depth}, {} bytes/frame ({})",
        format.ffmpeg_name(),
        fps_text(fps_num, fps_den),
        g.frame_size,
        p.path().display()
    );
    let hold = Instant::now() + Duration::from_millis(wait_ms);
    while Instant::now() < hold && !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let period = Duration::from_secs_f64(f64::from(fps_den) / f64::from(fps_num));
    let start = Instant::now();
    let mut seq = 0u64;
    while frames.is_none_or(|n| seq < n) && !STOP.load(Ordering::Relaxed) {
        if !unpaced {
            let due = start + period.mul_f64(seq as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut f = p.acquire()?;
        testsrc::fill(&g, seq, f.data());
        f.commit(FrameMeta {
            pts: seq as i64,
            capture_ns: 0,
            flags: 0,
        })?;
        seq += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "framecache: testsrc published {seq} frames in {secs:.2}s ({:.1} fps)",
        seq as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn verify(
    id: &str,
    frames: Option<u64>,
    mode: Mode,
    start: Start,
    copy: bool,
    timeout_ms: u64,
    wait_ms: u64,
    delay_us: u64,
    json: bool,
) -> CliResult {
    let cfg = ConsumerConfig {
        mode: match mode {
            Mode::Sequential => ReadMode::Sequential,
            Mode::Latest => ReadMode::Latest,
        },
        start: match start {
            Start::Newest => StartAt::Newest,
            Start::Oldest => StartAt::Oldest,
            Start::Next => StartAt::Next,
        },
    };
    let wait_until = Instant::now() + Duration::from_millis(wait_ms);
    let mut c = loop {
        match Consumer::open(id, cfg) {
            Err(Error::NotFound(_)) if Instant::now() < wait_until => {
                std::thread::sleep(Duration::from_millis(5))
            }
            r => break r?,
        }
    };
    let timeout = Duration::from_millis(timeout_ms);
    let mut buf = Vec::new();
    let (mut good, mut corrupt, mut torn_views, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    let mut last_seq: Option<u64> = None;
    let mut epochs = 0u64;
    let end = loop {
        if frames.is_some_and(|n| good + corrupt >= n) {
            break "frames";
        }
        let (info, bad) = if copy {
            match c.read_copy(&mut buf, timeout) {
                // The attached slot's geometry: a re-attach may have changed it.
                Ok(info) => (
                    info,
                    testsrc::count_mismatches(c.geometry(), info.seq, &buf),
                ),
                Err(Error::BufferTooSmall { need, .. }) => {
                    buf.resize(need, 0);
                    continue;
                }
                Err(Error::WriterGone) => break "writer-gone",
                Err(Error::Timeout) => break "timeout",
                Err(e) => return Err(e.into()),
            }
        } else {
            match c.read(timeout) {
                Ok(f) => {
                    let bad = testsrc::count_mismatches(f.geometry(), f.info.seq, f.data());
                    if f.is_intact() {
                        (f.info, bad)
                    } else {
                        // Overwritten while we checked it: the API told us not to trust it.
                        torn_views += 1;
                        continue;
                    }
                }
                Err(Error::WriterGone) => break "writer-gone",
                Err(Error::Timeout) => break "timeout",
                Err(e) => return Err(e.into()),
            }
        };
        if c.stats().reattached != epochs {
            epochs = c.stats().reattached;
            last_seq = None;
        }
        if last_seq.is_some_and(|l| info.seq <= l) {
            out_of_order += 1;
        }
        last_seq = Some(info.seq);
        if bad == 0 {
            good += 1;
        } else {
            corrupt += 1;
        }
        if delay_us > 0 {
            std::thread::sleep(Duration::from_micros(delay_us));
        }
    };
    let s = c.stats();
    let ok = corrupt == 0 && out_of_order == 0 && good > 0;
    let result = serde_json::json!({
        "slot": id, "ok": ok, "end": end, "good": good, "corrupt": corrupt, "torn_views": torn_views,
        "out_of_order": out_of_order, "last_seq": last_seq, "stats": s,
    });
    if json {
        println!("{result}");
    } else {
        println!(
            "{id}: {} good frames, {corrupt} corrupt, {out_of_order} out of order, {} skipped, {} overwritten, {} reattached, ended by {end}",
            good, s.frames_skipped, s.overwritten, s.reattached
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn gc(dry_run: bool) -> CliResult {
    let root = slot::root_dir();
    let mut removed = 0;
    // Unreadable files count as stale too: removed only if no writer holds their lock.
    let frames = ring::list_slots(&root)?
        .into_iter()
        .map(|(id, i)| (id, slot::SlotKind::Frames, i.map(|i| i.writer_alive)));
    let packets = framecache::packet::list_slots(&root)?
        .into_iter()
        .map(|(id, i)| (id, slot::SlotKind::Packets, i.map(|i| i.writer_alive)));
    for (id, kind, alive) in frames.chain(packets) {
        if matches!(alive, Ok(true)) {
            continue;
        }
        let path = slot::slot_path(&root, &id, kind)?;
        if dry_run {
            println!("would remove {}", path.display());
        } else {
            // One slot we may not touch (another user's) must not stop the rest.
            match slot::remove_if_stale(&root, &path) {
                Ok(true) => {
                    println!("removed {}", path.display());
                    removed += 1;
                }
                Ok(false) => {}
                Err(e) => eprintln!("framecache: skipped {}: {e}", path.display()),
            }
        }
    }
    for key in framecache::cuda::list_keys(&root) {
        let path = root.join(format!("{key}.cuframes"));
        if dry_run {
            if std::fs::File::open(&path).is_ok_and(|f| !slot::writer_lock_held(&f)) {
                println!("would remove {}", path.display());
            }
            continue;
        }
        match framecache::cuda::remove_if_stale(&root, &key) {
            Ok(true) => {
                println!("removed {} and its socket", path.display());
                removed += 1;
            }
            Ok(false) => {}
            Err(e) => eprintln!("framecache: skipped {}: {e}", path.display()),
        }
    }
    for tmp in slot::stale_temporaries(&root) {
        if dry_run {
            println!("would remove {}", tmp.display());
        } else if std::fs::remove_file(&tmp).is_ok() {
            println!("removed {}", tmp.display());
            removed += 1;
        }
    }
    if !dry_run {
        println!("{removed} removed");
    }
    Ok(ExitCode::SUCCESS)
}

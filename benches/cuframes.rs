//! GPU frames from one process to another: cuframes (CUDA IPC, no host copy) against the way
//! without it, copying each frame through host memory (`cuMemcpyDtoH` into a framecache frame
//! slot, then `cuMemcpyHtoD` in the reader), in the same run, for 1080p and 2160p NV12.
//!
//! Per frame the publisher takes t0 (CLOCK_MONOTONIC), writes the frame on the GPU
//! (`cuMemsetD8Async`), and hands it over; the subscriber, once its stream may use the frame
//! (after `cuStreamWaitEvent` or after its `cuMemcpyHtoD`, then `cuStreamSynchronize`), takes
//! t1. Latency = t1 - t0 (p50/p99, paced at 120 frames/s); frames/s = frames the subscriber
//! got per second with the publisher unpaced.
//!
//!   cargo bench --bench cuframes -- [FRAMES]
//!
//! Needs an NVIDIA GPU; elsewhere it prints why it skips and exits 0.

mod common;

use std::time::{Duration, Instant};

use common::{get, percentile, say, Proc, RootDir, CHILD_ARG};
use framecache::cuda::{
    cuda_available, Backend, BackendChoice, CudaBackend, Publisher, PublisherConfig, Subscriber,
    SubscriberConfig,
};
use framecache::ring::{Consumer, ConsumerConfig, FrameMeta, Producer, ReadMode, SlotConfig};
use framecache::slot::monotonic_ns;
use framecache::{FrameGeometry, PixelFormat};

const PACED_FPS: u64 = 120;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        child(&args[2..]);
        return;
    }
    if !cuda_available() {
        println!("cuframes bench SKIPPED: no CUDA driver or device on this machine");
        return;
    }
    let frames: u64 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(600);
    println!("{}", common::machine_line());
    println!("| frame | method | latency p50 | latency p99 | frames/s (unpaced) |");
    println!("|---|---|---:|---:|---:|");
    for (w, h) in [(1920u32, 1080u32), (3840, 2160)] {
        let mut rows = Vec::new();
        for method in ["cuframes", "host-copy"] {
            let paced = run(method, w, h, frames, true);
            let unpaced = run(method, w, h, frames, false);
            println!(
                "| {w}x{h} NV12 | {method} | {:.0} µs | {:.0} µs | {:.0} |",
                paced.0 / 1e3,
                paced.1 / 1e3,
                unpaced.2
            );
            rows.push((paced, unpaced));
        }
        println!(
            "| {w}x{h} NV12 | ratio | {:.1}x lower | {:.1}x lower | {:.1}x more |",
            rows[1].0 .0 / rows[0].0 .0,
            rows[1].0 .1 / rows[0].0 .1,
            rows[0].1 .2 / rows[1].1 .2
        );
    }
    println!();
    for line in splits().iter() {
        println!("{line}");
    }
}

/// One run: returns (p50 ns, p99 ns, frames/s at the subscriber).
fn run(method: &str, w: u32, h: u32, frames: u64, paced: bool) -> (f64, f64, f64) {
    let root = RootDir(std::env::temp_dir().join(format!("fc-bench-cu-{}", std::process::id())));
    std::fs::create_dir_all(&root.0).unwrap();
    let rootarg = format!("root={}", root.0.display());
    let key = "bench";
    let be = CudaBackend::new(0).expect("CUDA");
    let stream = be.stream_create().unwrap();
    let g = FrameGeometry::new(PixelFormat::Nv12, w, h, 1).unwrap();
    let mut child: Option<Proc>;
    // Until the subscriber has its frames and exits (or a minute passes).
    let t_end = Instant::now() + Duration::from_secs(60);
    let alive = |c: &mut Option<Proc>| c.as_mut().unwrap().child.try_wait().unwrap().is_none();
    let period = Duration::from_nanos(1_000_000_000 / PACED_FPS);
    let spawn = |root: &str| {
        let mut c = Proc::spawn(
            &[
                method.to_string(),
                root.to_string(),
                format!("frames={frames}"),
                format!("w={w}"),
                format!("h={h}"),
            ],
            std::process::Stdio::null(),
            vec![],
        );
        c.expect("ready");
        c
    };
    match method {
        "cuframes" => {
            let mut cfg = PublisherConfig::new(PixelFormat::Nv12, w, h);
            cfg.root = Some(root.0.clone());
            cfg.backend = BackendChoice::Cuda(0);
            let mut p = Publisher::create(key, &cfg).unwrap();
            child = Some(spawn(&rootarg));
            let mut n = 0u64;
            while alive(&mut child) && Instant::now() < t_end {
                if paced {
                    common::sleep_until(monotonic_ns() + period.as_nanos() as u64);
                }
                let t0 = monotonic_ns() as i64;
                let b = match p.acquire(stream) {
                    Ok(b) => b,
                    Err(_) => continue,
                };
                p.backend()
                    .fill(b.base, (n % 251) as u8, g.frame_size, stream)
                    .unwrap();
                p.publish(stream, t0, 0, 0).unwrap();
                n += 1;
            }
        }
        _ => {
            let mut cfg = SlotConfig::new(PixelFormat::Nv12, w, h);
            cfg.row_align = 1;
            cfg.depth = 8;
            let mut prod = Producer::create_in(&root.0, key, &cfg).unwrap();
            let dev = be.alloc(g.frame_size).unwrap();
            child = Some(spawn(&rootarg));
            let mut n = 0u64;
            while alive(&mut child) && Instant::now() < t_end {
                if paced {
                    common::sleep_until(monotonic_ns() + period.as_nanos() as u64);
                }
                let t0 = monotonic_ns() as i64;
                be.fill(dev, (n % 251) as u8, g.frame_size, stream).unwrap();
                let mut f = prod.acquire().unwrap();
                be.copy_to_host(f.data(), dev, stream).unwrap();
                f.commit(FrameMeta {
                    pts: t0,
                    ..Default::default()
                })
                .unwrap();
                n += 1;
            }
            be.free(dev, g.frame_size);
        }
    }
    let kv = child.unwrap().finish();
    be.stream_destroy(stream);
    if method == "cuframes" && paced {
        let p: Vec<String> = kv
            .get("split")
            .map(|v| v.split('/').map(String::from).collect())
            .unwrap_or_default();
        if let [a, b, c] = &p[..] {
            splits().push(format!(
                "{w}x{h} cuframes paced, p50 of each part: publisher (acquire, fill, record) \
                 {a} µs, subscriber wake-up {b} µs, wait for the GPU {c} µs"
            ));
        }
    }
    (get(&kv, "p50"), get(&kv, "p99"), get(&kv, "fps"))
}

fn splits() -> std::sync::MutexGuard<'static, Vec<String>> {
    static S: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    S.lock().unwrap()
}

fn child(args: &[String]) {
    let kv = common::parse_kv(args.iter().map(String::as_str));
    let method = args[0].as_str();
    let root = std::path::PathBuf::from(kv.get("root").unwrap());
    let frames: u64 = get(&kv, "frames");
    let be = CudaBackend::new(0).expect("CUDA");
    let stream = be.stream_create().unwrap();
    let mut lat = Vec::new();
    let mut split: [Vec<u64>; 3] = Default::default();
    let t = Instant::now();
    match method {
        "cuframes" => {
            let cfg = SubscriberConfig {
                backend: BackendChoice::Cuda(0),
                root: Some(root),
                ..Default::default()
            };
            let mut s = Subscriber::open("bench", &cfg).unwrap();
            say("ready");
            while (lat.len() as u64) < frames {
                let h = s.acquire(stream, Duration::from_secs(10)).unwrap();
                let t_acq = monotonic_ns();
                be.synchronize(stream).unwrap();
                let t1 = monotonic_ns();
                lat.push(t1 - h.meta.pts as u64);
                // Where the latency goes: the publisher's acquire + fill + record, the wake-up
                // of this process, the wait for the GPU.
                split[0].push(h.meta.publish_ns.saturating_sub(h.meta.pts as u64));
                split[1].push(t_acq.saturating_sub(h.meta.publish_ns));
                split[2].push(t1 - t_acq);
                let _ = s.release(&h, stream);
            }
        }
        _ => {
            let w: u32 = get(&kv, "w");
            let h: u32 = get(&kv, "h");
            let size = FrameGeometry::new(PixelFormat::Nv12, w, h, 1)
                .unwrap()
                .frame_size;
            let dev = be.alloc(size).unwrap();
            let mut c = None;
            while c.is_none() {
                c = Consumer::open_in(
                    &root,
                    "bench",
                    ConsumerConfig {
                        mode: ReadMode::Latest,
                        ..Default::default()
                    },
                )
                .ok();
            }
            let mut c = c.unwrap();
            say("ready");
            while (lat.len() as u64) < frames {
                let f = c.read(Duration::from_secs(10)).unwrap();
                be.copy_from_host(dev, f.data(), stream).unwrap();
                if f.is_intact() {
                    lat.push(monotonic_ns() - f.info.pts as u64);
                }
            }
            be.free(dev, size);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort_unstable();
    let split: Vec<String> = split
        .iter_mut()
        .map(|v| {
            v.sort_unstable();
            (percentile(v, 50.0) / 1000).to_string()
        })
        .collect();
    say(&format!(
        "result p50={} p99={} fps={:.1} split={}",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.len() as f64 / secs,
        split.join("/")
    ));
}

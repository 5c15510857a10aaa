//! `framecache cuframes publish|subscribe`: a test source and a verifying sink for the CUDA-IPC
//! ring, on a GPU or with the host backend. Every byte of plane `p` of frame `seq` is
//! `framecache::cuda::pattern_byte(seq, p)`, so a subscriber can check each frame it gets.

#![allow(clippy::needless_range_loop)] // plane loops index several parallel arrays (as in the library)

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use framecache::cuda::{
    pattern_byte, BackendChoice, Policy, Publisher, PublisherConfig, Subscriber, SubscriberConfig,
};
use framecache::{testsrc, Error, PixelFormat};

use crate::{CliResult, STOP};

/// Options of `cuframes publish`.
#[derive(clap::Args)]
pub struct PubOpts {
    /// Key (1-64 characters of A-Z a-z 0-9 . _ -).
    key: String,
    /// cuda, cuda:N (device ordinal) or host (CPU implementation, no GPU needed).
    #[arg(long, default_value = "cuda")]
    backend: String,
    /// Pixel format.
    #[arg(long, default_value = "nv12")]
    format: String,
    /// WIDTHxHEIGHT.
    #[arg(long, default_value = "1920x1080", value_parser = crate::parse_size)]
    size: (u32, u32),
    /// Frames per second (0 = as fast as possible).
    #[arg(long, default_value_t = 60.0)]
    fps: f64,
    /// Stop after this many frames (0 = until interrupted).
    #[arg(long, default_value_t = 0)]
    frames: u64,
    /// Buffers in the pool.
    #[arg(long, default_value_t = 8)]
    buffers: u32,
    /// Subscriber slots.
    #[arg(long, default_value_t = 8)]
    max_subscribers: u32,
    /// Skip frames instead of revoking holds when every buffer is held.
    #[arg(long)]
    skip: bool,
    /// Keep the pool this long after the last frame.
    #[arg(long, default_value_t = 500)]
    linger_ms: u64,
    /// Also publish the encoded streams of this MPEG-TS file beside the frames (protocol
    /// version 2, packet slot `cuframes-KEY-packets`): with each frame, the file's next video
    /// access unit and the audio before it, as an encoder would. The file is read once.
    #[arg(long)]
    packets: Option<String>,
    /// Payload size of that packet slot in MiB.
    #[arg(long, default_value_t = 32)]
    packet_ring_mb: u64,
    /// Answer at most this protocol version (1 acts as a version-1 publisher; for tests).
    #[arg(long, default_value_t = 2, hide = true)]
    proto_max: u16,
}

pub fn publish(o: PubOpts) -> CliResult {
    crate::catch_signals();
    let mut cfg = PublisherConfig::new(PixelFormat::parse(&o.format)?, o.size.0, o.size.1);
    cfg.backend = BackendChoice::parse(&o.backend)?;
    cfg.buffers = o.buffers;
    cfg.max_subscribers = o.max_subscribers;
    cfg.policy = if o.skip { Policy::Skip } else { Policy::Revoke };
    if o.fps > 0.0 {
        // pts counts frames, so the time base is one frame (in millihertz for fractional rates).
        let milli = (o.fps * 1000.0).round() as u32;
        cfg.time_base = (1000, milli);
        cfg.rate = (milli, 1000);
    }
    cfg.proto_max = o.proto_max;
    let mut items = Vec::new().into_iter();
    if let Some(file) = &o.packets {
        let (streams, list) = crate::packets::read_ts_file(file)?;
        cfg.packet_streams = streams;
        cfg.packet_payload_size = o.packet_ring_mb << 20;
        items = list.into_iter();
    }
    // The primary stream: the first video one (whose units pace the packets, one per frame).
    let video = cfg
        .packet_streams
        .iter()
        .position(|s| {
            framecache::packet::codec_media(s.codec) == Some(framecache::packet::FC_MEDIA_VIDEO)
        })
        .unwrap_or(0) as u32;
    let mut p = Publisher::create(&o.key, &cfg)?;
    let mut packets = 0u64;
    let g = p.geometry();
    let rows = testsrc::plane_rows(&g);
    let backend = p.backend().clone();
    eprintln!(
        "cuframes {}: {}x{} {} in {} buffers, backend {}",
        o.key, g.width, g.height, o.format, o.buffers, o.backend
    );
    let start = Instant::now();
    let mut attempts = 0u64;
    while (o.frames == 0 || attempts < o.frames) && !STOP.load(Ordering::Relaxed) {
        if o.fps > 0.0 {
            let due = start + Duration::from_secs_f64(attempts as f64 / o.fps);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        attempts += 1;
        let b = match p.acquire(0) {
            Ok(b) => b,
            Err(Error::NoBuffer) => continue,
            Err(e) => return Err(e.into()),
        };
        let seq = p.next_seq();
        for i in 0..b.plane_count as usize {
            let len = u64::from(b.pitches[i]) * u64::from(rows[i]);
            backend.fill(b.planes[i], pattern_byte(seq, i), len, 0)?;
        }
        p.publish(0, seq as i64, 1, 0)?;
        // The encoded stream beside the frames: parameters and units up to and including the
        // next video unit.
        for item in items.by_ref() {
            match item {
                crate::packets::TsItem::Params(i, data) => {
                    p.set_codec_params(i, &data)?;
                }
                crate::packets::TsItem::Unit(stream, pts, dts, flags, data) => {
                    p.publish_packet(&framecache::packet::Packet {
                        stream,
                        pts,
                        dts,
                        flags,
                        data: &data,
                    })?;
                    packets += 1;
                    if stream == video {
                        break;
                    }
                }
            }
        }
    }
    // Give subscribers a moment to take the last frames before the pool goes away.
    std::thread::sleep(Duration::from_millis(o.linger_ms));
    let s = p.stats();
    println!(
        "{}",
        serde_json::json!({
            "attempts": attempts,
            "published": s.published,
            "skipped": s.skipped,
            "revoked": s.revoked,
            "subscribers": s.subscribers,
            "packets": packets,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Options of `cuframes subscribe`.
#[derive(clap::Args)]
pub struct SubOpts {
    /// Key.
    key: String,
    /// cuda, cuda:N or host (must match the publisher).
    #[arg(long, default_value = "cuda")]
    backend: String,
    /// Stop after this many frames (0 = until the publisher is gone).
    #[arg(long, default_value_t = 0)]
    frames: u64,
    /// Check every byte of every frame against the pattern.
    #[arg(long)]
    verify: bool,
    /// Keep this many frames held before releasing the oldest.
    #[arg(long, default_value_t = 0)]
    hold: usize,
    /// Sleep this long after each frame (a slow subscriber).
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Give up after this long without a frame (or without a publisher).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Read this many encoded packets from the packet slot beside the frames instead of
    /// frames (protocol version 2), and report them.
    #[arg(long)]
    packets: Option<u64>,
}

pub fn subscribe(o: SubOpts) -> CliResult {
    crate::catch_signals();
    let cfg = SubscriberConfig {
        backend: BackendChoice::parse(&o.backend)?,
        ..Default::default()
    };
    let mut s = Subscriber::open(&o.key, &cfg)?;
    if let Some(n) = o.packets {
        return read_packets(&mut s, n, Duration::from_millis(o.timeout_ms));
    }
    // The host backend can read the buffer in place; the CUDA one copies it down.
    let backend = s.backend().clone();
    let mut held = std::collections::VecDeque::new();
    let (mut verified, mut bad, mut gone, mut overwritten) = (0u64, 0u64, 0u64, 0u64);
    let mut host = Vec::new();
    let mut first_bad = None;
    let mut got = 0u64;
    while (o.frames == 0 || got < o.frames) && !STOP.load(Ordering::Relaxed) {
        let h = match s.acquire(0, Duration::from_millis(o.timeout_ms)) {
            Ok(h) => h,
            Err(Error::WriterGone) => {
                gone += 1;
                break;
            }
            Err(Error::Timeout) => break,
            Err(e) => return Err(e.into()),
        };
        got += 1;
        let mut ok = true;
        if o.verify {
            let rows = testsrc::plane_rows(&s.geometry().expect("attached"));
            for i in 0..h.plane_count as usize {
                let len = h.pitches[i] as usize * rows[i] as usize;
                host.resize(len, 0);
                backend.copy_to_host(&mut host, h.planes[i], 0)?;
                let want = pattern_byte(h.meta.seq, i);
                if let Some(pos) = host.iter().position(|&b| b != want) {
                    ok = false;
                    first_bad.get_or_insert(format!(
                        "frame {} plane {i} byte {pos}: {} != {want}",
                        h.meta.seq, host[pos]
                    ));
                    break;
                }
            }
        }
        if o.hold_ms > 0 {
            std::thread::sleep(Duration::from_millis(o.hold_ms));
        }
        held.push_back((h, ok));
        while held.len() > o.hold {
            let (h, ok) = held.pop_front().expect("non-empty");
            match s.release(&h, 0) {
                // Only a frame whose release says it stayed intact counts: a revoked one may
                // legitimately have changed under us.
                Ok(()) if o.verify => {
                    verified += 1;
                    if !ok {
                        bad += 1;
                    }
                }
                Ok(()) => {}
                Err(Error::Overwritten) => overwritten += 1,
                Err(Error::WriterGone) => gone += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    while let Some((h, ok)) = held.pop_front() {
        match s.release(&h, 0) {
            Ok(()) if o.verify => {
                verified += 1;
                if !ok {
                    bad += 1;
                }
            }
            Err(Error::Overwritten) => overwritten += 1,
            _ => {}
        }
    }
    let st = s.stats();
    println!(
        "{}",
        serde_json::json!({
            "frames": got,
            "verified": verified,
            "bad": bad,
            "first_bad": first_bad,
            "overwritten": overwritten,
            "missed": st.missed,
            "revoked_notices": st.revoked,
            "torn": st.torn,
            "attaches": st.attaches,
            "gone": gone,
        })
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cuframes subscribe --packets N`: reads packets, reports counts, the first packet's flags
/// and an FNV-1a hash of every payload in order.
fn read_packets(s: &mut Subscriber, n: u64, timeout: Duration) -> CliResult {
    let mut buf = Vec::new();
    let (mut got, mut bytes, mut hash) = (0u64, 0u64, 0xcbf2_9ce4_8422_2325u64);
    let (mut first_flags, mut overruns, mut end) = (None, 0u64, "count");
    while got < n && !STOP.load(Ordering::Relaxed) {
        match s.next_packet(&mut buf, timeout) {
            Ok(info) => {
                got += 1;
                bytes += buf.len() as u64;
                first_flags.get_or_insert(info.flags);
                for &b in &buf {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
            Err(Error::PacketOverrun) => overruns += 1,
            Err(Error::WriterGone) => {
                end = "gone";
                break;
            }
            Err(Error::Timeout) => {
                end = "timeout";
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let st = s.stats();
    println!(
        "{}",
        serde_json::json!({
            "packets": got,
            "bytes": bytes,
            "fnv": format!("{hash:016x}"),
            "first_flags": first_flags,
            "overruns": overruns,
            "skipped": st.packets_skipped,
            "proto_version": st.proto_version,
            "end": end,
        })
    );
    Ok(ExitCode::SUCCESS)
}

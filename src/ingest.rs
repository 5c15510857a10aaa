//! `framecache ingest`: the ingest engine from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecache::ingest::rtmp::DEFAULT_READ_INTERVAL;
use framecache::ingest::{Endpoint, Engine, IngestEvent, KeyConfig, SinkOptions};

use crate::CliResult;

/// Options of `framecache ingest`.
#[derive(clap::Args)]
pub struct IngestOpts {
    /// URLs (see above).
    #[arg(required = true)]
    pub urls: Vec<String>,
    /// Packet slot fed by publish:// keys and pull inputs.
    #[arg(long)]
    pub slot: Option<String>,
    /// A stream key for the listeners: KEY=SLOT or KEY=SLOT:SRT_PASSPHRASE (repeatable).
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Accept any stream key (each feeds the slot of its own name).
    #[arg(long)]
    pub any_key: bool,
    /// A directory file:// inputs may read: NAME=DIR (repeatable).
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// A server other than the playlist's that HLS entries may point to (a CDN): HOST,
    /// HOST:PORT or *.DOMAIN (repeatable). Default: entries stay on the playlist's server.
    #[arg(long = "hls-allow-host")]
    pub hls_hosts: Vec<String>,
    /// Payload ring of each slot in MiB.
    #[arg(long, default_value_t = 32)]
    pub payload_mb: u64,
    /// RTMP publishers are read every this many ms, all in one wake-up; at most that much
    /// latency is added (0 = as data arrives: lowest latency, most CPU per stream).
    #[arg(long, default_value_t = DEFAULT_READ_INTERVAL.as_millis() as u64)]
    pub rtmp_read_ms: u64,
    /// Certificate chain (PEM) that rtmps:// listeners present.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<u64>,
}

fn parse_key(k: &str) -> Result<(String, KeyConfig), String> {
    let (key, rest) = k
        .split_once('=')
        .ok_or_else(|| format!("--key {k}: expected KEY=SLOT[:PASSPHRASE]"))?;
    let (slot, pass) = match rest.split_once(':') {
        Some((s, p)) => (s, Some(p.to_string())),
        None => (rest, None),
    };
    let mut c = KeyConfig::new(slot);
    c.passphrase = pass;
    Ok((key.to_string(), c))
}

/// Runs until interrupted (or `seconds`).
pub fn run(o: IngestOpts) -> CliResult {
    let mut engine = Engine::new()?;
    engine.set_sink_options(SinkOptions {
        payload_size: o.payload_mb.max(1) << 20,
        ..SinkOptions::default()
    });
    engine.set_rtmp_read_interval(Duration::from_millis(o.rtmp_read_ms));
    if let (Some(cert), Some(key)) = (&o.tls_cert, &o.tls_key) {
        engine.set_tls_identity(cert, key)?;
    }
    engine.set_events(Some(Arc::new(|ev: &IngestEvent| match ev {
        IngestEvent::Connected { input, .. } => {
            eprintln!("framecache: ingest: connected {input}")
        }
        IngestEvent::Disconnected { input, reason, .. } => {
            eprintln!("framecache: ingest: disconnected {input}: {reason}")
        }
        IngestEvent::MediaInfo(mi) => {
            let s: Vec<String> = mi
                .streams
                .iter()
                .map(|s| {
                    let name = framecache::packet::codec_name(s.codec);
                    if s.width > 0 {
                        format!("{name} {}x{}", s.width, s.height)
                    } else if s.sample_rate > 0 {
                        format!("{name} {} Hz {} ch", s.sample_rate, s.channels)
                    } else {
                        name.to_string()
                    }
                })
                .collect();
            eprintln!("framecache: ingest: streams: {}", s.join(", "));
        }
        // Failed inputs and refused pushers are in the log already.
        IngestEvent::InputFailed { .. } | IngestEvent::Refused { .. } => {}
        IngestEvent::Packet { .. } => {}
    })));
    let hosts: Vec<&str> = o.hls_hosts.iter().map(String::as_str).collect();
    engine.set_hls_allowed_hosts(&hosts);
    for m in &o.mounts {
        let (name, dir) = m
            .split_once('=')
            .ok_or_else(|| format!("--mount {m}: expected NAME=DIR"))?;
        engine.mounts().add(name, std::path::Path::new(dir))?;
    }
    for k in &o.keys {
        let (key, cfg) = parse_key(k)?;
        engine.registry().register(&key, cfg)?;
    }
    let mut listeners = Vec::new();
    let mut inputs = Vec::new();
    for u in &o.urls {
        let e = Endpoint::parse(u)?;
        let kind = match e {
            Endpoint::RtmpListen(_) => "rtmp",
            Endpoint::RtmpsListen(_) => "rtmps",
            Endpoint::SrtListen(_) => "srt",
            _ => {
                inputs.push(u.as_str());
                continue;
            }
        };
        let b = engine.listen(&e)?;
        println!("listening {kind} {b}");
        listeners.push(b);
    }
    if !inputs.is_empty() {
        let slot = o
            .slot
            .as_deref()
            .ok_or("publish:// keys and pull inputs need --slot ID")?;
        engine.add(slot, &inputs)?;
    }
    if !listeners.is_empty() && engine.registry().keys().is_empty() {
        if o.any_key || listeners.iter().all(|a| a.ip().is_loopback()) {
            engine.registry().set_allow_any(true);
            eprintln!(
                "framecache: ingest: no keys configured: accepting any key (each feeds the slot of its name){}",
                if o.any_key { "" } else { " because the listeners are on loopback only" }
            );
        } else {
            return Err("no stream keys configured for a listener open beyond loopback: give --key KEY=SLOT or --any-key".into());
        }
    } else if o.any_key {
        engine.registry().set_allow_any(true);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let mut last_print = Instant::now();
    let stats_every = Duration::from_secs(10);
    loop {
        let mut wait = stats_every.saturating_sub(last_print.elapsed());
        if let Some(s) = o.seconds {
            let left = Duration::from_secs(s).saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            wait = wait.min(left);
        }
        if crate::wait_stop(wait) {
            break;
        }
        if last_print.elapsed() >= stats_every {
            last_print = Instant::now();
            for (name, s) in engine.streams().snapshot() {
                eprintln!(
                    "framecache: ingest: {name}: {} packets, {} kbit/s, {} dropped, {} reconnects, input {}{}",
                    s.packets,
                    s.bitrate / 1000,
                    s.dropped,
                    s.reconnects,
                    s.current_input,
                    if s.connected { "" } else { " (not connected)" }
                );
            }
        }
    }
    drop(engine);
    Ok(ExitCode::SUCCESS)
}

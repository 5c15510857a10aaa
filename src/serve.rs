//! `framecache serve`: the all-in-one main job. RTMP and SRT ingest, RTMP play, WHEP for
//! browsers, a page listing live streams with a player each, `/metrics` and `/health`, and a
//! built-in demo stream so it shows something on a fresh machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use framecache::ingest::{Engine, IngestEvent, Streams};
use framecache::whep::http::{HttpRequest, Page, Routes};
use framecache::whep::{WhepConfig, WhepEngine};
use serde::Deserialize;

use crate::transcode::{Encoder, Transcoder};
use crate::CliResult;

const INDEX_HTML: &str = include_str!("web/index.html");
const WHEP_JS: &str = include_str!("web/whep.js");
/// 6 s of 640x360 H.264 (constrained baseline, no B-frames) + AAC with a beep each second,
/// made with ffmpeg's testsrc2 and sine sources; looped into the `demo` slot.
const DEMO_TS: &[u8] = include_bytes!("../assets/demo.ts");
/// serve reads RTMP publishers every 20 ms, not the engine's 100 ms: its viewers are WebRTC
/// players, where the added latency counts and frames that arrive in bursts of three make the
/// browser's jitter buffer grow. It costs about nginx-rtmp's CPU per stream instead of a third.
const SERVE_RTMP_READ_INTERVAL: Duration = Duration::from_millis(20);

/// The TOML configuration (every field optional; flags override it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// HTTP (WHEP, page, metrics) address. Default 127.0.0.1:8080.
    pub http: Option<SocketAddr>,
    /// RTMP listener. Default 127.0.0.1:1935; "" or "off" disables.
    pub rtmp: Option<String>,
    /// SRT listener. Default 127.0.0.1:9710; "" or "off" disables.
    pub srt: Option<String>,
    /// RTMPS listener (needs `tls_cert` and `tls_key`). Default off.
    pub rtmps: Option<String>,
    /// Certificate chain (PEM) of the RTMPS listener (and of HTTPS with `https = true`).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// RTMP publishers are read every this many ms (0 = as data arrives). Default 20
    /// (the engine's default is 100; see `SERVE_RTMP_READ_INTERVAL`).
    pub rtmp_read_ms: Option<u64>,
    /// Loop the built-in demo into slot `demo`. Default true.
    pub demo: Option<bool>,
    /// Accept any stream key even off loopback. Default false.
    pub any_key: Option<bool>,
    /// Slot root directory.
    pub root: Option<PathBuf>,
    /// Stream keys.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Pull inputs: cameras and feeds that `serve` fetches itself.
    #[serde(default)]
    pub inputs: Vec<InputEntry>,
    /// Directories `file://NAME/...` inputs may read: NAME = DIR.
    #[serde(default)]
    pub mounts: std::collections::BTreeMap<String, PathBuf>,
    /// Servers other than the playlist's that HLS inputs may fetch from (a CDN): `host`,
    /// `host:port` or `*.domain`. Default none.
    #[serde(default)]
    pub hls_allowed_hosts: Vec<String>,
    /// WHEP settings (its `token` is the viewer token of WHEP and RTMP play).
    #[serde(default)]
    pub whep: WhepSection,
    /// RTMP play settings.
    #[serde(default)]
    pub play: PlaySection,
    /// The operator's control API (`/api/v1/`).
    #[serde(default)]
    pub api: ApiSection,
    /// Serve the HTTP listener (page, WHEP, API) over HTTPS with `tls_cert`/`tls_key`.
    pub https: Option<bool>,
    /// A bearer token `/metrics` requires (for the scraper). Default none: open.
    pub metrics_token: Option<String>,
    /// Transcode streams browsers cannot play (B-frames, HEVC) for WebRTC viewers with the
    /// system's ffmpeg. Default true.
    pub transcode: Option<bool>,
    /// Their H.264 encoder: `auto` (default: NVENC or VA-API when ffmpeg has it and a test
    /// encode works here, else libx264), `libx264`, `h264_nvenc`, `h264_vaapi`.
    pub transcode_encoder: Option<String>,
    /// Take WHIP publishers (`POST /whip/KEY`, OBS 30+ and browsers) into the stream keys, as
    /// RTMP and SRT pushes. Default true.
    pub whip: Option<bool>,
    /// With stream keys configured, let anyone watch without the viewer token. Default false:
    /// when ingest needs keys, watching needs the token.
    pub public_view: Option<bool>,
}

/// `[api]`: the operator's control API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The operator token (`Authorization: Bearer TOKEN`) the control API requires; without it
    /// the API is off. Keep it apart from the viewer token.
    pub token: Option<String>,
}

/// The keys and inputs of the configuration file `path`, as `reload` applies them.
pub fn read_applied(path: &Path) -> Result<crate::api::Applied, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let cfg: ServeConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(applied(&cfg))
}

fn applied(cfg: &ServeConfig) -> crate::api::Applied {
    crate::api::Applied {
        keys: cfg
            .keys
            .iter()
            .map(|k| {
                (
                    k.key.clone(),
                    crate::api::KeySpec {
                        slot: k.slot.clone().unwrap_or_else(|| k.key.clone()),
                        passphrase: k.passphrase.clone(),
                    },
                )
            })
            .collect(),
        inputs: cfg
            .inputs
            .iter()
            .map(|i| {
                (
                    i.slot.clone(),
                    crate::api::InputSpec {
                        urls: i.urls.clone(),
                        timeout_ms: i.timeout_ms,
                    },
                )
            })
            .collect(),
    }
}

/// `[play]`: RTMP play of the slots.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaySection {
    /// Serve RTMP play. Default true.
    pub enabled: Option<bool>,
    /// Plays of one stream at once. Default 16.
    pub max_per_stream: Option<usize>,
    /// Plays at once in total. Default 256.
    pub max_total: Option<usize>,
}

/// One `[[keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Stream key.
    pub key: String,
    /// Slot it feeds (default: the key).
    pub slot: Option<String>,
    /// SRT passphrase.
    pub passphrase: Option<String>,
    /// Allow transcoding this stream for WebRTC viewers. Default true.
    pub transcode: Option<bool>,
    /// A viewer token of this stream alone (WHEP, RTMP play `?token=`, the stream list), accepted
    /// beside `[whep] token`; it also opens the stream's rendition `SLOT-webrtc`.
    pub view_token: Option<String>,
}

/// One `[[inputs]]` entry: a slot fed by pull inputs (`rtsp://`, `srt://HOST:PORT`,
/// `udp://`, `rtmp://HOST/APP/KEY`, HLS, `file://`, `copy://`), highest priority first, with
/// failover and failback.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputEntry {
    /// The slot (and stream name).
    pub slot: String,
    /// Its inputs, highest priority first.
    pub urls: Vec<String>,
    /// Allow transcoding this stream for WebRTC viewers. Default true.
    pub transcode: Option<bool>,
    /// A viewer token of this stream alone, as in `[[keys]]`.
    pub view_token: Option<String>,
    /// An input that does not connect, or sends nothing, for this many ms has failed and the
    /// next one takes over. Default 5000; an edge relaying an origin sets about 1000.
    pub timeout_ms: Option<u64>,
}

/// `[whep]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhepSection {
    /// Viewers per stream.
    pub max_viewers_per_stream: Option<usize>,
    /// Viewers in total.
    pub max_viewers_total: Option<usize>,
    /// Bearer token.
    pub token: Option<String>,
    /// CORS origins.
    pub allowed_origins: Option<Vec<String>>,
    /// ICE address (media sockets).
    pub ice_ip: Option<std::net::IpAddr>,
}

/// Flags of `framecache serve`.
#[derive(clap::Args)]
pub struct ServeOpts {
    /// HTTP address (page, WHEP, metrics). Default 127.0.0.1:8080.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// RTMP listener address, or "off". Default 127.0.0.1:1935.
    #[arg(long)]
    pub rtmp: Option<String>,
    /// SRT listener address, or "off". Default 127.0.0.1:9710.
    #[arg(long)]
    pub srt: Option<String>,
    /// RTMPS listener address (with --tls-cert and --tls-key), or "off". Default off.
    #[arg(long)]
    pub rtmps: Option<String>,
    /// Certificate chain (PEM) of the RTMPS listener.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Serve the HTTP listener over HTTPS (with --tls-cert and --tls-key).
    #[arg(long)]
    pub https: bool,
    /// TOML configuration (keys, passphrases, caps, token, addresses); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not loop the built-in demo into slot `demo`.
    #[arg(long)]
    pub no_demo: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<u64>,
}

fn listen_addr(v: &str, what: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() || v == "off" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e| format!("{what} address {v:?}: {e}"))
}

/// Runs until interrupted.
pub fn run(o: ServeOpts) -> CliResult {
    let cfg: ServeConfig = match &o.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => ServeConfig::default(),
    };
    let http = o
        .http
        .or(cfg.http)
        .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid"));
    let rtmp = listen_addr(
        o.rtmp
            .as_deref()
            .or(cfg.rtmp.as_deref())
            .unwrap_or("127.0.0.1:1935"),
        "RTMP",
    )?;
    let srt = listen_addr(
        o.srt
            .as_deref()
            .or(cfg.srt.as_deref())
            .unwrap_or("127.0.0.1:9710"),
        "SRT",
    )?;
    let rtmps = listen_addr(
        o.rtmps.as_deref().or(cfg.rtmps.as_deref()).unwrap_or("off"),
        "RTMPS",
    )?;
    let tls_cert = o.tls_cert.clone().or(cfg.tls_cert.clone());
    let tls_key = o.tls_key.clone().or(cfg.tls_key.clone());
    let root = cfg.root.clone().unwrap_or_else(framecache::slot::root_dir);

    let mut ingest = Engine::new()?;
    ingest.set_root(root.clone());
    ingest.set_rtmp_read_interval(
        cfg.rtmp_read_ms
            .map_or(SERVE_RTMP_READ_INTERVAL, Duration::from_millis),
    );
    ingest.set_events(Some(Arc::new(|ev: &IngestEvent| match ev {
        // The demo file ends and restarts every few seconds: not news.
        IngestEvent::Connected { input, .. } | IngestEvent::Disconnected { input, .. }
            if input.starts_with("file://builtin/") => {}
        IngestEvent::Connected { input, .. } => {
            eprintln!("framecache: serve: connected {input}")
        }
        IngestEvent::Disconnected { input, reason, .. } => {
            eprintln!("framecache: serve: disconnected {input}: {reason}")
        }
        _ => {}
    })));
    let at_start = applied(&cfg);
    for (key, spec) in &at_start.keys {
        crate::api::add_key(&ingest, key, spec)?;
    }
    // When ingest needs keys, watching (WHEP and RTMP play) needs the viewer token too.
    let viewer_token = cfg.whep.token.clone();
    let open: Vec<&str> = cfg
        .keys
        .iter()
        .filter(|k| k.view_token.is_none())
        .map(|k| k.key.as_str())
        .collect();
    if !open.is_empty() && viewer_token.is_none() && !cfg.public_view.unwrap_or(false) {
        return Err(format!(
            "stream keys are configured but no viewer token guards {}: anyone could watch. \
             Set [whep] token (it guards WHEP, RTMP play and the stream list), a view_token \
             for each key, or public_view = true to let anyone watch",
            open.join(", ")
        )
        .into());
    }
    // A key's own viewer token opens its slot and the slot's rendition.
    let stream_tokens: std::collections::HashMap<String, String> = cfg
        .keys
        .iter()
        .filter_map(|k| {
            let slot = k.slot.clone().unwrap_or_else(|| k.key.clone());
            Some((slot, k.view_token.clone()?))
        })
        .chain(
            cfg.inputs
                .iter()
                .filter_map(|i| Some((i.slot.clone(), i.view_token.clone()?))),
        )
        .flat_map(|(slot, t)| [(format!("{slot}-webrtc"), t.clone()), (slot, t)])
        .collect();
    ingest.set_play_access(
        cfg.play.enabled.unwrap_or(true),
        framecache::ingest::rtmp::PlayAccess {
            token: viewer_token,
            max_per_stream: cfg.play.max_per_stream.unwrap_or(16),
            max_total: cfg.play.max_total.unwrap_or(256),
        },
    );
    for (slot, t) in &stream_tokens {
        ingest.set_play_token(slot, Some(t));
    }
    let mut listeners = Vec::new();
    if let Some(a) = rtmp {
        let b = ingest.listen_rtmp(a)?;
        println!("listening rtmp rtmp://{b}/live/KEY (publish and play)");
        listeners.push(b);
    }
    if let Some(a) = rtmps {
        let (Some(cert), Some(key)) = (&tls_cert, &tls_key) else {
            return Err("the RTMPS listener needs tls_cert and tls_key".into());
        };
        ingest.set_tls_identity(cert, key)?;
        let b = ingest.listen_rtmps(a)?;
        println!("listening rtmps rtmps://{b}/live/KEY (publish and play)");
        listeners.push(b);
    }
    if let Some(a) = srt {
        match ingest.listen_srt(a) {
            Ok(b) => {
                println!("listening srt srt://{b}?streamid=KEY (publish; play: streamid=#!::r=STREAM,m=request)");
                listeners.push(b);
            }
            Err(e) => eprintln!("framecache: serve: SRT listener not started: {e}"),
        }
    }
    // WHIP publishers come in over the HTTP listener: it counts as a push listener.
    let whip = cfg.whip.unwrap_or(true);
    if whip {
        listeners.push(http);
    }
    let whip_gate = ingest.push_gate("whip");
    if ingest.registry().keys().is_empty() {
        if cfg.any_key.unwrap_or(false) || listeners.iter().all(|a| a.ip().is_loopback()) {
            ingest.registry().set_allow_any(true);
            eprintln!(
                "framecache: serve: no stream keys configured: accepting any key (each feeds the slot of its name){}",
                if cfg.any_key.unwrap_or(false) { "" } else { " because the listeners are on loopback only" }
            );
        } else {
            return Err("no stream keys configured for a listener open beyond loopback: add [[keys]] to the config or any_key = true".into());
        }
    }

    // The demo: the embedded clip, looped in real time through a VOD mount.
    let _demo_dir = if cfg.demo.unwrap_or(true) && !o.no_demo {
        let dir = tempdir("framecache-serve")?;
        std::fs::write(dir.path().join("demo.ts"), DEMO_TS)?;
        ingest.mounts().add("builtin", dir.path())?;
        ingest.add("demo", &["file://builtin/demo.ts"])?;
        println!("demo stream: slot demo (looped test pattern with a beep each second)");
        Some(dir)
    } else {
        None
    };

    // Pull inputs of the configuration: cameras and feeds, each slot with its failover list.
    let hosts: Vec<&str> = cfg.hls_allowed_hosts.iter().map(String::as_str).collect();
    ingest.set_hls_allowed_hosts(&hosts);
    for (name, dir) in &cfg.mounts {
        ingest
            .mounts()
            .add(name, dir)
            .map_err(|e| format!("[mounts] {name}: {e}"))?;
    }
    for i in &cfg.inputs {
        let urls: Vec<&str> = i.urls.iter().map(String::as_str).collect();
        if urls.is_empty() {
            return Err(format!("[[inputs]] {}: urls is empty", i.slot).into());
        }
        crate::api::add_input(&mut ingest, &i.slot, &at_start.inputs[&i.slot])
            .map_err(|e| format!("[[inputs]] {}: {e}", i.slot))?;
        let shown: Vec<String> = urls
            .iter()
            .map(|u| framecache::ingest::url::redact(u))
            .collect();
        println!("pulling slot {} from {}", i.slot, shown.join(", "));
    }

    let keys = ingest.registry().clone();
    let known: framecache::whep::KnownStreams =
        Arc::new(move |stream: &str| keys.feeds_slot(stream));
    let streams = ingest.streams().clone();
    let ingest = Arc::new(std::sync::Mutex::new(ingest));
    let no_transcode: Vec<String> = cfg
        .keys
        .iter()
        .filter(|k| k.transcode == Some(false))
        .map(|k| k.slot.clone().unwrap_or_else(|| k.key.clone()))
        .chain(
            cfg.inputs
                .iter()
                .filter(|i| i.transcode == Some(false))
                .map(|i| i.slot.clone()),
        )
        .collect();
    let transcode = cfg.transcode.unwrap_or(true);
    let encoder = match cfg.transcode_encoder.as_deref().unwrap_or("auto") {
        _ if !transcode => Encoder::Libx264,
        "auto" => Encoder::detect(),
        name => {
            let e = Encoder::parse(name).ok_or_else(|| {
                format!("transcode_encoder = {name:?}: use auto, libx264, h264_nvenc or h264_vaapi")
            })?;
            if !e.works() {
                return Err(format!(
                    "transcode_encoder = {name:?} does not work on this machine (a test encode \
                     with the system's ffmpeg failed: no device, driver or encoder); use auto \
                     or libx264"
                )
                .into());
            }
            e
        }
    };
    if transcode {
        eprintln!(
            "framecache: serve: streams browsers cannot play are transcoded with {}",
            encoder.describe()
        );
    }
    let transcoder = Transcoder::new(
        ingest.clone(),
        root.clone(),
        transcode,
        encoder,
        Arc::new(move |s: &str| no_transcode.iter().any(|n| n == s)),
    );
    let t = transcoder.clone();
    let renditions: framecache::whep::Renditions =
        Arc::new(move |stream: &str, why: &str| t.rendition(stream, why));
    let w = &cfg.whep;
    let wcfg = WhepConfig {
        root: Some(root.clone()),
        max_viewers_per_stream: w.max_viewers_per_stream.unwrap_or(8),
        max_viewers_total: w.max_viewers_total.unwrap_or(256),
        token: w.token.clone(),
        allowed_origins: w.allowed_origins.clone().unwrap_or_default(),
        // Media sockets on the HTTP address (every interface when HTTP is on 0.0.0.0).
        ice_ip: w.ice_ip.unwrap_or(http.ip()),
        known_streams: Some(known),
        renditions: Some(renditions),
        ..WhepConfig::default()
    };
    let whep = WhepEngine::new(wcfg)?;
    for (stream, t) in &stream_tokens {
        whep.set_stream_token(stream, Some(t));
    }
    if whip {
        whep.set_push_gate(Some(whip_gate));
    }
    if cfg.api.token.as_deref().is_some_and(|t| t.len() < 16) {
        return Err("[api] token: use at least 16 characters for the operator token".into());
    }
    if cfg.api.token.is_some() && cfg.api.token == cfg.whep.token {
        return Err("[api] token must differ from the viewer token ([whep] token)".into());
    }
    let api = Arc::new(crate::api::Api::new(
        cfg.api.token.clone(),
        root.clone(),
        ingest.clone(),
        whep.clone(),
        o.config.clone(),
        at_start,
    ));
    let routes = routes(
        root.clone(),
        whep.clone(),
        streams,
        cfg.metrics_token.clone(),
        transcoder.clone(),
        api.clone(),
    );
    let listener = whep
        .handle()
        .block_on(tokio::net::TcpListener::bind(http))
        .map_err(|e| format!("cannot listen on {http}: {e}"))?;
    let bound = listener.local_addr()?;
    let https = o.https || cfg.https.unwrap_or(false);
    let server = if https {
        let (Some(cert), Some(key)) = (&tls_cert, &tls_key) else {
            return Err("HTTPS needs tls_cert and tls_key".into());
        };
        let tls = framecache::ingest::rtmp::tls_identity(cert, key)?;
        whep.handle().spawn(framecache::whep::http::serve_tls(
            listener,
            whep.clone(),
            Some(routes),
            tls,
        ))
    } else {
        whep.handle().spawn(framecache::whep::http::serve(
            listener,
            whep.clone(),
            Some(routes),
        ))
    };
    let scheme = if https { "https" } else { "http" };
    let whip_at = if whip { ", WHIP at /whip/KEY" } else { "" };
    println!(
        "listening http {scheme}://{bound}/ (page, WHEP at /whep/STREAM{whip_at}, /metrics, /health)"
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let start = std::time::Instant::now();
    loop {
        let wait = match o.seconds {
            Some(s) => Duration::from_secs(s).saturating_sub(start.elapsed()),
            None => Duration::from_secs(3600),
        };
        if wait.is_zero() || crate::wait_stop(wait.min(Duration::from_secs(1))) {
            break;
        }
        if crate::RELOAD.swap(false, std::sync::atomic::Ordering::Relaxed) {
            match api.reload() {
                Ok(v) => eprintln!("framecache: serve: reloaded the configuration: {v}"),
                Err(e) => eprintln!("framecache: serve: reload failed, nothing changed: {e}"),
            }
        }
        // Renditions without viewers for a while stop.
        let ws = whep.stats();
        transcoder.tick(|s| {
            ws.streams
                .iter()
                .find(|x| x.stream == s)
                .map_or(0, |x| x.viewers)
        });
    }
    server.abort();
    whep.shutdown();
    transcoder.shutdown();
    drop(ingest);
    Ok(ExitCode::SUCCESS)
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(prefix: &str) -> std::io::Result<TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let p = base.join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', " ")
}

/// Whether `authorization` is `Bearer TOKEN` (constant-time compare).
fn unauthorized(what: &str) -> Option<Page> {
    Some(Page {
        status: 401,
        content_type: "application/json",
        body: serde_json::json!({"error": format!("{what}: Authorization: Bearer TOKEN required")})
            .to_string()
            .into_bytes(),
    })
}

fn routes(
    root: PathBuf,
    whep: WhepEngine,
    streams: Streams,
    metrics_token: Option<String>,
    transcoder: Transcoder,
    api: Arc<crate::api::Api>,
) -> Routes {
    Arc::new(move |req: &HttpRequest| {
        let pq = req.path.as_str();
        let path = pq.split('?').next().unwrap_or(pq);
        if path.starts_with("/api/v1/") {
            return api.handle(req);
        }
        if !matches!(req.method.as_str(), "GET" | "HEAD") {
            return None;
        }
        let auth = req.authorization.as_deref();
        match path {
            "/" | "/index.html" => Some(Page {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: INDEX_HTML.as_bytes().to_vec(),
            }),
            "/whep.js" => Some(Page {
                status: 200,
                content_type: "text/javascript; charset=utf-8",
                body: WHEP_JS.as_bytes().to_vec(),
            }),
            "/health" => Some(Page {
                status: 200,
                content_type: "application/json",
                body: serde_json::json!({"status": "ok", "viewers": whep.stats().viewers})
                    .to_string()
                    .into_bytes(),
            }),
            "/metrics"
                if metrics_token.as_deref().is_some_and(|t| {
                    !framecache::media::credential::admits(
                        framecache::media::credential::bearer(auth),
                        &[Some(t)],
                    )
                }) =>
            {
                unauthorized("metrics")
            }
            // The stream list is for viewers: it lists the streams the request's token opens
            // (the global viewer token: all; a stream's own token: that stream and its
            // rendition), and a token that opens none gets 401.
            "/api/streams" => match api_streams(&root, &whep, &streams, &transcoder, auth) {
                None => unauthorized("the stream list"),
                Some(body) => Some(Page {
                    status: 200,
                    content_type: "application/json",
                    body: body.into_bytes(),
                }),
            },
            "/metrics" => Some(Page {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics(&root, &whep, &streams, &transcoder).into_bytes(),
            }),
            _ => None,
        }
    })
}

fn api_streams(
    root: &Path,
    whep: &WhepEngine,
    streams: &Streams,
    tc: &Transcoder,
    auth: Option<&str>,
) -> Option<String> {
    let all = whep.authorize(auth).is_ok();
    let transcoding = tc.status();
    let ws = whep.stats();
    let ingest = streams.snapshot();
    let mut out = Vec::new();
    for (id, info) in framecache::packet::list_slots(root).unwrap_or_default() {
        let Ok(i) = info else { continue };
        if whep.authorize_stream(auth, &id).is_err() {
            continue;
        }
        let codecs: Vec<String> = i
            .streams
            .iter()
            .map(|s| {
                if s.width > 0 {
                    format!("{} {}x{}", s.codec_name, s.width, s.height)
                } else {
                    s.codec_name.to_string()
                }
            })
            .collect();
        let viewers = ws
            .streams
            .iter()
            .find(|s| s.stream == id)
            .map_or(0, |s| s.viewers);
        let kbps = ingest
            .iter()
            .find(|(n, _)| *n == id)
            .map_or(0, |(_, s)| s.bitrate / 1000);
        let mut e = serde_json::json!({
            "id": id, "live": i.writer_alive, "codecs": codecs.join(", "),
            "viewers": viewers, "kbps": kbps, "source": i.source_type,
        });
        if let Some(t) = transcoding.get(&id) {
            e["transcoding"] = serde_json::json!({
                "rendition": t.rendition, "seconds": t.seconds,
                "cpu_percent": (t.cpu_percent * 10.0).round() / 10.0,
                "encoder": tc.encoder().describe(), "restarts": t.restarts,
            });
        }
        out.push(e);
    }
    if !all && out.is_empty() {
        return None;
    }
    Some(serde_json::Value::Array(out).to_string())
}

/// One Prometheus metric family: its HELP/TYPE lines and one sample per `(labels, value)`.
fn family(m: &mut String, name: &str, typ: &str, help: &str, rows: Vec<(String, String)>) {
    use std::fmt::Write;
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {typ}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(m, "{name} {v}");
        } else {
            let _ = writeln!(m, "{name}{{{labels}}} {v}");
        }
    }
}

fn metrics(root: &Path, whep: &WhepEngine, streams: &Streams, tc: &Transcoder) -> String {
    let ws = whep.stats();
    let ingest = streams.snapshot();
    let frames: Vec<_> = framecache::ring::list_slots(root)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(id, i)| i.ok().map(|i| (id, i)))
        .collect();
    let packets: Vec<_> = framecache::packet::list_slots(root)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(id, i)| i.ok().map(|i| (id, i)))
        .collect();
    let one = |v: String| vec![(String::new(), v)];
    let stream = |n: &str| format!("stream=\"{}\"", esc(n));
    let slot = |n: &str, kind: &str| format!("slot=\"{}\",kind=\"{kind}\"", esc(n));
    let mut m = String::new();
    let totals: [(&str, &str, &str, usize); 7] = [
        (
            "framecache_whep_viewers",
            "gauge",
            "WebRTC viewers in total.",
            ws.viewers,
        ),
        (
            "framecache_whip_publishers",
            "gauge",
            "WHIP publishers in total.",
            ws.publishers,
        ),
        (
            "framecache_ingest_connected",
            "gauge",
            "Streams whose ingest (push or pull) is connected.",
            ingest.iter().filter(|(_, s)| s.connected).count(),
        ),
        (
            "framecache_whep_peer_connections",
            "gauge",
            "Peer connections not yet closed.",
            ws.peer_connections,
        ),
        (
            "framecache_whep_tasks",
            "gauge",
            "Viewer tasks alive (each ends shortly after its viewer is removed).",
            ws.tasks,
        ),
        (
            "framecache_whep_feeds",
            "gauge",
            "Feed threads alive (one per watched stream).",
            ws.feeds,
        ),
        (
            "framecache_whep_offers_total",
            "counter",
            "WHEP offers answered.",
            ws.offers as usize,
        ),
    ];
    family(
        &mut m,
        "framecache_up",
        "gauge",
        "1 while serve runs.",
        one("1".into()),
    );
    for (name, typ, help, v) in totals {
        family(&mut m, name, typ, help, one(v.to_string()));
    }
    let per_ingest = |f: fn(&framecache::ingest::StatsSnapshot) -> u64| {
        ingest
            .iter()
            .map(|(n, s)| (stream(n), f(s).to_string()))
            .collect::<Vec<_>>()
    };
    family(
        &mut m,
        "framecache_stream_bitrate_bits",
        "gauge",
        "Ingest bitrate per stream, bit/s.",
        per_ingest(|s| s.bitrate),
    );
    family(
        &mut m,
        "framecache_stream_ingest_packets_total",
        "counter",
        "Access units ingested per stream.",
        per_ingest(|s| s.packets),
    );
    family(
        &mut m,
        "framecache_stream_reconnects_total",
        "counter",
        "Ingest reconnects per stream.",
        per_ingest(|s| s.reconnects),
    );
    family(
        &mut m,
        "framecache_stream_viewers",
        "gauge",
        "WebRTC viewers per stream.",
        ws.streams
            .iter()
            .map(|s| (stream(&s.stream), s.viewers.to_string()))
            .collect(),
    );
    family(
        &mut m,
        "framecache_stream_skipped_packets_total",
        "counter",
        "Packets skipped on the way to viewers (ring reader behind, or a viewer behind).",
        ws.streams
            .iter()
            .map(|s| {
                (
                    stream(&s.stream),
                    (s.ring_skipped + s.viewer_skipped).to_string(),
                )
            })
            .collect(),
    );
    let mut fps: Vec<(String, String)> = frames
        .iter()
        .filter(|(_, i)| i.fps_den > 0)
        .map(|(id, i)| {
            (
                slot(id, "frames"),
                format!("{:.3}", i.fps_num as f64 / i.fps_den as f64),
            )
        })
        .collect();
    fps.extend(packets.iter().filter_map(|(id, i)| {
        let v = i.streams.iter().find(|s| s.fps.1 > 0)?;
        Some((
            slot(id, "packets"),
            format!("{:.3}", v.fps.0 as f64 / v.fps.1 as f64),
        ))
    }));
    family(
        &mut m,
        "framecache_slot_fps",
        "gauge",
        "Frame rate per slot (declared by its writer).",
        fps,
    );
    family(
        &mut m,
        "framecache_slot_readers",
        "gauge",
        "Readers of a packet slot in this process (WHEP feeds). Ring readers do not register, \
         so readers in other processes are not counted.",
        packets
            .iter()
            .map(|(id, _)| {
                let n = ws.streams.iter().filter(|s| s.stream == *id).count();
                (slot(id, "packets"), n.to_string())
            })
            .collect(),
    );
    let mut published: Vec<(String, String)> = frames
        .iter()
        .map(|(id, i)| (slot(id, "frames"), i.frames_written.to_string()))
        .collect();
    published.extend(
        packets
            .iter()
            .map(|(id, i)| (slot(id, "packets"), i.packets_written.to_string())),
    );
    family(
        &mut m,
        "framecache_slot_packets_total",
        "counter",
        "Packets or frames published per slot.",
        published,
    );
    family(
        &mut m,
        "framecache_stream_transcode_cpu_percent",
        "gauge",
        "CPU of the stream's WebRTC transcoder (ffmpeg), % of one core; absent when not transcoded.",
        tc.status()
            .iter()
            .map(|(s, t)| (stream(s), format!("{:.1}", t.cpu_percent)))
            .collect(),
    );
    m
}

//! The engine: push listeners (RTMP, SRT) sharing one key registry, and pull ingests with
//! failover between inputs by priority.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::failover::{Failover, Next};
use crate::observe::Observers;
use crate::pull::{run_input, InputTimeouts, InputUrl, Locations, Mounts, StopFlag};
use crate::push::PushConfig;
use crate::registry::{KeyConfig, KeyRegistry};
use crate::rtmp::{self, RtmpServerConfig};
use crate::share::{SharedFeed, SlotShare};
use crate::sink::{EventCallback, IngestEvent, IngestStats, SinkOptions, SlotSink, StatsSnapshot};
use crate::srt::{self, SrtListener, SrtListenerConfig};
use crate::url::Url;
use crate::Streams;
use framecache_media::Media;
use framecache_shm::error::{Error, Result};

/// What a URL given to the engine means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `rtmp://ADDR:PORT` (no path): run the RTMP server there.
    RtmpListen(SocketAddr),
    /// `rtmps://ADDR:PORT` (no path; port 443 when left out): the RTMP server behind TLS.
    RtmpsListen(SocketAddr),
    /// `srt://0.0.0.0:PORT`, or any address with `?mode=listener`: run the SRT listener.
    SrtListen(SocketAddr),
    /// `publish://KEY`: accept pushes of KEY on the listeners.
    Publish(String),
    /// Anything else: a pull input.
    Pull(InputUrl),
}

fn sock_addr(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .map_err(|e| Error::BadUrl(format!("{s}: {e}")))?
        .next()
        .ok_or_else(|| Error::BadUrl(format!("{s}: no address")))
}

impl Endpoint {
    /// Sorts a URL into listener, publish key or pull input.
    pub fn parse(url: &str) -> Result<Endpoint> {
        let u = Url::parse(url)?;
        match u.scheme {
            "publish" => {
                let key = crate::registry::normalize_key(u.rest);
                if key.is_empty() {
                    return Err(u.bad("empty key"));
                }
                return Ok(Endpoint::Publish(key.to_string()));
            }
            // No path: a listener (with a path it is a pull from another server).
            scheme @ ("rtmp" | "rtmps") if !u.trimmed().contains('/') => {
                let host = u.trimmed();
                let tls = scheme == "rtmps";
                let addr = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:{}", if tls { 443 } else { 1935 })
                };
                let addr = sock_addr(&addr)?;
                return Ok(if tls {
                    Endpoint::RtmpsListen(addr)
                } else {
                    Endpoint::RtmpListen(addr)
                });
            }
            "srt" => {
                let host = u.trimmed();
                let mode = u.get("mode").unwrap_or("");
                let wildcard = host.starts_with("0.0.0.0:") || host.starts_with("[::]:");
                if mode == "listener" || (mode != "caller" && wildcard) {
                    return Ok(Endpoint::SrtListen(sock_addr(host)?));
                }
            }
            _ => {}
        }
        InputUrl::parse(url).map(Endpoint::Pull)
    }
}

/// Settings of a pull ingest.
#[derive(Clone)]
pub struct PullConfig {
    /// Packet slot to feed.
    pub slot: String,
    /// Inputs, highest priority first.
    pub inputs: Vec<InputUrl>,
    /// Slot creation.
    pub sink: SinkOptions,
    /// Per-input limits.
    pub timeouts: InputTimeouts,
    /// How often a failed higher-priority input is probed while a lower one runs.
    pub probe_interval: Duration,
    /// Largest wait between reconnects (doubles from 250 ms).
    pub max_backoff: Duration,
    /// Events.
    pub events: Option<EventCallback>,
    /// Root directory (None = the default).
    pub root: Option<PathBuf>,
    /// Set when the slot is shared with push keys by priority: the share, and the priority of
    /// each input (see [`crate::share`]).
    pub shared: Option<(Arc<SlotShare>, Vec<usize>)>,
    /// Servers other than the playlist's that HLS entries may point to (see
    /// [`crate::pull::resolve_uri_allowing`]).
    pub hls_hosts: Vec<String>,
}

impl PullConfig {
    /// Defaults for `inputs` into `slot`.
    pub fn new(slot: &str, inputs: Vec<InputUrl>) -> PullConfig {
        PullConfig {
            slot: slot.to_string(),
            inputs,
            sink: SinkOptions {
                source_type: "pull".into(),
                ..SinkOptions::default()
            },
            timeouts: InputTimeouts::default(),
            probe_interval: Duration::from_secs(2),
            max_backoff: Duration::from_secs(8),
            events: None,
            root: None,
            shared: None,
            hls_hosts: Vec::new(),
        }
    }
}

/// Where a pull worker's media go.
enum PullOut {
    Own(Box<SlotSink>),
    /// A shared slot; the priority of each input.
    Shared(Arc<SlotShare>, Vec<usize>),
}

impl PullOut {
    fn begin(&mut self, input: usize) {
        match self {
            PullOut::Own(s) => s.begin_session(),
            PullOut::Shared(share, prios) => share.claim(prios[input]),
        }
    }

    fn push(&mut self, input: usize, m: Media) -> Result<()> {
        match self {
            PullOut::Own(s) => s.push(m),
            PullOut::Shared(share, prios) => share.offer(prios[input], m),
        }
    }

    fn end(&mut self, input: usize) {
        if let PullOut::Shared(share, prios) = self {
            share.release(prios[input]);
        }
    }
}

/// A running pull ingest; dropping it stops its worker and closes the slot.
pub struct PullIngest {
    stop: StopFlag,
    thread: Option<JoinHandle<()>>,
    stats: Arc<IngestStats>,
}

impl PullIngest {
    /// Starts the worker thread.
    pub fn start(cfg: PullConfig, mounts: Mounts, stats: Arc<IngestStats>) -> Result<PullIngest> {
        if cfg.inputs.is_empty() {
            return Err(Error::InvalidArg(
                "a pull ingest needs at least one input".into(),
            ));
        }
        let out = match &cfg.shared {
            Some((share, prios)) => {
                if prios.len() != cfg.inputs.len() {
                    return Err(Error::InvalidArg(
                        "a shared slot needs one priority per input".into(),
                    ));
                }
                PullOut::Shared(share.clone(), prios.clone())
            }
            None => {
                let mut sink = SlotSink::new(
                    cfg.root.as_deref(),
                    &cfg.slot,
                    cfg.sink.clone(),
                    stats.clone(),
                )?;
                sink.set_events(cfg.events.clone(), false);
                PullOut::Own(Box::new(sink))
            }
        };
        let at = Locations {
            mounts,
            root: cfg
                .root
                .clone()
                .unwrap_or_else(framecache_shm::slot::root_dir),
            hls_hosts: cfg.hls_hosts.clone(),
        };
        let stop = StopFlag::default();
        let s2 = stop.clone();
        let stats2 = stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pull-{}", cfg.slot))
            .spawn(move || worker(cfg, at, out, s2, stats2))?;
        Ok(PullIngest {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops the worker and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PullIngest {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn url_text(u: &InputUrl) -> String {
    match u {
        InputUrl::Udp { addr, .. } => format!("udp://{addr}"),
        InputUrl::SrtCaller { addr, .. } => format!("srt://{addr}"),
        InputUrl::RtmpPull {
            addr,
            app,
            key,
            tls,
        } => crate::url::redact(&format!(
            "rtmp{}://{addr}/{app}/{key}",
            if *tls { "s" } else { "" }
        )),
        InputUrl::Hls { url } => url.clone(),
        InputUrl::File { mount, path } => format!("file://{mount}/{path}"),
        InputUrl::Copy { slot } => format!("copy://{slot}"),
        InputUrl::Rtsp(u) => u.url.clone(),
    }
}

fn sleep_unless(stop: &StopFlag, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.is_set() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `url` delivers a frame within the limits: connects, reads until one access unit
/// comes out, and leaves.
fn probe(url: &InputUrl, at: &Locations, t: InputTimeouts, stop: &StopFlag) -> bool {
    let start = Instant::now();
    let limit = t.connect + t.idle;
    let mut healthy = false;
    let _ = run_input(url, at, t, stop, &mut |m| {
        if matches!(m, Media::Frame { .. }) {
            healthy = true;
            return Err(Error::State("probe done"));
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout);
        }
        Ok(())
    });
    healthy
}

/// Probes the inputs above the running one when the policy says so, until `run_stop`; stops the
/// running input (through `run_stop`) when one of them is healthy.
fn prober(
    inputs: Vec<InputUrl>,
    at: Locations,
    t: InputTimeouts,
    policy: Arc<Mutex<Failover>>,
    run_stop: StopFlag,
    stop: StopFlag,
) {
    let lock = || policy.lock().unwrap_or_else(|e| e.into_inner());
    while !run_stop.is_set() {
        if stop.is_set() {
            run_stop.set();
            return;
        }
        let Some(due) = lock().probes_due(Instant::now()) else {
            sleep_unless(&run_stop, Duration::from_millis(20));
            continue;
        };
        for i in due {
            if probe(&inputs[i], &at, t, &stop) && lock().probe_healthy(i) {
                run_stop.set();
                return;
            }
        }
        lock().probes_done(Instant::now());
    }
}

fn worker(
    cfg: PullConfig,
    at: Locations,
    mut out: PullOut,
    stop: StopFlag,
    stats: Arc<IngestStats>,
) {
    let policy = Arc::new(Mutex::new(Failover::new(
        cfg.inputs.len(),
        cfg.probe_interval,
        cfg.max_backoff,
    )));
    let lock = || policy.lock().unwrap_or_else(|e| e.into_inner());
    let mut runs = 0u64;
    while !stop.is_set() {
        let current = match lock().next(Instant::now()) {
            Next::Run(i) => i,
            Next::WaitUntil(t) => {
                sleep_unless(&stop, t.saturating_duration_since(Instant::now()));
                continue;
            }
        };
        let url = &cfg.inputs[current];
        let name = url_text(url);
        stats.current_input.store(current, Ordering::Relaxed);
        out.begin(current);
        lock().started(Instant::now());
        // While a lower-priority input runs, a probe thread watches the higher ones.
        let run_stop = StopFlag::default();
        let prober = (current > 0).then(|| {
            let (inputs, at, t) = (cfg.inputs.clone(), at.clone(), cfg.timeouts);
            let (policy, rs, gs) = (policy.clone(), run_stop.clone(), stop.clone());
            std::thread::spawn(move || prober(inputs, at, t, policy, rs, gs))
        });
        let flag = if current > 0 { &run_stop } else { &stop };
        let mut got_media = false;
        let events = cfg.events.clone();
        let r = run_input(url, &at, cfg.timeouts, flag, &mut |m| {
            if !got_media {
                got_media = true;
                if runs > 0 {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                stats.connected.store(true, Ordering::Relaxed);
                stats.connected_input(&name);
                if let Some(cb) = &events {
                    cb(&IngestEvent::Connected {
                        slot: cfg.slot.clone(),
                        input: name.clone(),
                    });
                }
            }
            out.push(current, m)
        });
        out.end(current);
        runs += 1;
        run_stop.set();
        if let Some(p) = prober {
            let _ = p.join();
        }
        let was_connected = stats.connected.swap(false, Ordering::Relaxed);
        if stop.is_set() {
            break;
        }
        let target = lock().failing_back();
        let reason = match (&r, target) {
            (_, Some(i)) => format!("failing back to input {i}"),
            (Ok(()), None) => "stopped".into(),
            (Err(e), None) => e.to_string(),
        };
        // A file input loops by reconnecting at its end: that is not worth a log line.
        if !(name.starts_with("file://") && reason.ends_with("end of file")) {
            log::warn!("ingest {}: {name}: {reason}", cfg.slot);
        }
        if was_connected {
            if let Some(cb) = &cfg.events {
                cb(&IngestEvent::Disconnected {
                    slot: cfg.slot.clone(),
                    input: name.clone(),
                    reason: reason.clone(),
                });
            }
        } else if target.is_none() && r.is_err() {
            if let Some(cb) = &cfg.events {
                cb(&IngestEvent::InputFailed {
                    slot: cfg.slot.clone(),
                    input: name.clone(),
                    priority: cfg.shared.as_ref().map_or(current, |(_, p)| p[current]),
                    reason: reason.clone(),
                });
            }
        }
        lock().ended(Instant::now(), got_media);
    }
    if let PullOut::Own(mut sink) = out {
        sink.end_session(true);
    }
}

/// The ingest engine: listeners, keys, mounts and pull ingests, with one tokio runtime for the
/// RTMP server. Dropping it stops everything.
pub struct Engine {
    rt: Arc<tokio::runtime::Runtime>,
    /// Ends the runtime's driver thread.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    driver: Option<JoinHandle<()>>,
    registry: KeyRegistry,
    streams: Streams,
    mounts: Mounts,
    events: Option<EventCallback>,
    root: Option<PathBuf>,
    rtmp: Vec<(SocketAddr, tokio::task::JoinHandle<()>)>,
    srt: Vec<SrtListener>,
    pulls: HashMap<String, PullIngest>,
    sink: SinkOptions,
    rtmp_read_interval: Duration,
    rtmp_play: bool,
    rtmp_play_access: rtmp::PlayAccess,
    play_tokens: rtmp::PlayTokens,
    tls: Option<Arc<rustls::ServerConfig>>,
    hls_hosts: Vec<String>,
    observers: Arc<Observers>,
    /// RTMP and SRT plays running, under one set of caps.
    plays: Arc<rtmp::Plays>,
}

impl Engine {
    /// An engine with no listener and no key.
    pub fn new() -> Result<Engine> {
        // A current-thread runtime driven by one thread of ours: the RTMP server is I/O bound,
        // and the multi-thread scheduler's wake-ups cost more than the work (measured with
        // benches/ingest.rs).
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rt2 = rt.clone();
        let driver = std::thread::Builder::new()
            .name("fc-ingest".into())
            .spawn(move || {
                rt2.block_on(async {
                    let _ = rx.await;
                })
            })?;
        let observers = Observers::new();
        Ok(Engine {
            rt,
            shutdown: Some(tx),
            driver: Some(driver),
            registry: KeyRegistry::new(),
            streams: Streams::new(),
            mounts: Mounts::new(),
            events: Some(observers.callback()),
            root: None,
            rtmp: Vec::new(),
            srt: Vec::new(),
            pulls: HashMap::new(),
            sink: SinkOptions {
                packet_events: Some(observers.packet_switch()),
                ..SinkOptions::default()
            },
            observers,
            rtmp_read_interval: rtmp::DEFAULT_READ_INTERVAL,
            rtmp_play: true,
            rtmp_play_access: rtmp::PlayAccess::default(),
            play_tokens: rtmp::PlayTokens::default(),
            tls: None,
            hls_hosts: Vec::new(),
            plays: Arc::default(),
        })
    }

    /// Slots go under `root` instead of the default root directory.
    pub fn set_root(&mut self, root: PathBuf) {
        self.root = Some(root);
    }

    /// Options of the slots the engine creates (source type is set per protocol).
    pub fn set_sink_options(&mut self, s: SinkOptions) {
        self.sink = SinkOptions {
            packet_events: Some(self.observers.packet_switch()),
            ..s
        };
    }

    /// How often RTMP servers started afterwards read their publishers (see
    /// [`RtmpServerConfig::read_interval`]; zero = as data arrives).
    pub fn set_rtmp_read_interval(&mut self, d: Duration) {
        self.rtmp_read_interval = d;
    }

    /// Who may play over RTMP servers started afterwards (viewer token, caps), and whether
    /// they serve play at all.
    pub fn set_play_access(&mut self, play: bool, access: rtmp::PlayAccess) {
        self.rtmp_play = play;
        self.rtmp_play_access = access;
    }

    /// Sets (`Some`) or removes (`None`) the viewer token of one slot: a play of it may carry
    /// this token (`?token=`) instead of the global one, and with it set the slot is closed to
    /// plays without either. Takes effect at once on every listener; plays running stay.
    pub fn set_play_token(&self, slot: &str, token: Option<&str>) {
        self.play_tokens.set(slot, token);
    }

    /// The certificate chain and private key (PEM files) RTMPS listeners started afterwards
    /// present. Checked now: an unreadable file or a key that does not fit is an error here.
    pub fn set_tls_identity(
        &mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<()> {
        self.tls = Some(rtmp::tls_identity(cert, key)?);
        Ok(())
    }

    /// Reports the events of every listener, pusher and pull ingest to `cb` (None = none),
    /// from now on, including those already running.
    pub fn set_events(&mut self, cb: Option<EventCallback>) {
        self.observers.set_all(cb);
    }

    /// Reports the events of slot `slot` to `cb` as well (None removes it): an observer of
    /// one stream beside the engine-wide one.
    pub fn set_stream_events(&mut self, slot: &str, cb: Option<EventCallback>) {
        self.observers.set_slot(slot, cb);
    }

    /// Switches per-packet events ([`IngestEvent::Packet`]) on or off for every slot, at
    /// once. Off by default: they cost a callback per packet.
    pub fn set_packet_events(&mut self, on: bool) {
        self.observers.set_packets(on);
    }

    /// The key registry of the listeners.
    pub fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    /// Counters per key / pull slot.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// VOD mounts for `file://`.
    pub fn mounts(&self) -> &Mounts {
        &self.mounts
    }

    /// The tokio runtime (for hosts that add their own tasks).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// The RTMP and SRT plays running now, to list and end them.
    pub fn plays(&self) -> &Arc<rtmp::Plays> {
        &self.plays
    }

    /// The settings the push listeners share, with slots labelled `source_type`.
    fn push_config(&self, source_type: &str) -> PushConfig {
        PushConfig {
            registry: self.registry.clone(),
            sink: SinkOptions {
                source_type: source_type.into(),
                ..self.sink.clone()
            },
            events: self.events.clone(),
            root: self.root.clone(),
        }
    }

    /// Admits pushers of `protocol` (e.g. `whip`) to the engine's keys, as the RTMP and SRT
    /// listeners do: hand it to an engine that takes pushes in a protocol of its own (the WHEP
    /// engine's WHIP). Settings are taken now; keys are looked up at each push.
    pub fn push_gate(&self, protocol: &str) -> framecache_media::PushGate {
        crate::push::gate(self.push_config(protocol), self.streams.clone())
    }

    /// Starts the RTMP server (publish by key, play of slots) on `addr`; returns the bound
    /// address (port 0 picks one).
    pub fn listen_rtmp(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        self.start_rtmp(addr, None)
    }

    /// Starts the RTMP server behind TLS (RTMPS) on `addr`, with the identity of
    /// [`Engine::set_tls_identity`]; returns the bound address.
    pub fn listen_rtmps(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        let tls = self.tls.clone().ok_or_else(|| {
            Error::InvalidArg("rtmps needs a certificate and key (set_tls_identity)".into())
        })?;
        self.start_rtmp(addr, Some(tls))
    }

    /// Starts an endpoint that listens ([`Endpoint::RtmpListen`], [`Endpoint::RtmpsListen`],
    /// [`Endpoint::SrtListen`]); returns the bound address. Other endpoints are refused.
    pub fn listen(&mut self, e: &Endpoint) -> Result<SocketAddr> {
        match *e {
            Endpoint::RtmpListen(a) => self.listen_rtmp(a),
            Endpoint::RtmpsListen(a) => self.listen_rtmps(a),
            Endpoint::SrtListen(a) => self.listen_srt(a),
            _ => Err(Error::BadUrl(format!("{e:?} is not a listener"))),
        }
    }

    fn start_rtmp(
        &mut self,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<SocketAddr> {
        let std_listener = std::net::TcpListener::bind(addr)
            .map_err(|e| Error::os(&format!("rtmp bind {addr}"), e))?;
        std_listener.set_nonblocking(true)?;
        let listener = {
            let _in_runtime = self.rt.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let bound = listener.local_addr()?;
        let cfg = RtmpServerConfig {
            push: self.push_config("rtmp"),
            play: self.rtmp_play,
            access: self.rtmp_play_access.clone(),
            play_tokens: self.play_tokens.clone(),
            read_interval: self.rtmp_read_interval,
            tls,
            plays: self.plays.clone(),
        };
        let task = self
            .rt
            .spawn(rtmp::serve(listener, cfg, self.streams.clone()));
        self.rtmp.push((bound, task));
        Ok(bound)
    }

    /// Starts the SRT listener on `addr` (needs libsrt).
    pub fn listen_srt(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        let cfg = SrtListenerConfig {
            push: self.push_config("srt"),
            latency_ms: None,
            // Readers play slots with RTMP play's settings: on/off, viewer tokens (the SRT
            // passphrase), caps.
            play: self.rtmp_play.then(|| srt::SrtPlay {
                root: self
                    .root
                    .clone()
                    .unwrap_or_else(framecache_shm::slot::root_dir),
                access: self.rtmp_play_access.clone(),
                tokens: self.play_tokens.clone(),
                plays: self.plays.clone(),
            }),
        };
        let l = srt::listen(addr, cfg, self.streams.clone())?;
        let bound = l.local_addr();
        self.srt.push(l);
        Ok(bound)
    }

    /// Sets the inputs of `slot` from `urls`, highest priority first: `publish://KEY`
    /// registers KEY for the push listeners; other URLs are pull inputs, run by one worker
    /// with failover. A list that mixes keys and pull inputs shares the slot by priority (the
    /// best live input writes, the others stand by; see [`crate::share`]), e.g. the
    /// encoder's push first and a UDP feed or a file slate as backup.
    ///
    /// A slot that already has inputs gets the new ones instead (its old pull worker stops,
    /// its old keys go). Every URL is checked first: a bad one, a listener address, or a key
    /// that feeds another slot changes nothing.
    pub fn add(&mut self, slot: &str, urls: &[&str]) -> Result<()> {
        self.add_with_timeouts(slot, urls, InputTimeouts::default())
    }

    /// As [`Engine::add`], with the pull inputs' connect and idle limits: a live relay from
    /// another server (an origin) can be declared failed after one silent second, so its
    /// backup takes over quickly, where the default (5 s) suits cameras that stall.
    pub fn add_with_timeouts(
        &mut self,
        slot: &str,
        urls: &[&str],
        timeouts: InputTimeouts,
    ) -> Result<()> {
        framecache_shm::slot::validate_id(slot)?;
        if timeouts.connect.is_zero() || timeouts.idle.is_zero() {
            return Err(Error::InvalidArg(
                "input timeouts must be above zero".into(),
            ));
        }
        let (mut keys, mut inputs) = (Vec::new(), Vec::new());
        for (prio, u) in urls.iter().enumerate() {
            match Endpoint::parse(u)? {
                Endpoint::Publish(key) => keys.push((key, prio)),
                Endpoint::Pull(i) => inputs.push((i, prio)),
                Endpoint::RtmpListen(_) | Endpoint::RtmpsListen(_) | Endpoint::SrtListen(_) => {
                    return Err(Error::BadUrl(format!(
                        "{u} is a listener address, not an input"
                    )))
                }
            }
        }
        for (k, _) in &keys {
            // Checked as register will: a bad key changes nothing either.
            KeyRegistry::new().register(k, KeyConfig::new(slot))?;
            if let Some(c) = self.registry.lookup(k) {
                if c.slot != slot {
                    return Err(Error::InvalidArg(format!(
                        "key {k} already feeds slot {}",
                        c.slot
                    )));
                }
            }
        }
        self.remove(slot);
        let share = (!keys.is_empty() && !inputs.is_empty())
            .then(|| {
                let stats = self.streams.stats_for(slot);
                let opts = SinkOptions {
                    source_type: "push+pull".into(),
                    ..self.sink.clone()
                };
                let mut sink = SlotSink::new(self.root.as_deref(), slot, opts, stats)?;
                sink.set_events(self.events.clone(), false);
                Ok::<_, Error>(SlotShare::new(sink))
            })
            .transpose()?;
        for (k, prio) in &keys {
            let mut c = KeyConfig::new(slot);
            c.feed = share.as_ref().map(|s| SharedFeed {
                share: s.clone(),
                priority: *prio,
            });
            self.registry.register(k, c)?;
        }
        if inputs.is_empty() {
            return Ok(());
        }
        let prios: Vec<usize> = inputs.iter().map(|(_, p)| *p).collect();
        let mut cfg = PullConfig::new(slot, inputs.into_iter().map(|(i, _)| i).collect());
        cfg.sink = SinkOptions {
            source_type: "pull".into(),
            ..self.sink.clone()
        };
        cfg.events = self.events.clone();
        cfg.root = self.root.clone();
        cfg.shared = share.map(|s| (s, prios));
        cfg.hls_hosts = self.hls_hosts.clone();
        cfg.timeouts = timeouts;
        let stats = self.streams.stats_for(slot);
        let p = PullIngest::start(cfg, self.mounts.clone(), stats)?;
        self.pulls.insert(slot.to_string(), p);
        Ok(())
    }

    /// Servers other than the playlist's that the HLS inputs added from now on may fetch from
    /// (a CDN layout): `host` (any port), `host:port`, or `*.domain`. Default none: every
    /// playlist entry must stay on the playlist's server, so a playlist cannot send the
    /// ingest anywhere.
    pub fn set_hls_allowed_hosts(&mut self, hosts: &[&str]) {
        self.hls_hosts = hosts.iter().map(|h| h.to_string()).collect();
    }

    /// Probes a pull URL with this engine's mounts, root and allowed HLS hosts: does it open
    /// and deliver media within `timeout`, and what (see [`crate::probe::probe`]).
    pub fn probe(&self, url: &str, timeout: Duration) -> Result<crate::probe::ProbeReport> {
        let at = Locations {
            mounts: self.mounts.clone(),
            root: self
                .root
                .clone()
                .unwrap_or_else(framecache_shm::slot::root_dir),
            hls_hosts: self.hls_hosts.clone(),
        };
        crate::probe::probe(url, &at, timeout)
    }

    /// Stops the pull ingest of `slot` and unregisters keys feeding it. True if anything was
    /// removed.
    pub fn remove(&mut self, slot: &str) -> bool {
        let mut any = self.pulls.remove(slot).is_some();
        for k in self.registry.keys() {
            if self.registry.lookup(&k).is_some_and(|c| c.slot == slot) {
                any |= self.registry.unregister(&k);
            }
        }
        any
    }

    /// Counters of a key or pull slot.
    pub fn stats(&self, name: &str) -> Option<StatsSnapshot> {
        self.streams.get(name).map(|s| s.snapshot())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.pulls.clear();
        self.srt.clear();
        for (_, t) in self.rtmp.drain(..) {
            t.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replaces_a_slots_inputs_and_a_bad_list_changes_nothing() {
        let mut e = Engine::new().unwrap();
        let root = std::env::temp_dir().join(format!("fc-add-{}", std::process::id()));
        e.set_root(root.clone());
        e.add("a", &["publish://k1"]).unwrap();
        let slot_of = |e: &Engine, k: &str| e.registry().lookup(k).map(|c| c.slot);
        assert_eq!(slot_of(&e, "k1").as_deref(), Some("a"));
        // A key of another slot, a bad URL, a listener: refused, nothing changed.
        assert!(e.add("b", &["publish://k1"]).is_err());
        assert!(e.add("a", &["publish://k2", "bogus://x"]).is_err());
        assert!(e
            .add("a", &["publish://k2", "rtmp://0.0.0.0:1935"])
            .is_err());
        assert_eq!(slot_of(&e, "k1").as_deref(), Some("a"));
        assert_eq!(slot_of(&e, "k2"), None);
        // A good list replaces the old one.
        e.add("a", &["publish://k2", "udp://127.0.0.1:0"]).unwrap();
        assert_eq!(slot_of(&e, "k1"), None);
        let k2 = e.registry().lookup("k2").unwrap();
        assert_eq!(k2.slot, "a");
        assert_eq!(
            k2.feed.as_ref().map(|f| f.priority),
            Some(0),
            "shared with the pull"
        );
        e.add("a", &["publish://k2"]).unwrap();
        assert!(
            e.registry().lookup("k2").unwrap().feed.is_none(),
            "alone again"
        );
        drop(e);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn endpoints() {
        assert!(matches!(
            Endpoint::parse("rtmp://127.0.0.1:1935").unwrap(),
            Endpoint::RtmpListen(_)
        ));
        assert_eq!(
            Endpoint::parse("rtmps://127.0.0.1").unwrap(),
            Endpoint::RtmpsListen("127.0.0.1:443".parse().unwrap())
        );
        assert_eq!(
            Endpoint::parse("rtmps://0.0.0.0:1936/").unwrap(),
            Endpoint::RtmpsListen("0.0.0.0:1936".parse().unwrap())
        );
        assert!(matches!(
            Endpoint::parse("rtmp://127.0.0.1:1935/live/k").unwrap(),
            Endpoint::Pull(InputUrl::RtmpPull { .. })
        ));
        assert!(matches!(
            Endpoint::parse("srt://0.0.0.0:9000").unwrap(),
            Endpoint::SrtListen(_)
        ));
        assert!(matches!(
            Endpoint::parse("srt://127.0.0.1:9000?mode=listener").unwrap(),
            Endpoint::SrtListen(_)
        ));
        assert!(matches!(
            Endpoint::parse("srt://127.0.0.1:9000?streamid=x").unwrap(),
            Endpoint::Pull(InputUrl::SrtCaller { .. })
        ));
        assert_eq!(
            Endpoint::parse("publish://live/cam1").unwrap(),
            Endpoint::Publish("cam1".into())
        );
        assert!(Endpoint::parse("publish://").is_err());
        assert!(Endpoint::parse("bogus://x").is_err());
    }
}

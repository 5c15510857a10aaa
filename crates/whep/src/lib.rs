//! WebRTC egress of packet slots over WHEP (draft-ietf-wish-whep).
//!
//! [`WhepEngine`] is the protocol core, independent of any HTTP server: an offer in gives an
//! answer, a resource id and an ETag out (or a [`WhepError`] that names its HTTP status);
//! trickle/ICE-restart patches and deletes act on resources. [`http`] mounts it on a small
//! hyper server for standalone use (`framecache serve`), and `fc_whep_*` exposes both to C.
//!
//! Media: H.264 goes from the ring to RTP without a transcode, each new viewer starting at the
//! most recent keyframe with its parameter sets; Opus passes through; AAC is transcoded to
//! Opus once per stream. B-frames are passed through in decode order (RTP time = pts); the log
//! says so, since some receivers then drop or stutter.
//!
//! **Owns** (crate framecache-whep): WHEP resources, viewers, the per-stream feed with its GOP
//! cache, AAC → Opus, SDP parsing, the hyper mount. **May import**: `framecache-shm`,
//! `framecache-media` (codec helpers), webrtc-rs, hyper, tokio, symphonia. Not the ingest
//! engine (streams it may serve come in as a [`KnownStreams`] callback), cuframes or the C ABI.
//! It never prints: diagnostics go through `log`.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]

pub mod audio;
mod feed;
pub mod http;
pub mod sdp;
pub mod viewer;
pub mod whip;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, watch, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::runtime::TokioRuntime;

pub use feed::{AudioPlan, FeedCounters, FeedInfo};
use feed::{Feed, FeedError, Unit};
use framecache_shm::slot::random_u64;
use viewer::ViewerClock;

/// Decides whether an unknown-to-the-ring stream name is known elsewhere (a registered ingest
/// key whose source has not connected yet): such streams get `409`, others `404`.
pub type KnownStreams = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Serves streams browsers cannot play as they are (H.264 with B-frames, HEVC): given the
/// stream and the reason, makes (or finds) a rendition they can play and returns its packet
/// slot once it is live, or why it cannot. Called off the engine's threads; may block a few
/// seconds while a transcoder starts. The host decides when a rendition stops (e.g. when
/// [`WhepEngine::stats`] shows the stream without viewers for a while).
pub type Renditions = Arc<dyn Fn(&str, &str) -> Result<String, String> + Send + Sync>;

/// WHEP engine settings.
#[derive(Clone)]
pub struct WhepConfig {
    /// Slot root directory (default: the library's default root).
    pub root: Option<PathBuf>,
    /// Viewers allowed per stream (`503` beyond). Default 8.
    pub max_viewers_per_stream: usize,
    /// Viewers allowed in total (`503` beyond). Default 256.
    pub max_viewers_total: usize,
    /// A bearer token every request must carry (`401` otherwise). Default none.
    pub token: Option<String>,
    /// Origins allowed by CORS; empty allows any (`*`).
    pub allowed_origins: Vec<String>,
    /// Address the ICE (media) sockets bind; one UDP socket per viewer. Default 127.0.0.1.
    pub ice_ip: IpAddr,
    /// How long to wait for ICE gathering before answering `504`. Default 5 s.
    pub ice_gather_timeout: Duration,
    /// A viewer that has not connected (ICE + DTLS) within this is removed. Default 15 s.
    pub connect_timeout: Duration,
    /// A viewer whose connection stays `disconnected` this long is removed. Default 8 s.
    pub disconnect_timeout: Duration,
    /// `Retry-After` seconds on `409` and `503`. Default 2.
    pub retry_after_s: u32,
    /// See [`KnownStreams`].
    pub known_streams: Option<KnownStreams>,
    /// See [`Renditions`]. None: such streams are refused with `422` and the fix.
    pub renditions: Option<Renditions>,
}

impl Default for WhepConfig {
    fn default() -> Self {
        WhepConfig {
            root: None,
            max_viewers_per_stream: 8,
            max_viewers_total: 256,
            token: None,
            allowed_origins: Vec::new(),
            ice_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ice_gather_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            disconnect_timeout: Duration::from_secs(8),
            retry_after_s: 2,
            known_streams: None,
            renditions: None,
        }
    }
}

impl std::fmt::Debug for WhepConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhepConfig")
            .field("root", &self.root)
            .field("max_viewers_per_stream", &self.max_viewers_per_stream)
            .field("max_viewers_total", &self.max_viewers_total)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("allowed_origins", &self.allowed_origins)
            .field("ice_ip", &self.ice_ip)
            .finish_non_exhaustive()
    }
}

/// Why a WHEP request failed; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhepError {
    /// `400`: missing, empty or invalid body.
    #[error("{0}")]
    BadRequest(String),
    /// `401`: a token is configured and the request lacks it or has another.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// `404`: no such stream.
    #[error("{0}")]
    NotFound(String),
    /// `406`: the offer has no codec we can send (the reason).
    #[error("{0}")]
    NotAcceptable(String),
    /// `409`: the stream is known but not live yet.
    #[error("{0}")]
    NotLive(String),
    /// `409`: a WHIP publisher's key is being pushed by someone else.
    #[error("{0}")]
    Conflict(String),
    /// `412`: `If-Match` does not match the resource's ETag.
    #[error("If-Match does not match the resource's current ETag")]
    PreconditionFailed,
    /// `415`: wrong `Content-Type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `422`: the source cannot be sent (e.g. its video is not H.264).
    #[error("{0}")]
    Unprocessable(String),
    /// `503`: the stream has its maximum of viewers.
    #[error("stream {stream} has its maximum of {max} viewers")]
    StreamFull {
        /// Stream.
        stream: String,
        /// Cap.
        max: usize,
    },
    /// `503`: the server has its maximum of viewers.
    #[error("the server has its maximum of {max} viewers")]
    ServerFull {
        /// Cap.
        max: usize,
    },
    /// `504`: ICE gathering did not complete in time.
    #[error("ICE gathering did not complete in time")]
    GatherTimeout,
    /// `500`: anything else (the WebRTC stack failed).
    #[error("{0}")]
    Internal(String),
}

impl WhepError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            WhepError::BadRequest(_) => 400,
            WhepError::Unauthorized => 401,
            WhepError::NotFound(_) => 404,
            WhepError::NotAcceptable(_) => 406,
            WhepError::NotLive(_) | WhepError::Conflict(_) => 409,
            WhepError::PreconditionFailed => 412,
            WhepError::UnsupportedMediaType(_) => 415,
            WhepError::Unprocessable(_) => 422,
            WhepError::StreamFull { .. } | WhepError::ServerFull { .. } => 503,
            WhepError::GatherTimeout => 504,
            WhepError::Internal(_) => 500,
        }
    }

    /// Whether the response carries `Retry-After`.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            WhepError::NotLive(_) | WhepError::StreamFull { .. } | WhepError::ServerFull { .. }
        )
    }
}

/// A successful offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhepAnswer {
    /// The SDP answer, with all ICE candidates (gathering is complete).
    pub sdp: String,
    /// The resource id (the last segment of `Location`).
    pub resource: String,
    /// The resource's ETag (quoted, as sent in the header).
    pub etag: String,
}

/// What a PATCH did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchOutcome {
    /// Candidates were added (`204`).
    Applied,
    /// ICE restarted (`200`): the server's new credentials and candidates as an sdpfrag, and
    /// the new ETag.
    Restarted {
        /// `application/trickle-ice-sdpfrag` body.
        sdpfrag: String,
        /// New ETag.
        etag: String,
    },
}

/// Counters of one stream's viewers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WhepStreamStats {
    /// Stream (slot id).
    pub stream: String,
    /// Viewers (connected or connecting).
    pub viewers: usize,
    /// Access units read from the ring.
    pub units: u64,
    /// Bytes read from the ring.
    pub bytes: u64,
    /// Packets the feed's ring reader skipped.
    pub ring_skipped: u64,
    /// Units viewers skipped because they fell behind.
    pub viewer_skipped: u64,
    /// Whether B-frames were seen.
    pub bframes: bool,
    /// Audio handling (`none`, `opus`, `aac→opus`, or why not).
    pub audio: String,
}

/// Engine-wide counters, for `/metrics` and leak checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WhepStats {
    /// Viewers in total.
    pub viewers: usize,
    /// WHIP publishers.
    pub publishers: usize,
    /// Viewer tasks alive (a removed viewer's task ends shortly after).
    pub tasks: usize,
    /// Peer connections not yet closed.
    pub peer_connections: usize,
    /// Feed threads alive.
    pub feeds: usize,
    /// Offers answered since start.
    pub offers: u64,
    /// Per stream.
    pub streams: Vec<WhepStreamStats>,
}

struct Viewer {
    etag: String,
    pc: Arc<dyn PeerConnection>,
    cancel: Arc<Notify>,
    remote_sdp: String,
    gather_rx: watch::Receiver<bool>,
    /// When the offer was answered.
    since: std::time::SystemTime,
    /// RTP payload bytes sent (viewers) or received (publishers).
    bytes: Arc<AtomicU64>,
    /// The client's HTTP address, where known.
    peer: Option<SocketAddr>,
}

/// One viewer or WHIP publisher, for an operator's list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerInfo {
    /// The resource id (the last segment of its `Location`).
    pub id: String,
    /// The stream watched, or the key published to.
    pub stream: String,
    /// `whep` or `whip`.
    pub protocol: &'static str,
    /// The client's address (of its HTTP request), where known.
    pub peer: Option<String>,
    /// Unix time in ms when the offer was answered.
    pub since_ms: u64,
    /// RTP payload bytes sent to it (viewer) or received from it (publisher).
    pub bytes: u64,
}

struct StreamState {
    feed: Arc<Feed>,
    viewers: HashMap<String, Viewer>,
    /// Offers being answered (they count against the caps).
    pending: usize,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, StreamState>,
    /// WHIP publishers by resource id.
    publishers: HashMap<String, whip::Publisher>,
    total: usize,
    closed: bool,
}

struct Inner {
    cfg: WhepConfig,
    root: PathBuf,
    state: Mutex<State>,
    tasks: Arc<AtomicUsize>,
    pcs: Arc<AtomicUsize>,
    feed_threads: Arc<AtomicUsize>,
    offers: AtomicU64,
    next_id: AtomicU64,
    /// Viewer tokens of single streams (beside the global `token`).
    stream_tokens: std::sync::RwLock<HashMap<String, String>>,
    /// Admits WHIP publishers (none: WHIP is off).
    push_gate: std::sync::RwLock<Option<framecache_media::PushGate>>,
}

/// The WHEP core. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct WhepEngine {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    _rt: Option<Arc<RuntimeOwner>>,
}

/// Owns the engine's runtime and shuts it down without blocking when the last clone goes.
struct RuntimeOwner(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WhepEngine {
    /// Creates an engine with its own runtime (2 worker threads).
    pub fn new(cfg: WhepConfig) -> framecache_shm::Result<WhepEngine> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("framecache-whep")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let mut e = WhepEngine::with_handle(cfg, handle);
        e._rt = Some(Arc::new(RuntimeOwner(Some(rt))));
        Ok(e)
    }

    /// Creates an engine that runs on an existing multi-thread tokio runtime.
    pub fn with_handle(cfg: WhepConfig, handle: tokio::runtime::Handle) -> WhepEngine {
        let root = cfg
            .root
            .clone()
            .unwrap_or_else(framecache_shm::slot::root_dir);
        WhepEngine {
            inner: Arc::new(Inner {
                cfg,
                root,
                state: Mutex::new(State::default()),
                tasks: Arc::new(AtomicUsize::new(0)),
                pcs: Arc::new(AtomicUsize::new(0)),
                feed_threads: Arc::new(AtomicUsize::new(0)),
                offers: AtomicU64::new(0),
                next_id: AtomicU64::new(1),
                stream_tokens: Default::default(),
                push_gate: Default::default(),
            }),
            handle,
            _rt: None,
        }
    }

    /// The runtime the engine runs on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The configuration.
    pub fn config(&self) -> &WhepConfig {
        &self.inner.cfg
    }

    /// Checks an `Authorization` header value against the configured (global) token.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), WhepError> {
        let given = framecache_media::credential::bearer(authorization);
        if framecache_media::credential::admits(given, &[self.inner.cfg.token.as_deref()]) {
            Ok(())
        } else {
            Err(WhepError::Unauthorized)
        }
    }

    /// Checks an `Authorization` header value for `stream`: the global token or the stream's
    /// own (see [`WhepEngine::set_stream_token`]) admits it; with neither set it is open.
    pub fn authorize_stream(
        &self,
        authorization: Option<&str>,
        stream: &str,
    ) -> Result<(), WhepError> {
        let given = framecache_media::credential::bearer(authorization);
        let own = self
            .inner
            .stream_tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .cloned();
        let accepted = [self.inner.cfg.token.as_deref(), own.as_deref()];
        if framecache_media::credential::admits(given, &accepted) {
            Ok(())
        } else {
            Err(WhepError::Unauthorized)
        }
    }

    /// Sets (or with `None` removes) the viewer token of one stream: its viewers may present
    /// it instead of the global token, and it admits to that stream only. A stream with its
    /// own token and no global token configured is closed to requests without it. Takes
    /// effect for the next request; viewers already watching stay.
    pub fn set_stream_token(&self, stream: &str, token: Option<&str>) {
        let mut m = self
            .inner
            .stream_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match token {
            Some(t) => m.insert(stream.to_string(), t.to_string()),
            None => m.remove(stream),
        };
    }

    /// Handles `POST /whep/{stream}`: checks the request, creates the viewer and returns the
    /// answer once ICE gathering completed. Runs on the engine's runtime whatever runtime
    /// awaits it.
    pub async fn offer(
        &self,
        stream: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<WhepAnswer, WhepError> {
        self.offer_from(stream, content_type, body, None).await
    }

    /// As [`WhepEngine::offer`], for a viewer at `peer` (listed to operators).
    pub async fn offer_from(
        &self,
        stream: &str,
        content_type: Option<&str>,
        body: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<WhepAnswer, WhepError> {
        let inner = self.inner.clone();
        let stream = stream.to_string();
        let ct = content_type.map(str::to_string);
        let body = body.to_vec();
        self.handle
            .spawn(async move { offer(inner, stream, ct, body, peer).await })
            .await
            .unwrap_or_else(|e| Err(WhepError::Internal(format!("offer task failed: {e}"))))
    }

    /// Takes WHIP publishers (`POST /whip/KEY`) through `gate` (the ingest engine's
    /// [`push_gate`](framecache_media::PushGate)); `None` turns WHIP off (404). Publishers
    /// already in stay.
    pub fn set_push_gate(&self, gate: Option<framecache_media::PushGate>) {
        *self
            .inner
            .push_gate
            .write()
            .unwrap_or_else(|e| e.into_inner()) = gate;
    }

    /// Handles `POST /whip/{key}`: `authorization` is the publisher's `Authorization` header
    /// (its bearer token is the key's credential). Returns the answer once ICE gathering
    /// completed; the publisher's media go into the key's slot until it is deleted, its
    /// connection fails or its media stop.
    pub async fn publish(
        &self,
        key: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<WhepAnswer, WhepError> {
        self.publish_from(key, authorization, content_type, body, None)
            .await
    }

    /// As [`WhepEngine::publish`], for a publisher at `peer` (its input is then named
    /// `whip://PEER/KEY` in events, logs and the operator's list).
    pub async fn publish_from(
        &self,
        key: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<WhepAnswer, WhepError> {
        let inner = self.inner.clone();
        let key = key.to_string();
        let cred = framecache_media::credential::bearer(authorization).map(str::to_string);
        let ct = content_type.map(str::to_string);
        let body = body.to_vec();
        self.handle
            .spawn(async move { whip::publish(inner, key, cred, ct, body, peer).await })
            .await
            .unwrap_or_else(|e| Err(WhepError::Internal(format!("publish task failed: {e}"))))
    }

    /// Handles `PATCH /whip/{key}/{resource}` as [`WhepEngine::patch`] does for viewers.
    pub async fn patch_publisher(
        &self,
        key: &str,
        resource: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: &[u8],
    ) -> Result<PatchOutcome, WhepError> {
        let who = Peer::Publisher(key.to_string());
        self.patch_peer(who, resource, content_type, if_match, body)
            .await
    }

    /// A PATCH of `who`'s resource, run on the engine's runtime.
    async fn patch_peer(
        &self,
        who: Peer,
        resource: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: &[u8],
    ) -> Result<PatchOutcome, WhepError> {
        let inner = self.inner.clone();
        let resource = resource.to_string();
        let ct = content_type.map(str::to_string);
        let im = if_match.map(str::to_string);
        let body = body.to_vec();
        self.handle
            .spawn(async move { patch(inner, who, resource, ct, im, body).await })
            .await
            .unwrap_or_else(|e| Err(WhepError::Internal(format!("patch task failed: {e}"))))
    }

    /// Handles `DELETE /whip/{key}/{resource}`: ends the publisher (its slot closes, the key
    /// is free). Returns whether it existed.
    pub fn unpublish(&self, key: &str, resource: &str) -> bool {
        let st = lock(&self.inner.state);
        match st.publishers.get(resource).filter(|p| p.key == key) {
            Some(p) => {
                p.peer.cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// Handles `PATCH /whep/{stream}/{resource}`: trickled candidates (`Applied`) or an ICE
    /// restart when the fragment carries new credentials (`Restarted`).
    pub async fn patch(
        &self,
        stream: &str,
        resource: &str,
        content_type: Option<&str>,
        if_match: Option<&str>,
        body: &[u8],
    ) -> Result<PatchOutcome, WhepError> {
        let who = Peer::Viewer(stream.to_string());
        self.patch_peer(who, resource, content_type, if_match, body)
            .await
    }

    /// Handles `DELETE /whep/{stream}/{resource}`: removes the viewer at once (its counters
    /// return now; its connection closes in the background). Returns whether it existed.
    pub fn delete(&self, stream: &str, resource: &str) -> bool {
        self.inner.remove(stream, resource).is_some()
    }

    /// Every viewer and WHIP publisher, by stream.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        let st = lock(&self.inner.state);
        let mut out: Vec<PeerInfo> = st
            .streams
            .iter()
            .flat_map(|(name, s)| {
                s.viewers.iter().map(move |(id, v)| PeerInfo {
                    id: id.clone(),
                    stream: name.clone(),
                    protocol: "whep",
                    peer: v.peer.map(|p| p.to_string()),
                    since_ms: ms(v.since),
                    bytes: v.bytes.load(Ordering::Relaxed),
                })
            })
            .chain(st.publishers.iter().map(|(id, p)| PeerInfo {
                id: id.clone(),
                stream: p.key.clone(),
                protocol: "whip",
                peer: p.peer.peer.map(|a| a.to_string()),
                since_ms: ms(p.peer.since),
                bytes: p.peer.bytes.load(Ordering::Relaxed),
            }))
            .collect();
        out.sort_by(|a, b| (&a.stream, &a.id).cmp(&(&b.stream, &b.id)));
        out
    }

    /// Removes the viewer or ends the WHIP publisher with resource id `id`, whatever its
    /// stream; false when there is none.
    pub fn kick(&self, id: &str) -> bool {
        let stream = {
            let st = lock(&self.inner.state);
            if let Some(p) = st.publishers.get(id) {
                p.peer.cancel.notify_one();
                return true;
            }
            st.streams
                .iter()
                .find(|(_, s)| s.viewers.contains_key(id))
                .map(|(n, _)| n.clone())
        };
        stream.is_some_and(|s| self.inner.remove(&s, id).is_some())
    }

    /// Removes every viewer of `stream`; returns how many.
    pub fn close_stream(&self, stream: &str) -> usize {
        let ids: Vec<String> = lock(&self.inner.state)
            .streams
            .get(stream)
            .map(|s| s.viewers.keys().cloned().collect())
            .unwrap_or_default();
        ids.iter()
            .filter(|id| self.inner.remove(stream, id).is_some())
            .count()
    }

    /// Removes every viewer and publisher and refuses new offers.
    pub fn shutdown(&self) {
        let all: Vec<(String, String)> = {
            let mut st = lock(&self.inner.state);
            st.closed = true;
            for p in st.publishers.values() {
                p.peer.cancel.notify_one();
            }
            st.streams
                .iter()
                .flat_map(|(s, v)| v.viewers.keys().map(move |r| (s.clone(), r.clone())))
                .collect()
        };
        for (s, r) in all {
            self.inner.remove(&s, &r);
        }
    }

    /// Counters.
    pub fn stats(&self) -> WhepStats {
        let st = lock(&self.inner.state);
        let mut streams: Vec<WhepStreamStats> = st
            .streams
            .iter()
            .map(|(name, s)| {
                let c = &s.feed.counters;
                WhepStreamStats {
                    stream: name.clone(),
                    viewers: s.viewers.len() + s.pending,
                    units: c.units.load(Ordering::Relaxed),
                    bytes: c.bytes.load(Ordering::Relaxed),
                    ring_skipped: c.ring_skipped.load(Ordering::Relaxed),
                    viewer_skipped: c.viewer_skipped.load(Ordering::Relaxed),
                    bframes: c.bframes.load(Ordering::Relaxed),
                    audio: match &s.feed.info.audio {
                        AudioPlan::None => "none".into(),
                        AudioPlan::Opus => "opus".into(),
                        AudioPlan::AacToOpus => "aac→opus".into(),
                        AudioPlan::Unsupported(r) => format!("not sent: {r}"),
                    },
                }
            })
            .collect();
        streams.sort_by(|a, b| a.stream.cmp(&b.stream));
        WhepStats {
            viewers: st.total,
            publishers: st.publishers.len(),
            tasks: self.inner.tasks.load(Ordering::SeqCst),
            peer_connections: self.inner.pcs.load(Ordering::SeqCst),
            feeds: self.inner.feed_threads.load(Ordering::SeqCst),
            offers: self.inner.offers.load(Ordering::Relaxed),
            streams,
        }
    }
}

impl State {
    /// Removes `stream` and stops its feed once it has no viewer and no offer in progress.
    fn release_if_idle(&mut self, stream: &str) {
        let idle = self
            .streams
            .get(stream)
            .is_some_and(|s| s.viewers.is_empty() && s.pending == 0);
        if idle {
            if let Some(s) = self.streams.remove(stream) {
                s.feed.stop();
            }
        }
    }
}

impl Inner {
    /// Drops a viewer from the index (counters return at once) and tells its task to close
    /// the connection. Stops the stream's feed when it was the last viewer.
    fn remove(&self, stream: &str, resource: &str) -> Option<()> {
        let mut st = lock(&self.state);
        let s = st.streams.get_mut(stream)?;
        let v = s.viewers.remove(resource)?;
        st.release_if_idle(stream);
        st.total -= 1;
        drop(st);
        v.cancel.notify_one();
        Some(())
    }

    /// Gives back a reservation taken by an offer that failed.
    fn unreserve(&self, stream: &str) {
        let mut st = lock(&self.state);
        st.total = st.total.saturating_sub(1);
        if let Some(s) = st.streams.get_mut(stream) {
            s.pending = s.pending.saturating_sub(1);
            st.release_if_idle(stream);
        }
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let r: u64 = random_u64();
        format!("{n:x}{r:016x}")
    }
}

/// The WebRTC stack's settings. Remote `.local` (mDNS) candidates are resolved where the
/// host can send multicast; where it cannot (a container or network namespace without a
/// multicast route), the stack's mDNS socket would fail every peer connection with ENODEV, so
/// mDNS is off there: browsers' mDNS-hidden addresses are then learnt from their connectivity
/// checks (peer-reflexive candidates) instead.
fn setting_engine() -> rtc::peer_connection::configuration::setting_engine::SettingEngine {
    use rtc::ice::mdns::MulticastDnsMode;
    use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
    static MULTICAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let multicast = *MULTICAST.get_or_init(|| {
        let ok = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| {
                s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::UNSPECIFIED)
            })
            .is_ok();
        if !ok {
            log::info!("no multicast route: mDNS candidates of browsers are not resolved");
        }
        ok
    });
    let mode = if multicast {
        MulticastDnsMode::QueryOnly
    } else {
        MulticastDnsMode::Disabled
    };
    SettingEngineBuilder::new()
        .with_multicast_dns_mode(mode)
        .build()
}

fn content_type_is(ct: Option<&str>, want: &str) -> bool {
    ct.and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case(want))
}

struct Handler {
    state_tx: watch::Sender<RTCPeerConnectionState>,
    gather_tx: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        let _ = self.gather_tx.send(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state_tx.send(state);
    }
}

/// The sending side of one viewer's track.
struct Out {
    track: Arc<TrackLocalStaticRTP>,
    pt: u8,
    ssrc: u32,
    seq: u16,
    /// The viewer's byte counter.
    bytes: Arc<AtomicU64>,
}

impl Out {
    async fn send(&mut self, payloads: &[bytes::Bytes], ts: u32) {
        let last = payloads.len().saturating_sub(1);
        for (i, p) in payloads.iter().enumerate() {
            self.bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
            let pkt = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: self.pt,
                    sequence_number: self.seq,
                    timestamp: ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: p.clone(),
            };
            self.seq = self.seq.wrapping_add(1);
            // A failed write (connection closing) is noticed through the state watch.
            let _ = self.track.write_rtp(pkt).await;
        }
    }
}

fn track(kind: RtpCodecKind, codec: RTCRtpCodec, ssrc: u32, name: &str) -> MediaStreamTrack {
    MediaStreamTrack::new(
        format!("framecache-{name}"),
        format!("{name}-{kind}"),
        format!("{name} {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

async fn offer(
    inner: Arc<Inner>,
    stream: String,
    ct: Option<String>,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
) -> Result<WhepAnswer, WhepError> {
    if !content_type_is(ct.as_deref(), "application/sdp") {
        return Err(WhepError::UnsupportedMediaType(format!(
            "Content-Type must be application/sdp, not {}",
            ct.as_deref().unwrap_or("(none)")
        )));
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(WhepError::BadRequest("the offer is empty".into()));
    }
    let sdp = std::str::from_utf8(&body)
        .map_err(|_| WhepError::BadRequest("the offer is not UTF-8".into()))?
        .to_string();
    let parsed = sdp::parse_offer(&sdp).map_err(WhepError::BadRequest)?;
    if framecache_shm::slot::validate_id(&stream).is_err() {
        return Err(WhepError::NotFound(format!("no stream {stream:?}")));
    }

    // A source that just connected may not have published its video parameters yet; what
    // the feed decides (pass through, or a rendition) needs them, so wait a little for them.
    let fresh = lock(&inner.state)
        .streams
        .get(&stream)
        .is_none_or(|s| s.feed.ended().is_some());
    // (Without them after 5 s the feed decides without them, as before: WHEP players that
    // do not retry a 409 still get the stream.)
    if fresh {
        wait_for_video_params(&inner.root, &stream, Duration::from_secs(5)).await;
    }

    // Reserve a place (the caps count offers in progress) and find or start the feed; a
    // stream browsers cannot play as it is is fed from a rendition the host makes. A viewer
    // whose offer does not decode the source's H.264 profile (while others may) watches the
    // rendition as a stream of its own, under the rendition's name (`key`).
    let mut source = stream.clone();
    let mut key = stream.clone();
    let feed = loop {
        // Ok(feed), or Err(why) when a rendition is needed (made outside the lock).
        let step: Result<Arc<Feed>, String> = 'step: {
            let mut st = lock(&inner.state);
            if st.closed {
                return Err(WhepError::Internal("the engine is shutting down".into()));
            }
            if st.total >= inner.cfg.max_viewers_total {
                return Err(WhepError::ServerFull {
                    max: inner.cfg.max_viewers_total,
                });
            }
            let reuse = st
                .streams
                .get(&key)
                .filter(|s| s.feed.ended().is_none())
                .map(|s| s.feed.clone());
            let feed = match reuse {
                Some(f) => f,
                None => {
                    let switch = inner
                        .cfg
                        .renditions
                        .clone()
                        .filter(|_| source == stream && key == stream)
                        .map(|make| feed::Switch {
                            root: inner.root.clone(),
                            stream: stream.clone(),
                            make,
                        });
                    let f =
                        match Feed::start(&inner.root, &source, inner.feed_threads.clone(), switch)
                        {
                            Ok(f) => f,
                            Err(FeedError::NotLive(why)) => {
                                let known = framecache_shm::packet::slot_info(&inner.root, &stream)
                                    .is_ok()
                                    || inner.cfg.known_streams.as_ref().is_some_and(|k| k(&stream));
                                return Err(if known {
                                    WhepError::NotLive(format!("stream {stream} is not live yet"))
                                } else {
                                    WhepError::NotFound(format!("no stream {stream:?} ({why})"))
                                });
                            }
                            Err(FeedError::NoCodec(why)) => {
                                return Err(WhepError::Unprocessable(why))
                            }
                            Err(FeedError::NeedsTranscode(why)) if source == stream => {
                                if inner.cfg.renditions.is_none() {
                                    return Err(WhepError::Unprocessable(format!(
                                        "{why}, and this server does not transcode; {PLAYABLE}"
                                    )));
                                }
                                break 'step Err(why);
                            }
                            Err(FeedError::NeedsTranscode(why)) => {
                                return Err(WhepError::Unprocessable(format!(
                                    "the rendition {source} cannot be played either: {why}"
                                )))
                            }
                            Err(FeedError::Other(why)) => return Err(WhepError::Internal(why)),
                        };
                    // A feed of a previous source that ended: its viewers are being torn down.
                    if let Some(old) = st.streams.remove(&key) {
                        old.feed.stop();
                        let n = old.viewers.len() + old.pending;
                        st.total -= n;
                        for v in old.viewers.into_values() {
                            v.cancel.notify_one();
                        }
                    }
                    st.streams.insert(
                        key.clone(),
                        StreamState {
                            feed: f.clone(),
                            viewers: HashMap::new(),
                            pending: 0,
                        },
                    );
                    f
                }
            };
            let s = st.streams.get_mut(&key).expect("inserted above");
            if s.viewers.len() + s.pending >= inner.cfg.max_viewers_per_stream {
                // A cap of 0: the feed just started for this offer must not outlive it.
                st.release_if_idle(&key);
                return Err(WhepError::StreamFull {
                    stream: key,
                    max: inner.cfg.max_viewers_per_stream,
                });
            }
            s.pending += 1;
            st.total += 1;
            Ok(feed)
        };
        // A feed this viewer's offer cannot decode (its H.264 profile): the viewer alone goes
        // to the rendition.
        let step = match step {
            Ok(f) if key == stream => {
                match sdp::h264_accepts(&parsed, f.info.profile_level_id.as_deref()) {
                    Ok(()) => break f,
                    Err(why) => {
                        inner.unreserve(&key);
                        let Some(make) = inner.cfg.renditions.clone() else {
                            return Err(WhepError::Unprocessable(format!(
                                "{why}, and this server does not transcode; {PLAYABLE}"
                            )));
                        };
                        let (s2, w2) = (stream.clone(), why.clone());
                        source = tokio::task::spawn_blocking(move || make(&s2, &w2))
                            .await
                            .map_err(|e| WhepError::Internal(e.to_string()))?
                            .map_err(|e| WhepError::Unprocessable(format!("{why}; {e}")))?;
                        key = source.clone();
                        continue;
                    }
                }
            }
            other => other,
        };
        match step {
            Ok(f) => break f,
            Err(why) => {
                let make = inner.cfg.renditions.clone().expect("checked above");
                let (s2, w2) = (stream.clone(), why.clone());
                source = tokio::task::spawn_blocking(move || make(&s2, &w2))
                    .await
                    .map_err(|e| WhepError::Internal(e.to_string()))?
                    .map_err(|e| WhepError::Unprocessable(format!("{why}; {e}")))?;
            }
        }
    };

    match build_viewer(&inner, &key, &feed, &parsed, sdp, peer).await {
        Ok((answer, viewer, run)) => {
            let mut st = lock(&inner.state);
            let Some(s) = st.streams.get_mut(&key) else {
                // The stream was torn down meanwhile (source restarted or shutdown).
                drop(st);
                viewer.cancel.notify_one();
                tokio::spawn(run);
                return Err(WhepError::NotLive(format!("stream {key} stopped")));
            };
            s.pending -= 1;
            s.viewers.insert(answer.resource.clone(), viewer);
            drop(st);
            inner.offers.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(run);
            Ok(answer)
        }
        Err(e) => {
            inner.unreserve(&key);
            Err(e)
        }
    }
}

/// What a publisher can change so that browsers play a stream as it is.
const PLAYABLE: &str = "push H.264 that browsers decode as it is (x264/ffmpeg: -profile:v \
    baseline -bf 0, or -tune zerolatency; OBS: profile baseline, B-frames 0)";

/// Waits until the video stream of packet slot `stream` has codec parameters, at most
/// `limit`; false if they did not come (true at once when there is no such slot or no video:
/// the feed's own checks answer those).
async fn wait_for_video_params(root: &std::path::Path, stream: &str, limit: Duration) -> bool {
    use framecache_shm::packet::{PacketReader, PacketReaderConfig, FC_MEDIA_VIDEO};
    let t = std::time::Instant::now();
    loop {
        let Ok(r) = PacketReader::open_in(root, stream, PacketReaderConfig::default()) else {
            return true;
        };
        let Some(v) = r
            .streams()
            .iter()
            .find(|s| s.media == FC_MEDIA_VIDEO)
            .map(|s| s.index)
        else {
            return true;
        };
        if r.codec_params(v, 0).is_ok() {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        drop(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies the offer `sdp` to `pc`, answers it and waits for ICE gathering (at most the
/// configured timeout); returns the answer with every candidate. Viewers and WHIP publishers.
async fn answer_offer(
    inner: &Inner,
    pc: &Arc<dyn PeerConnection>,
    sdp: &str,
    gather_rx: &watch::Receiver<bool>,
) -> Result<String, WhepError> {
    let remote = RTCSessionDescription::offer(sdp.to_string())
        .map_err(|e| WhepError::BadRequest(format!("bad offer: {e}")))?;
    pc.set_remote_description(remote)
        .await
        .map_err(|e| WhepError::BadRequest(format!("offer refused: {e}")))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| WhepError::NotAcceptable(format!("no answer: {e}")))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| WhepError::Internal(format!("answer: {e}")))?;
    let mut g = gather_rx.clone();
    let gathered = tokio::time::timeout(inner.cfg.ice_gather_timeout, g.wait_for(|c| *c))
        .await
        .is_ok_and(|r| r.is_ok());
    if !gathered {
        return Err(WhepError::GatherTimeout);
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| WhepError::Internal("no local description".into()))
}

type ViewerRun = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn build_viewer(
    inner: &Arc<Inner>,
    stream: &str,
    feed: &Arc<Feed>,
    parsed: &sdp::Offer,
    sdp: String,
    peer: Option<SocketAddr>,
) -> Result<(WhepAnswer, Viewer, ViewerRun), WhepError> {
    let info = &feed.info;
    let h264 = sdp::choose_h264(parsed, info.profile_level_id.as_deref()).ok_or_else(|| {
        WhepError::NotAcceptable(
            "the offer has no H.264 with packetization-mode=1, and the stream is H.264".into(),
        )
    })?;
    let has_audio = matches!(info.audio, AudioPlan::Opus | AudioPlan::AacToOpus);
    let opus = if has_audio {
        Some(sdp::choose_opus(parsed).ok_or_else(|| {
            WhepError::NotAcceptable(
                "the stream has audio and the offer has no Opus (add an audio transceiver)".into(),
            )
        })?)
    } else {
        None
    };
    let fb = |t: &str, p: &str| RTCPFeedback {
        typ: t.into(),
        parameter: p.into(),
    };
    let vcodec = RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: h264.fmtp.clone(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
    };
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vcodec.clone(),
            payload_type: h264.pt,
        },
        RtpCodecKind::Video,
    )
    .map_err(|e| WhepError::Internal(format!("register H.264: {e}")))?;
    let acodec = opus.as_ref().map(|o| RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: o.fmtp.clone(),
        rtcp_feedback: vec![],
    });
    if let (Some(o), Some(c)) = (&opus, &acodec) {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: c.clone(),
                payload_type: o.pt,
            },
            RtpCodecKind::Audio,
        )
        .map_err(|e| WhepError::Internal(format!("register Opus: {e}")))?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut me)
        .map_err(|e| WhepError::Internal(format!("interceptors: {e}")))?;
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (gather_tx, gather_rx) = watch::channel(false);
    let handler = Arc::new(Handler {
        state_tx,
        gather_tx,
    });
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(setting_engine())
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec![SocketAddr::new(inner.cfg.ice_ip, 0)])
        .build()
        .await
        .map_err(|e| WhepError::Internal(format!("peer connection: {e}")))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let pcs = inner.pcs.clone();
    pcs.fetch_add(1, Ordering::SeqCst);
    let fail = |pc: Arc<dyn PeerConnection>, e: WhepError| {
        let pcs = pcs.clone();
        tokio::spawn(async move {
            let _ = pc.close().await;
            pcs.fetch_sub(1, Ordering::SeqCst);
        });
        e
    };

    let vssrc = random_u64() as u32;
    let vtrack = Arc::new(TrackLocalStaticRTP::new(track(
        RtpCodecKind::Video,
        vcodec,
        vssrc,
        stream,
    )));
    if let Err(e) = pc.add_track(vtrack.clone() as Arc<dyn TrackLocal>).await {
        return Err(fail(pc, WhepError::Internal(format!("add video: {e}"))));
    }
    let mut aout = None;
    let bytes = Arc::new(AtomicU64::new(0));
    if let (Some(o), Some(c)) = (&opus, acodec) {
        let assrc = random_u64() as u32;
        let atrack = Arc::new(TrackLocalStaticRTP::new(track(
            RtpCodecKind::Audio,
            c,
            assrc,
            stream,
        )));
        if let Err(e) = pc.add_track(atrack.clone() as Arc<dyn TrackLocal>).await {
            return Err(fail(pc, WhepError::Internal(format!("add audio: {e}"))));
        }
        aout = Some(Out {
            track: atrack,
            pt: o.pt,
            ssrc: assrc,
            seq: random_u64() as u16,
            bytes: bytes.clone(),
        });
    }
    let local_sdp = match answer_offer(inner, &pc, &sdp, &gather_rx).await {
        Ok(a) => a,
        Err(e) => return Err(fail(pc, e)),
    };

    let resource = inner.new_id();
    let etag = format!("\"{:016x}\"", random_u64());
    let cancel = Arc::new(Notify::new());
    let vout = Out {
        track: vtrack,
        pt: h264.pt,
        ssrc: vssrc,
        seq: random_u64() as u16,
        bytes: bytes.clone(),
    };
    let run: ViewerRun = Box::pin(run_viewer(
        inner.clone(),
        stream.to_string(),
        resource.clone(),
        pc.clone(),
        feed.clone(),
        state_rx,
        cancel.clone(),
        vout,
        aout,
    ));
    inner.tasks.fetch_add(1, Ordering::SeqCst);
    Ok((
        WhepAnswer {
            sdp: local_sdp,
            resource,
            etag: etag.clone(),
        },
        Viewer {
            etag,
            pc,
            cancel,
            remote_sdp: sdp,
            gather_rx,
            since: std::time::SystemTime::now(),
            bytes,
            peer,
        },
        run,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run_viewer(
    inner: Arc<Inner>,
    stream: String,
    resource: String,
    pc: Arc<dyn PeerConnection>,
    feed: Arc<Feed>,
    state_rx: watch::Receiver<RTCPeerConnectionState>,
    cancel: Arc<Notify>,
    vout: Out,
    aout: Option<Out>,
) {
    let _reason = send_media(&inner, &feed, state_rx, &cancel, vout, aout).await;
    inner.remove(&stream, &resource);
    let _ = pc.close().await;
    drop(pc);
    inner.pcs.fetch_sub(1, Ordering::SeqCst);
    inner.tasks.fetch_sub(1, Ordering::SeqCst);
}

/// Waits for the connection, then sends the GOP catch-up and the live units until the viewer
/// is removed, its connection fails or the source stops; returns why.
async fn send_media(
    inner: &Inner,
    feed: &Feed,
    mut state_rx: watch::Receiver<RTCPeerConnectionState>,
    cancel: &Notify,
    mut vout: Out,
    mut aout: Option<Out>,
) -> String {
    use RTCPeerConnectionState as S;
    let connected = tokio::time::timeout(inner.cfg.connect_timeout, async {
        loop {
            tokio::select! {
                _ = cancel.notified() => return Err("removed".to_string()),
                r = state_rx.changed() => {
                    if r.is_err() {
                        return Err("connection gone".into());
                    }
                    match *state_rx.borrow_and_update() {
                        S::Connected => return Ok(()),
                        S::Failed | S::Closed => return Err("ICE/DTLS failed".into()),
                        _ => {}
                    }
                }
            }
        }
    })
    .await;
    match connected {
        Err(_) => return "connect timeout".into(),
        Ok(Err(r)) => return r,
        Ok(Ok(())) => {}
    }
    let (gop, mut rx) = match feed.subscribe() {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut clock = ViewerClock::new(random_u64() as u32, inner.cfg.disconnect_timeout);
    for u in &gop {
        if let Unit::Video { payloads, key, .. } = &**u {
            if let Some(ts) = clock.catch_up_video(*key) {
                vout.send(payloads, ts).await;
            }
        }
    }
    loop {
        let deadline = clock.deadline().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.notified() => return "removed".into(),
            _ = sleep => {
                if let Some(r) = clock.expired(std::time::Instant::now()) {
                    return r.into();
                }
            }
            r = state_rx.changed() => {
                if r.is_err() {
                    return "connection gone".into();
                }
                let state = *state_rx.borrow_and_update();
                if let Some(r) = clock.connection(std::time::Instant::now(), state) {
                    return r.into();
                }
            }
            u = rx.recv() => match u {
                Ok(u) => match &*u {
                    Unit::End(r) => return r.clone(),
                    Unit::Video { ts90, key, payloads } => {
                        if let Some(ts) = clock.live_video(*ts90, *key) {
                            vout.send(payloads, ts).await;
                        }
                    }
                    Unit::Audio { ts48, payload } => {
                        if let (Some(a), Some(ts)) = (aout.as_mut(), clock.live_audio(*ts48)) {
                            a.send(std::slice::from_ref(payload), ts).await;
                        }
                    }
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    feed.counters.viewer_skipped.fetch_add(n, Ordering::Relaxed);
                    clock.lagged();
                }
                Err(broadcast::error::RecvError::Closed) => return "feed closed".into(),
            }
        }
    }
}

/// Whose resource a PATCH is for.
enum Peer {
    /// A viewer of this stream.
    Viewer(String),
    /// A WHIP publisher to this key.
    Publisher(String),
}

impl State {
    fn peer_mut(&mut self, who: &Peer, resource: &str) -> Option<&mut Viewer> {
        match who {
            Peer::Viewer(stream) => self
                .streams
                .get_mut(stream)
                .and_then(|s| s.viewers.get_mut(resource)),
            Peer::Publisher(key) => self
                .publishers
                .get_mut(resource)
                .filter(|p| &p.key == key)
                .map(|p| &mut p.peer),
        }
    }
}

async fn patch(
    inner: Arc<Inner>,
    who: Peer,
    resource: String,
    ct: Option<String>,
    if_match: Option<String>,
    body: Vec<u8>,
) -> Result<PatchOutcome, WhepError> {
    let (pc, etag, remote_sdp, gather_rx) = {
        let mut st = lock(&inner.state);
        let v = st
            .peer_mut(&who, &resource)
            .ok_or_else(|| WhepError::NotFound(format!("no resource {resource}")))?;
        (
            v.pc.clone(),
            v.etag.clone(),
            v.remote_sdp.clone(),
            v.gather_rx.clone(),
        )
    };
    if !content_type_is(ct.as_deref(), "application/trickle-ice-sdpfrag") {
        return Err(WhepError::UnsupportedMediaType(
            "Content-Type must be application/trickle-ice-sdpfrag".into(),
        ));
    }
    if let Some(m) = if_match.as_deref() {
        if m.trim() != "*" && m.trim() != etag {
            return Err(WhepError::PreconditionFailed);
        }
    }
    let text = std::str::from_utf8(&body).map_err(|_| WhepError::BadRequest("not UTF-8".into()))?;
    let frag = sdp::parse_sdpfrag(text).map_err(WhepError::BadRequest)?;
    let restart = match (&frag.ufrag, sdp::ice_ufrag(&remote_sdp)) {
        (Some(new), Some(old)) => *new != old,
        _ => false,
    };
    if !restart {
        for (mid, cand) in frag.candidates {
            let init = rtc::peer_connection::transport::RTCIceCandidateInit {
                candidate: cand,
                sdp_mid: Some(mid.unwrap_or_else(|| "0".into())),
                sdp_mline_index: None,
                ..Default::default()
            };
            pc.add_ice_candidate(init)
                .await
                .map_err(|e| WhepError::BadRequest(format!("candidate refused: {e}")))?;
        }
        return Ok(PatchOutcome::Applied);
    }
    // ICE restart: the client's previous offer with its new credentials, answered anew.
    let (Some(ufrag), Some(pwd)) = (frag.ufrag.as_deref(), frag.pwd.as_deref()) else {
        return Err(WhepError::BadRequest(
            "an ICE restart needs both a=ice-ufrag and a=ice-pwd".into(),
        ));
    };
    let new_remote = sdp::with_ice_credentials(&remote_sdp, ufrag, pwd);
    let desc = RTCSessionDescription::offer(new_remote.clone())
        .map_err(|e| WhepError::BadRequest(format!("restart: {e}")))?;
    pc.set_remote_description(desc)
        .await
        .map_err(|e| WhepError::BadRequest(format!("restart refused: {e}")))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| WhepError::Internal(format!("restart answer: {e}")))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| WhepError::Internal(format!("restart answer: {e}")))?;
    let mut g = gather_rx;
    let _ = tokio::time::timeout(inner.cfg.ice_gather_timeout, g.wait_for(|c| *c)).await;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| WhepError::Internal("no local description".into()))?;
    let mut frag_out = String::new();
    for l in local.sdp.lines().map(|l| l.trim_end_matches('\r')) {
        if l.starts_with("a=ice-ufrag:")
            || l.starts_with("a=ice-pwd:")
            || l.starts_with("a=candidate:")
        {
            if frag_out.contains(l) {
                continue;
            }
            frag_out.push_str(l);
            frag_out.push_str("\r\n");
        }
    }
    frag_out.push_str("a=end-of-candidates\r\n");
    let new_etag = format!("\"{:016x}\"", random_u64());
    {
        let mut st = lock(&inner.state);
        if let Some(v) = st.peer_mut(&who, &resource) {
            v.etag = new_etag.clone();
            v.remote_sdp = new_remote;
        }
    }
    Ok(PatchOutcome::Restarted {
        sdpfrag: frag_out,
        etag: new_etag,
    })
}

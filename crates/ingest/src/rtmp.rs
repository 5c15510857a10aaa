//! RTMP: the push server (publish routed by stream key, play of any packet slot; RTMPS when
//! given a certificate) and the pull client, on rml_rtmp's sans-IO sessions with tokio at the
//! socket edge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::pump::{
    set_window_ack_size, ChunkInput, Publish, Publisher, Pump, PumpConn, MSG_WINDOW_ACK_SIZE,
    PUBLISH_IDLE,
};
use crate::push::{PushConfig, PushSession};
use crate::registry::KeyRegistry;
use crate::sink::IngestEvent;
use crate::Streams;
use framecache_media::flv;
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::*;

/// Handshake and connect must be done within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the RTMP server.
#[derive(Clone)]
pub struct RtmpServerConfig {
    /// Keys, slot options, events and root of publishes.
    pub push: PushConfig,
    /// Serve `play` requests from packet slots.
    pub play: bool,
    /// Who may play, and how many at once.
    pub access: PlayAccess,
    /// Per-slot viewer tokens (beside `access.token`).
    pub play_tokens: PlayTokens,
    /// Publishers' sockets are read by one thread every this often, all in one wake-up,
    /// instead of on every arriving message: less CPU per stream (the wake-ups are what costs), at
    /// most this much added latency. Zero reads each publisher as its data arrives.
    pub read_interval: Duration,
    /// Serve RTMPS: TLS with this identity before RTMP (see [`tls_identity`]). Publishers
    /// behind TLS are read as their data arrives.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The plays running (shared with the engine's other listeners: one set of caps).
    pub plays: Arc<Plays>,
}

/// A TLS server identity for RTMPS from PEM files: the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). Errors name the file and what is wrong with it.
pub fn tls_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |p: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::InvalidArg(format!("TLS {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArg(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, &format!("does not fit the certificate: {e}")))?;
    Ok(Arc::new(cfg))
}

/// Default [`RtmpServerConfig::read_interval`]: publishers are read every 100 ms, which adds
/// at most 100 ms (50 on average) to a packet's way into the ring. Per stream that costs about
/// a third of the CPU of reading every 20 ms, and of nginx-rtmp's (see `benches/ingest.rs`).
/// SRS's merged read makes the same trade at 350 ms. `framecache serve`, whose viewers are
/// WebRTC players, reads every 20 ms instead.
pub const DEFAULT_READ_INTERVAL: Duration = Duration::from_millis(100);

impl RtmpServerConfig {
    /// Publish through `registry`, play enabled, [`DEFAULT_READ_INTERVAL`].
    pub fn new(registry: KeyRegistry) -> RtmpServerConfig {
        RtmpServerConfig {
            push: PushConfig::new(registry, "rtmp"),
            play: true,
            access: PlayAccess::default(),
            play_tokens: PlayTokens::default(),
            read_interval: DEFAULT_READ_INTERVAL,
            tls: None,
            plays: Arc::default(),
        }
    }
}

/// Who may play a slot over RTMP, and how many plays run at once.
#[derive(Clone, Default)]
pub struct PlayAccess {
    /// A viewer token every play must carry as `rtmp://HOST/APP/SLOT?token=TOKEN` (refused
    /// with `NetStream.Play.Failed` otherwise). None = play is open.
    pub token: Option<String>,
    /// Plays of one slot at once (0 = no cap); more are refused with `NetStream.Play.Failed`.
    pub max_per_stream: usize,
    /// Plays at once in total (0 = no cap).
    pub max_total: usize,
}

/// Viewer tokens of single slots, shared by the RTMP listeners and changed at run time: a
/// play of a slot may carry its token instead of [`PlayAccess::token`], and a slot with one
/// needs one of the two even when there is no global token.
#[derive(Clone, Default)]
pub struct PlayTokens(Arc<std::sync::RwLock<std::collections::HashMap<String, String>>>);

impl PlayTokens {
    /// Sets (`Some`) or removes (`None`) the token of `slot`; plays asked for afterwards see it.
    pub fn set(&self, slot: &str, token: Option<&str>) {
        let mut m = self.0.write().unwrap_or_else(|e| e.into_inner());
        match token {
            Some(t) => m.insert(slot.to_string(), t.to_string()),
            None => m.remove(slot),
        };
    }

    /// The token of `slot`, if it has one.
    pub fn get(&self, slot: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slot)
            .cloned()
    }
}

impl std::fmt::Debug for PlayAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayAccess")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("max_per_stream", &self.max_per_stream)
            .field("max_total", &self.max_total)
            .finish()
    }
}

/// Whether the play name `SLOT?token=…&…` carries `token` (constant-time compare: a secret).
#[cfg(test)]
fn token_ok(play_name: &str, token: &str) -> bool {
    play_token(play_name).is_some_and(|g| framecache_media::credential::secret_eq(g, token))
}

/// The `token=` value of a play name `SLOT?token=…&…`.
fn play_token(play_name: &str) -> Option<&str> {
    let (_, query) = play_name.split_once('?')?;
    query.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// One running RTMP or SRT play, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayInfo {
    /// Its id (`rtmp-N`, `srt-N`): [`Plays::kick`] ends it.
    pub id: String,
    /// The slot played.
    pub slot: String,
    /// `rtmp`, `rtmps` or `srt`.
    pub protocol: &'static str,
    /// The reader's address.
    pub peer: String,
    /// `CLOCK_REALTIME` ns when it started.
    pub since_ns: u64,
    /// Payload bytes sent to it.
    pub bytes: u64,
}

struct PlayEntry {
    slot: String,
    protocol: &'static str,
    peer: String,
    since_ns: u64,
    bytes: Arc<AtomicU64>,
    kicked: Arc<std::sync::atomic::AtomicBool>,
}

/// The plays running now (RTMP and SRT play of one engine share it): their places under the
/// caps, and what an operator lists and ends.
#[derive(Default)]
pub struct Plays {
    by_id: std::sync::Mutex<std::collections::BTreeMap<u64, PlayEntry>>,
    next: AtomicU64,
}

/// One running play; frees its place when dropped.
pub(crate) struct PlaySeat {
    plays: Arc<Plays>,
    id: u64,
    bytes: Arc<AtomicU64>,
    kicked: Arc<std::sync::atomic::AtomicBool>,
}

impl PlaySeat {
    /// Counts `n` bytes sent.
    pub(crate) fn sent(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Whether the operator ended this play.
    pub(crate) fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Relaxed)
    }
}

impl Drop for PlaySeat {
    fn drop(&mut self) {
        self.plays.lock().remove(&self.id);
    }
}

impl Plays {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, PlayEntry>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which cap another play of `slot` would pass, if any.
    fn over(
        m: &std::collections::BTreeMap<u64, PlayEntry>,
        a: &PlayAccess,
        slot: &str,
    ) -> Option<&'static str> {
        if a.max_total != 0 && m.len() >= a.max_total {
            return Some("the server's play limit is reached");
        }
        if a.max_per_stream != 0
            && m.values().filter(|e| e.slot == slot).count() >= a.max_per_stream
        {
            return Some("the stream's play limit is reached");
        }
        None
    }

    /// Whether another play of `slot` fits the caps of `a` (nothing taken).
    pub(crate) fn fits(&self, a: &PlayAccess, slot: &str) -> bool {
        Self::over(&self.lock(), a, slot).is_none()
    }

    /// Takes a place for a play of `slot` by `peer` over `protocol`, or says which cap is
    /// reached.
    pub(crate) fn take(
        self: &Arc<Self>,
        a: &PlayAccess,
        slot: &str,
        protocol: &'static str,
        peer: &str,
    ) -> std::result::Result<PlaySeat, &'static str> {
        let mut m = self.lock();
        if let Some(why) = Self::over(&m, a, slot) {
            return Err(why);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let bytes = Arc::new(AtomicU64::new(0));
        let kicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        m.insert(
            id,
            PlayEntry {
                slot: slot.to_string(),
                protocol,
                peer: peer.to_string(),
                since_ns: framecache_shm::slot::realtime_ns(),
                bytes: bytes.clone(),
                kicked: kicked.clone(),
            },
        );
        Ok(PlaySeat {
            plays: self.clone(),
            id,
            bytes,
            kicked,
        })
    }

    /// The plays running now.
    pub fn list(&self) -> Vec<PlayInfo> {
        self.lock()
            .iter()
            .map(|(id, e)| PlayInfo {
                id: format!("{}-{id}", e.protocol),
                slot: e.slot.clone(),
                protocol: e.protocol,
                peer: e.peer.clone(),
                since_ns: e.since_ns,
                bytes: e.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Ends the play `id` (as listed): it stops within half a second. False when there is
    /// none.
    pub fn kick(&self, id: &str) -> bool {
        let Some(n) = id.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok()) else {
            return false;
        };
        let m = self.lock();
        match m.get(&n).filter(|e| format!("{}-{n}", e.protocol) == id) {
            Some(e) => {
                e.kicked.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

struct Ctx {
    cfg: RtmpServerConfig,
    streams: Streams,
    conn_ids: AtomicU64,
    /// Reads the publishers (None if its thread could not start: then a task each).
    pump: Option<Pump>,
    plays: Arc<Plays>,
}

/// Accepts RTMP connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, cfg: RtmpServerConfig, streams: Streams) {
    let pump = match Pump::start(cfg.read_interval) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("rtmp: {e}; publishers are read by a task each");
            None
        }
    };
    let ctx = Arc::new(Ctx {
        plays: cfg.plays.clone(),
        cfg,
        streams,
        conn_ids: AtomicU64::new(0),
        pump,
    });
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("rtmp: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        let n = ctx.conn_ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let r = match ctx.cfg.tls.clone() {
                None => connection(sock, peer, &ctx).await,
                Some(tls) => {
                    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(sock);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(s)) => connection(s, peer, &ctx).await,
                        Ok(Err(e)) => Err(Error::Protocol(format!("TLS: {e}"))),
                        Err(_) => Err(Error::Protocol("TLS handshake timed out".into())),
                    }
                }
            };
            if let Err(e) = r {
                log::info!("rtmp: {peer} (#{n}): {e}");
            }
        });
    }
}

enum PlayMsg {
    /// An `onMetaData` body (AMF0).
    Meta(Vec<u8>),
    Video(Bytes, u32),
    Audio(Bytes, u32),
    End(String),
}

fn catch<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| Error::Protocol("RTMP library panicked on the input".into()))
}

/// A connection the RTMP server runs: plain TCP, or TLS over it (RTMPS).
trait RtmpConn: AsyncRead + AsyncWrite + Unpin + Send + 'static + Sized {
    /// The plain socket, for the pump; `Err(self)` for a connection that stays in its task.
    fn into_plain(self) -> std::result::Result<std::io::Result<std::net::TcpStream>, Self>;
}

impl RtmpConn for TcpStream {
    fn into_plain(self) -> std::result::Result<std::io::Result<std::net::TcpStream>, Self> {
        Ok(self.into_std())
    }
}

impl RtmpConn for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_plain(self) -> std::result::Result<std::io::Result<std::net::TcpStream>, Self> {
        Err(self)
    }
}

async fn connection<S: RtmpConn>(sock: S, peer: SocketAddr, ctx: &Arc<Ctx>) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(sock);
    let mut buf = vec![0u8; 64 * 1024];
    let mut hs = Handshake::new(PeerType::Server);
    let remaining = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Err(Error::Protocol("closed during the handshake".into()));
            }
            let r = catch(|| hs.process_bytes(&buf[..n]))?
                .map_err(|e| Error::Protocol(format!("handshake: {e:?}")))?;
            match r {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    wr.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    wr.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    })
    .await
    .map_err(|_| Error::Protocol("handshake timed out".into()))??;

    let config = ServerSessionConfig::new();
    let chunk_size = config.chunk_size;
    let (mut session, init) =
        ServerSession::new(config).map_err(|e| Error::Protocol(format!("{e:?}")))?;
    // Play's script data (onMetaData) goes out through a serializer of our own, stamped 0:
    // rml_rtmp stamps data messages with its session clock, and ffmpeg's FLV demuxer turns
    // script data with a non-zero timestamp into a subtitle stream. rml_rtmp sends data messages
    // (and only those) on chunk stream 3, so this serializer owns that chunk stream.
    let mut data_ser = ChunkSerializer::new();
    data_ser
        .set_max_chunk_size(chunk_size, RtmpTimestamp::new(0))
        .map_err(|e| Error::Protocol(format!("{e:?}")))?;
    let mut publish: Option<Publish> = None;
    let (play_tx, mut play_rx) = mpsc::channel::<PlayMsg>(256);
    let mut play_stream: Option<u32> = None;
    let mut out = Vec::new();
    let mut queue: Vec<ServerSessionResult> = init;
    // Our own chunk reader follows the same bytes as rml_rtmp's session during setup, so that
    // once a publish is accepted it can take over mid-stream (see `super::pump`).
    let mut tee = Tee::default();
    let mut input: Vec<u8> = remaining;
    let mut last_read = std::time::Instant::now();
    let mut idle_tick = tokio::time::interval(Duration::from_secs(2));
    let result: Result<()> = loop {
        if !input.is_empty() {
            if play_stream.is_none() {
                if let Err(e) = tee.follow(&input) {
                    break Err(e);
                }
            }
            match catch(|| session.handle_input(&input))? {
                Ok(r) => queue.extend(r),
                Err(e) => break Err(Error::Protocol(format!("{e:?}"))),
            }
            input.clear();
        }
        // Results may raise requests whose answers are more results.
        let mut stop = None;
        let mut work: std::collections::VecDeque<_> = queue.drain(..).collect();
        while let Some(r) = work.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(ev) => {
                    let play = &mut play_stream;
                    match on_event(ev, &mut session, ctx, peer, &mut publish, &play_tx, play) {
                        Ok((more, end)) => {
                            work.extend(more);
                            if end.is_some() {
                                stop = end;
                            }
                        }
                        Err(e) => stop = Some(e),
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                break Err(e.into());
            }
            out.clear();
        }
        if let Some(e) = stop {
            break Err(e);
        }
        if let Some(p) = publish.take() {
            // Accepted: the rest of the connection is media, read by our own path.
            let publisher = Publisher::new(tee.input, p, tee.window);
            let sock = rd.unsplit(wr);
            return match &ctx.pump {
                Some(pump) => match sock.into_plain() {
                    Ok(plain) => {
                        pump.add(PumpConn {
                            sock: plain?,
                            peer,
                            publisher,
                        });
                        Ok(())
                    }
                    Err(tls) => publish_as_data_arrives(tls, peer, publisher).await,
                },
                None => publish_as_data_arrives(sock, peer, publisher).await,
            };
        }
        // Idle connections are found by a periodic check, not a timer per read (one timer
        // registration per read showed up in profiles).
        let idle_limit = play_stream.is_none();
        tokio::select! {
            r = rd.read(&mut buf) => {
                last_read = std::time::Instant::now();
                match r {
                    Err(e) => break Err(e.into()),
                    Ok(0) => break Ok(()),
                    Ok(n) => input.extend_from_slice(&buf[..n]),
                }
            }
            _ = idle_tick.tick() => {
                if idle_limit && last_read.elapsed() > PUBLISH_IDLE {
                    break Err(Error::Protocol("idle timeout".into()));
                }
            }
            m = play_rx.recv(), if play_stream.is_some() => {
                let sid = play_stream.expect("guarded");
                let packet = match m {
                    Some(PlayMsg::Meta(body)) => {
                        let m = MessagePayload {
                            timestamp: RtmpTimestamp::new(0),
                            type_id: 18,
                            message_stream_id: sid,
                            data: Bytes::from(body),
                        };
                        data_ser.serialize(&m, true, false).map_err(|e| {
                            rml_rtmp::sessions::ServerSessionError::from(e)
                        })
                    }
                    Some(PlayMsg::Video(b, ts)) => session.send_video_data(sid, b, RtmpTimestamp::new(ts), false),
                    Some(PlayMsg::Audio(b, ts)) => session.send_audio_data(sid, b, RtmpTimestamp::new(ts), false),
                    Some(PlayMsg::End(why)) => {
                        // Tell the player the stream is over, then close.
                        if let Ok(p) = session.finish_playing(sid) {
                            let _ = wr.write_all(&p.bytes).await;
                        }
                        log::info!("rtmp: {peer}: play ended: {why}");
                        break Ok(());
                    }
                    None => break Ok(()),
                };
                match packet {
                    Ok(p) => out.extend_from_slice(&p.bytes),
                    Err(e) => break Err(Error::Protocol(format!("{e:?}"))),
                }
            }
        }
    };
    if let Some(p) = publish.take() {
        finish_publish(p, result.as_ref().err());
    }
    result
}

/// Our chunk stream following the setup bytes, and the acknowledgement window the peer set.
#[derive(Default)]
struct Tee {
    input: ChunkInput,
    window: Option<u32>,
}

impl Tee {
    fn follow(&mut self, bytes: &[u8]) -> Result<()> {
        let window = &mut self.window;
        self.input.push(bytes, |m| {
            if m.type_id == MSG_WINDOW_ACK_SIZE {
                set_window_ack_size(window, m.payload);
            }
            Ok(true)
        })
    }
}

/// A publisher read in this task as its data arrives (read interval zero).
async fn publish_as_data_arrives<S: RtmpConn>(
    sock: S,
    peer: SocketAddr,
    mut p: Publisher,
) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(sock);
    let mut idle_tick = tokio::time::interval(Duration::from_secs(2));
    let end: Result<String> = loop {
        tokio::select! {
            r = rd.read(p.space()) => match r {
                Err(e) => break Err(e.into()),
                Ok(0) => break Ok("publisher closed".into()),
                Ok(n) => match p.filled(n) {
                    Err(e) => break Err(e),
                    Ok(Some(why)) => break Ok(why),
                    Ok(None) => {}
                },
            },
            _ = idle_tick.tick() => {
                if p.idle() {
                    break Err(Error::Protocol("idle timeout".into()));
                }
            }
        }
        p.flush();
        let out = p.outbound();
        if !out.is_empty() {
            if let Err(e) = wr.write_all(out).await {
                break Err(e.into());
            }
            out.clear();
        }
    };
    let reason = match &end {
        Ok(why) => why.clone(),
        Err(e) => {
            log::info!("rtmp: {peer}: publish ended: {e}");
            e.to_string()
        }
    };
    p.finish(reason);
    end.map(|_| ())
}

fn finish_publish(p: Publish, err: Option<&Error>) {
    p.finish(err.map_or("publisher closed".into(), |e| e.to_string()));
}

/// What an event led to: results to process (responses to send) and, when the connection
/// must end, why (sent after the responses, so a refusal reaches the peer).
type Outcome = (Vec<ServerSessionResult>, Option<Error>);

fn on_event(
    ev: ServerSessionEvent,
    session: &mut ServerSession,
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
    publish: &mut Option<Publish>,
    play_tx: &mpsc::Sender<PlayMsg>,
    play_stream: &mut Option<u32>,
) -> Result<Outcome> {
    let proto = |e| Error::Protocol(format!("{e:?}"));
    match ev {
        ServerSessionEvent::ConnectionRequested { request_id, .. } => {
            Ok((session.accept_request(request_id).map_err(proto)?, None))
        }
        ServerSessionEvent::PublishStreamRequested {
            request_id,
            stream_key,
            ..
        } => {
            if publish.is_some() || play_stream.is_some() {
                return Err(Error::Protocol("second stream on one connection".into()));
            }
            let guard = match ctx
                .cfg
                .push
                .registry
                .acquire(&stream_key, &peer.to_string())
            {
                Ok(g) => g,
                Err(e) => {
                    if let Some(cb) = &ctx.cfg.push.events {
                        let reg = &ctx.cfg.push.registry;
                        cb(&IngestEvent::Refused {
                            slot: reg.lookup(&stream_key).map(|c| c.slot).unwrap_or_default(),
                            input: format!("rtmp://{peer}/{stream_key}"),
                            reason: e.to_string(),
                        });
                    }
                    let r = session
                        .reject_request(request_id, "NetStream.Publish.BadName", &e.to_string())
                        .map_err(proto)?;
                    return Ok((r, Some(e)));
                }
            };
            let input = format!("rtmp://{peer}/{}", guard.key());
            *publish = Some(Publish::new(PushSession::start(
                &ctx.cfg.push,
                &ctx.streams,
                guard,
                input,
            )?));
            Ok((session.accept_request(request_id).map_err(proto)?, None))
        }
        ServerSessionEvent::VideoDataReceived {
            data, timestamp, ..
        } => media(publish, true, &data, timestamp.value),
        ServerSessionEvent::AudioDataReceived {
            data, timestamp, ..
        } => media(publish, false, &data, timestamp.value),
        ServerSessionEvent::PublishStreamFinished { .. } => {
            if let Some(p) = publish.take() {
                finish_publish(p, None);
            }
            Ok((Vec::new(), None))
        }
        ServerSessionEvent::PlayStreamRequested {
            request_id,
            stream_key,
            stream_id,
            ..
        } => {
            if publish.is_some() || play_stream.is_some() {
                return Err(Error::Protocol("second stream on one connection".into()));
            }
            let key = crate::registry::normalize_key(&stream_key).to_string();
            // A registered key plays its slot; otherwise the key names the slot itself.
            let slot = ctx
                .cfg
                .push
                .registry
                .lookup(&key)
                .map_or(key.clone(), |c| c.slot);
            // Refusals in RTMP's own words; the play name is not logged (it holds the token).
            let refuse = |session: &mut ServerSession, code: &str, why: String| {
                log::info!("rtmp: {peer}: play of {slot} refused: {why}");
                let r = session
                    .reject_request(request_id, code, &why)
                    .map_err(proto)?;
                Ok((r, Some(Error::Rejected(format!("play {slot}: {why}")))))
            };
            if !ctx.cfg.play {
                return refuse(session, "NetStream.Play.Failed", "play is disabled".into());
            }
            let own = ctx.cfg.play_tokens.get(&slot);
            let accepted = [ctx.cfg.access.token.as_deref(), own.as_deref()];
            {
                let given = play_token(&stream_key);
                if !framecache_media::credential::admits(given, &accepted) {
                    return refuse(
                        session,
                        "NetStream.Play.Failed",
                        "a valid viewer token is required (rtmp://HOST/APP/STREAM?token=TOKEN)"
                            .into(),
                    );
                }
            }
            let protocol = if ctx.cfg.tls.is_some() {
                "rtmps"
            } else {
                "rtmp"
            };
            let seat = match ctx
                .plays
                .take(&ctx.cfg.access, &slot, protocol, &peer.to_string())
            {
                Ok(s) => s,
                Err(why) => return refuse(session, "NetStream.Play.Failed", why.into()),
            };
            let opened = open_play(&slot, ctx.cfg.push.root.as_deref());
            match opened {
                Ok(reader) => {
                    let tx = play_tx.clone();
                    std::thread::Builder::new()
                        .name("rtmp-play".into())
                        // The place is taken while the play runs.
                        .spawn(move || play_thread(reader, tx, &seat))
                        .map_err(Error::Io)?;
                    *play_stream = Some(stream_id);
                    log::info!("rtmp: {peer} plays slot {slot}");
                    let mut r = session.accept_request(request_id).map_err(proto)?;
                    // Keep the status commands; drop rml_rtmp's two script data messages
                    // (`|RtmpSampleAccess`, a Flash permission, and `onStatus` NetStream.Data.Start):
                    // stamped with the session clock, ffmpeg shows them as a subtitle and a data
                    // stream. They are the packets on chunk stream 3 (see the data serializer).
                    r.retain(|x| {
                        !matches!(x, ServerSessionResult::OutboundResponse(p)
                            if p.bytes.first().is_some_and(|b| b & 0x3f == 3))
                    });
                    Ok((r, None))
                }
                Err(e) => refuse(session, "NetStream.Play.StreamNotFound", e.to_string()),
            }
        }
        _ => Ok((Vec::new(), None)),
    }
}

fn media(publish: &mut Option<Publish>, video: bool, data: &[u8], ts: u32) -> Result<Outcome> {
    if let Some(p) = publish.as_mut() {
        p.tag(video, data, ts)?;
    }
    Ok((Vec::new(), None))
}

fn open_play(slot: &str, root: Option<&std::path::Path>) -> Result<PacketReader> {
    let cfg = PacketReaderConfig {
        start: PacketStart::Keyframe,
    };
    match root {
        Some(r) => PacketReader::open_in(r, slot, cfg),
        None => PacketReader::open(slot, cfg),
    }
}

/// Stream properties → the body of `onMetaData`.
fn metadata(streams: &[StreamInfo], video: Option<u32>, audio: Option<u32>) -> Vec<u8> {
    use flv::MetaValue::{Bool, Number, Str};
    let mut p: Vec<(&str, flv::MetaValue)> = Vec::new();
    if let Some(v) = video.map(|i| &streams[i as usize]) {
        p.push(("videocodecid", Number(7.0)));
        if v.width > 0 {
            p.push(("width", Number(v.width as f64)));
            p.push(("height", Number(v.height as f64)));
        }
        if v.fps.0 > 0 && v.fps.1 > 0 {
            p.push(("framerate", Number(v.fps.0 as f64 / v.fps.1 as f64)));
        }
    }
    if let Some(a) = audio.map(|i| &streams[i as usize]) {
        p.push((
            "audiocodecid",
            Number(if a.codec == FC_CODEC_AAC { 10.0 } else { 2.0 }),
        ));
        if a.sample_rate > 0 {
            p.push(("audiosamplerate", Number(a.sample_rate as f64)));
        }
        if a.channels > 0 {
            p.push(("audiochannels", Number(a.channels as f64)));
            p.push(("stereo", Bool(a.channels > 1)));
        }
    }
    p.push((
        "encoder",
        Str(format!("framecache {}", env!("CARGO_PKG_VERSION"))),
    ));
    flv::on_metadata(&p)
}

/// Reads a packet slot and hands FLV tag bodies to the connection: metadata, then per stream
/// its sequence header before its first packet (and again when the parameters change), then
/// the packets, timestamps in ms from the first packet. The first video stream (H.264) and the
/// first AAC or MP3 stream are played.
fn play_thread(r: PacketReader, tx: mpsc::Sender<PlayMsg>, seat: &PlaySeat) {
    let streams = r.streams();
    let video = streams
        .iter()
        .find(|s| s.codec == FC_CODEC_H264)
        .map(|s| s.index);
    let audio = streams
        .iter()
        .find(|s| matches!(s.codec, FC_CODEC_AAC | FC_CODEC_MP3))
        .map(|s| s.index);
    if video.is_none() && audio.is_none() {
        let _ = tx.blocking_send(PlayMsg::End(
            "the slot has no H.264, AAC or MP3 stream to play over RTMP".into(),
        ));
        return;
    }
    if tx
        .blocking_send(PlayMsg::Meta(metadata(&streams, video, audio)))
        .is_err()
    {
        return;
    }
    let mut r = Follower::new(r);
    // Whether the sequence header of each stream went out: nothing decodes before it.
    let mut sent = vec![false; streams.len()];
    let mut pending: Vec<Option<Vec<u8>>> = vec![None; streams.len()];
    let mut last_ts = vec![0u32; streams.len()];
    let mut base: Option<i64> = None;
    let mut video_start: Option<i64> = None;
    let mut buf = Vec::new();
    loop {
        if seat.kicked() {
            let _ = tx.blocking_send(PlayMsg::End("the operator ended this play".into()));
            return;
        }
        let f = match r.next(&mut buf, Duration::from_millis(500)) {
            Ok(f) => {
                seat.sent(f.info.size as usize);
                f
            }
            Err(Error::Timeout) => {
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            Err(e) => {
                let _ = tx.blocking_send(PlayMsg::End(e.to_string()));
                return;
            }
        };
        let info = f.info;
        let si = info.stream as usize;
        if Some(info.stream) != video && Some(info.stream) != audio {
            continue;
        }
        let s = &streams[si];
        let ms = |t: i64| rescale(t, s.timebase, 1000);
        let t = if info.dts != FC_NOPTS {
            info.dts
        } else {
            info.pts
        };
        if t == FC_NOPTS {
            continue;
        }
        let dts_ms = ms(t);
        let b = *base.get_or_insert(dts_ms);
        // Timestamps rise from 0 in each stream: a packet from before the start (audio older
        // than the keyframe play began at) is left out, its parameters kept for the next one.
        let params = f.params.or_else(|| pending[si].take());
        let is_video = Some(info.stream) == video;
        // Audio starts with the first video frame's presentation time: players take the
        // earliest timestamp as the start, and video that starts on it keeps its frame grid
        // (with audio ahead, ffmpeg rounds some millisecond timestamps onto the same frame).
        let before_video = !is_video
            && video.is_some()
            && video_start.is_none_or(|v| info.pts == FC_NOPTS || ms(info.pts) < v);
        if dts_ms < b || ((dts_ms - b) as u32) < last_ts[si] || before_video {
            pending[si] = params;
            continue;
        }
        let ts = (dts_ms - b) as u32;
        last_ts[si] = ts;
        let data = &buf[..info.size as usize];
        let mut msgs = Vec::with_capacity(2);
        if let (true, Some(p)) = (s.codec != FC_CODEC_MP3, &params) {
            let seq = if is_video {
                flv::avc_sequence_header(p)
            } else {
                Some(flv::aac_sequence_header(p))
            };
            if let Some(seq) = seq {
                msgs.push((Bytes::from(seq), ts));
                sent[si] = true;
            }
        }
        if s.codec != FC_CODEC_MP3 && !sent[si] {
            continue; // nothing decodable without the sequence header
        }
        let body = if is_video {
            let cts = if info.pts != FC_NOPTS && info.dts != FC_NOPTS {
                ms(info.pts) - ms(info.dts)
            } else {
                0
            };
            flv::avc_frame(data, info.flags & FC_PACKET_KEYFRAME != 0, cts as i32)
        } else if s.codec == FC_CODEC_AAC {
            flv::aac_frame(data)
        } else {
            flv::mp3_frame(data)
        };
        if is_video && video_start.is_none() {
            video_start = Some(if info.pts != FC_NOPTS {
                ms(info.pts)
            } else {
                dts_ms
            });
        }
        msgs.push((Bytes::from(body), ts));
        for (b, ts) in msgs {
            let m = if is_video {
                PlayMsg::Video(b, ts)
            } else {
                PlayMsg::Audio(b, ts)
            };
            if tx.blocking_send(m).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_viewer_token_is_read_from_the_play_name() {
        use super::token_ok;
        assert!(token_ok("cam1?token=s3cret", "s3cret"));
        assert!(token_ok("cam1?x=1&token=s3cret", "s3cret"));
        assert!(!token_ok("cam1", "s3cret"));
        assert!(!token_ok("cam1?token=", "s3cret"));
        assert!(!token_ok("cam1?token=s3cre", "s3cret"));
        assert!(!token_ok("cam1?token=s3cretX", "s3cret"));
        assert!(!token_ok("cam1?mytoken=s3cret", "s3cret"));
    }
}

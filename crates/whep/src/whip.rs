//! WHIP ingest (RFC 9725): publishers over WebRTC (OBS 30+, browsers) into packet slots.
//!
//! `POST /whip/KEY` with an SDP offer admits the publisher through the host's
//! [`PushGate`](framecache_media::PushGate) (the ingest engine's key registry: unknown key 404,
//! wrong credential 401, key in use 409), answers with a receive-only peer connection and feeds
//! the key's slot: H.264 (packetization-mode 1) as Annex-B access units with their parameter
//! sets, Opus as one packet per unit with an `OpusHead`. An offer without such H.264 is refused
//! with 406 naming what it offered.
//!
//! The media side is sans-IO in [`framecache_media::rtp`]; here are the admission, the
//! receive-only peer connection and the publisher's task, which asks for a keyframe at the
//! start, after a loss and every [`KEYFRAME_INTERVAL`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use framecache_media::{PushRefusal, PushRequest, PushSink};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch, Notify};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::runtime::TokioRuntime;

use super::{lock, Inner, Viewer, WhepAnswer, WhepError};
use framecache_media::rtp::{Depack, RtpIn, Want, OPUS_CLOCK, VIDEO_CLOCK};
use framecache_shm::slot::random_u64;
use std::time::{Duration, Instant};

/// How often the publisher is asked for a keyframe (WebRTC encoders send one only when asked):
/// late readers of the slot start within this.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// A connected publisher that sends no packet for this long is dropped.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(10);

/// A publisher in the engine's index.
pub(crate) struct Publisher {
    pub(crate) key: String,
    pub(crate) peer: Viewer,
}

enum Incoming {
    Track(RtpCodecKind, Arc<dyn TrackRemote>),
    Rtp(RtpCodecKind, rtc::rtp::Packet),
}

/// A viewer's handler (gathering and connection state), and the tracks a publisher sends.
struct PubHandler {
    base: super::Handler,
    tx: mpsc::Sender<Incoming>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PubHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.base.on_ice_gathering_state_change(state).await
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.base.on_connection_state_change(state).await
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let kind = track.kind().await;
        let _ = self.tx.send(Incoming::Track(kind, track.clone())).await;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = ev {
                    // A full queue (the writer is behind) loses the packet: the depacketiser
                    // sees the gap and waits for a keyframe.
                    match tx.try_send(Incoming::Rtp(kind, p)) {
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                        _ => continue,
                    }
                }
            }
        });
    }
}

/// The codec names of an offer's sections, for a 406 body.
fn offered(codecs: &[super::sdp::OfferedCodec]) -> String {
    let mut names: Vec<String> = Vec::new();
    for c in codecs {
        let n = c.name.to_ascii_uppercase();
        if !n.is_empty()
            && !["RTX", "RED", "ULPFEC", "FLEXFEC-03"].contains(&n.as_str())
            && !names.contains(&n)
        {
            names.push(n);
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Handles `POST /whip/{key}`.
pub(crate) async fn publish(
    inner: Arc<Inner>,
    key: String,
    credential: Option<String>,
    ct: Option<String>,
    body: Vec<u8>,
    peer: Option<std::net::SocketAddr>,
) -> Result<WhepAnswer, WhepError> {
    let gate = inner
        .push_gate
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| WhepError::NotFound("this server takes no WHIP publishers".into()))?;
    if !super::content_type_is(ct.as_deref(), "application/sdp") {
        return Err(WhepError::UnsupportedMediaType(format!(
            "Content-Type must be application/sdp, not {}",
            ct.as_deref().unwrap_or("(none)")
        )));
    }
    let sdp = std::str::from_utf8(&body)
        .map_err(|_| WhepError::BadRequest("the offer is not UTF-8".into()))?
        .to_string();
    if sdp.trim().is_empty() {
        return Err(WhepError::BadRequest("the offer is empty".into()));
    }
    let parsed = super::sdp::parse_publish_offer(&sdp).map_err(WhepError::BadRequest)?;
    let h264 = super::sdp::choose_h264(&parsed, None).ok_or_else(|| {
        WhepError::NotAcceptable(format!(
            "WHIP here takes H.264 (packetization-mode=1) video; the offer's video has: {}",
            offered(&parsed.video)
        ))
    })?;
    let opus = super::sdp::choose_opus(&parsed);
    if lock(&inner.state).closed {
        return Err(WhepError::Internal("the engine is shutting down".into()));
    }
    let resource = inner.new_id();
    // The gate creates the slot (file system work): off the async threads.
    let sink = {
        let key = key.clone();
        // The publisher's address names its input; the resource id where it is not known.
        let who = peer.map_or_else(|| resource.clone(), |p| p.to_string());
        tokio::task::spawn_blocking(move || {
            gate(&PushRequest {
                key: &key,
                credential: credential.as_deref(),
                peer: &who,
                protocol: "whip",
            })
        })
        .await
        .map_err(|e| WhepError::Internal(e.to_string()))?
    }
    .map_err(|r| match r {
        PushRefusal::UnknownKey(_) => WhepError::NotFound(r.to_string()),
        PushRefusal::Credential(_) => WhepError::Unauthorized,
        PushRefusal::Busy { .. } => WhepError::Conflict(r.to_string()),
        PushRefusal::Failed(m) => WhepError::Internal(m),
    })?;
    match build(&inner, &h264, opus.as_ref(), &sdp).await {
        Ok((pc, answer_sdp, rx, state_rx, gather_rx)) => {
            let etag = format!("\"{:016x}\"", random_u64());
            let cancel = Arc::new(Notify::new());
            let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
            lock(&inner.state).publishers.insert(
                resource.clone(),
                Publisher {
                    key: key.clone(),
                    peer: Viewer {
                        etag: etag.clone(),
                        pc: pc.clone(),
                        cancel: cancel.clone(),
                        remote_sdp: sdp,
                        gather_rx,
                        since: std::time::SystemTime::now(),
                        bytes: bytes.clone(),
                        peer,
                    },
                },
            );
            inner.tasks.fetch_add(1, Ordering::SeqCst);
            log::info!("WHIP publisher {resource} publishes to key {key}");
            tokio::spawn(run(
                inner.clone(),
                resource.clone(),
                pc,
                sink,
                opus.is_some(),
                rx,
                state_rx,
                cancel,
                bytes,
            ));
            Ok(WhepAnswer {
                sdp: answer_sdp,
                resource,
                etag,
            })
        }
        Err(e) => {
            sink.finish(format!("offer failed: {e}"));
            Err(e)
        }
    }
}

type Built = (
    Arc<dyn PeerConnection>,
    String,
    mpsc::Receiver<Incoming>,
    watch::Receiver<RTCPeerConnectionState>,
    watch::Receiver<bool>,
);

/// The receive-only peer connection for an offer, answered once ICE gathering completed.
async fn build(
    inner: &Arc<Inner>,
    h264: &super::sdp::OfferedCodec,
    opus: Option<&super::sdp::OfferedCodec>,
    sdp: &str,
) -> Result<Built, WhepError> {
    let fb = |t: &str, p: &str| RTCPFeedback {
        typ: t.into(),
        parameter: p.into(),
    };
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: VIDEO_CLOCK,
                channels: 0,
                sdp_fmtp_line: h264.fmtp.clone(),
                rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
            },
            payload_type: h264.pt,
        },
        RtpCodecKind::Video,
    )
    .map_err(|e| WhepError::Internal(format!("register H.264: {e}")))?;
    if let Some(o) = opus {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: OPUS_CLOCK,
                    channels: 2,
                    sdp_fmtp_line: o.fmtp.clone(),
                    rtcp_feedback: vec![],
                },
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
    let (tx, rx) = mpsc::channel(4096);
    let handler = Arc::new(PubHandler {
        base: super::Handler {
            state_tx,
            gather_tx,
        },
        tx,
    });
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(super::setting_engine())
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec![std::net::SocketAddr::new(inner.cfg.ice_ip, 0)])
        .build()
        .await
        .map_err(|e| WhepError::Internal(format!("peer connection: {e}")))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    inner.pcs.fetch_add(1, Ordering::SeqCst);
    let result = async {
        let recv = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            })
        };
        pc.add_transceiver_from_kind(RtpCodecKind::Video, recv())
            .await
            .map_err(|e| WhepError::Internal(format!("video transceiver: {e}")))?;
        if opus.is_some() {
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, recv())
                .await
                .map_err(|e| WhepError::Internal(format!("audio transceiver: {e}")))?;
        }
        super::answer_offer(inner, &pc, sdp, &gather_rx).await
    }
    .await;
    match result {
        Ok(answer) => Ok((pc, answer, rx, state_rx, gather_rx)),
        Err(e) => {
            let pcs = inner.pcs.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
                pcs.fetch_sub(1, Ordering::SeqCst);
            });
            Err(e)
        }
    }
}

fn rtp_in(p: rtc::rtp::Packet) -> RtpIn {
    RtpIn {
        seq: p.header.sequence_number,
        ts: p.header.timestamp,
        marker: p.header.marker,
        payload: p.payload.to_vec(),
    }
}

/// The publisher's task: media into the sink until it is deleted, its connection fails or its
/// media stop; then the key is free again.
#[allow(clippy::too_many_arguments)]
async fn run(
    inner: Arc<Inner>,
    resource: String,
    pc: Arc<dyn PeerConnection>,
    mut sink: Box<dyn PushSink>,
    audio: bool,
    mut rx: mpsc::Receiver<Incoming>,
    mut state_rx: watch::Receiver<RTCPeerConnectionState>,
    cancel: Arc<Notify>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
) {
    use RTCPeerConnectionState as S;
    let mut out = Vec::new();
    let mut d = Depack::new(audio, &mut out);
    let mut video: Option<(Arc<dyn TrackRemote>, u32)> = None;
    let started = Instant::now();
    let mut connected = false;
    let mut disconnected_since: Option<Instant> = None;
    let mut last_media = Instant::now();
    let mut last_pli: Option<Instant> = None;
    let mut want = Want { keyframe: true };
    let (mut video_ssrc, mut audio_ssrc): (Option<u32>, Option<u32>) = (None, None);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let reason: String = 'run: loop {
        for m in out.drain(..) {
            if let Err(e) = sink.push(m) {
                break 'run format!("the slot refused media: {e}");
            }
        }
        let now = Instant::now();
        // A keyframe when one is needed (at most every 250 ms) and every KEYFRAME_INTERVAL.
        if let Some((track, ssrc)) = &video {
            let due = match last_pli {
                None => true,
                Some(t) if want.keyframe => now - t >= Duration::from_millis(250),
                Some(t) => now - t >= KEYFRAME_INTERVAL,
            };
            if due {
                last_pli = Some(now);
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: *ssrc,
                };
                let _ = track.write_rtcp(vec![Box::new(pli)]).await;
            }
        }
        tokio::select! {
            _ = cancel.notified() => break "deleted".to_string(),
            r = state_rx.changed() => {
                if r.is_err() {
                    break "connection gone".into();
                }
                match *state_rx.borrow_and_update() {
                    S::Connected => {
                        connected = true;
                        disconnected_since = None;
                        last_media = Instant::now();
                    }
                    S::Disconnected => {
                        disconnected_since.get_or_insert_with(Instant::now);
                    }
                    S::Failed => break "ICE/DTLS failed".into(),
                    S::Closed => break "connection closed".into(),
                    _ => {}
                }
            }
            m = rx.recv() => match m {
                None => break "connection gone".into(),
                Some(Incoming::Track(kind, t)) => {
                    if kind == RtpCodecKind::Video {
                        let ssrc = t.ssrcs().await.first().copied().unwrap_or(0);
                        video = Some((t, ssrc));
                        last_pli = None;
                    }
                }
                Some(Incoming::Rtp(kind, p)) => {
                    let now = Instant::now();
                    last_media = now;
                    bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    // One stream per kind: the first SSRC seen (other simulcast layers are
                    // left out; mixing them would corrupt the sequence).
                    let first = match kind {
                        RtpCodecKind::Video => &mut video_ssrc,
                        _ => &mut audio_ssrc,
                    };
                    if *first.get_or_insert(p.header.ssrc) != p.header.ssrc {
                        continue;
                    }
                    match kind {
                        RtpCodecKind::Video => {
                            if let Some((_, ssrc)) = video.as_mut() {
                                *ssrc = p.header.ssrc;
                            }
                            want = d.push_video(now, rtp_in(p), &mut out);
                        }
                        RtpCodecKind::Audio => d.push_audio(now, rtp_in(p), &mut out),
                        _ => {}
                    }
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                want = d.poll(now, &mut out);
                if !connected && now - started >= inner.cfg.connect_timeout {
                    break "connect timeout".into();
                }
                if disconnected_since.is_some_and(|t| now - t >= inner.cfg.disconnect_timeout) {
                    break "disconnected".into();
                }
                if connected && now - last_media >= MEDIA_TIMEOUT {
                    break "no media".into();
                }
            }
        }
    };
    log::info!("WHIP publisher {resource} ended: {reason}");
    sink.finish(reason);
    lock(&inner.state).publishers.remove(&resource);
    let _ = pc.close().await;
    drop(pc);
    inner.pcs.fetch_sub(1, Ordering::SeqCst);
    inner.tasks.fetch_sub(1, Ordering::SeqCst);
}

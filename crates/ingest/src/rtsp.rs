//! RTSP pull (`rtsp://[user:pass@]host[:port]/path[?transport=tcp|udp]`) through
//! [retina](https://crates.io/crates/retina), the RTSP client of a production NVR whose
//! changelog is a record of camera quirks.
//!
//! retina owns the session (DESCRIBE/SETUP/PLAY, Basic and Digest auth, keepalives at the
//! timeout the camera gives, TCP-interleaved or UDP transport, RTCP) and the RTP
//! depacketisation. This file owns the rest: the URL (credentials taken out of it, so they
//! are never in a log line or an error), the choice of streams, and the mapping of retina's
//! frames to [`Media`] ([`RtspMapper`], sans-IO). A failed session ends the input with an
//! error; the pull worker reconnects with backoff and the sink flags the gap with
//! `FC_PACKET_DISCONTINUITY`.
//!
//! Taken: H.264 and H.265 video (Annex-B, parameter sets in-band on keyframes), AAC audio
//! (raw, AudioSpecificConfig as its parameters) and Opus audio (one packet per frame, an
//! `OpusHead` as its parameters; the depacketizer is framecache's addition to its vendored
//! retina, `third_party/retina`). Other streams are left out with a log line naming them; a
//! presentation with none of these is refused with the codecs it offered.

use std::time::{Duration, Instant};

use framecache_media::{Media, Track};
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::*;
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, SessionGroup, SessionOptions, SetupOptions,
    TeardownPolicy, Transport,
};
use retina::codec::{
    CodecItem, FrameFormat, ParameterSetInsertion, ParametersRef, VideoParametersCodec,
};

use crate::input::{InputTimeouts, MediaOut, StopFlag};
use crate::url::{percent_decode, redact, Url};

/// A password (or any secret) that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// RTP transport of an RTSP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection (the default: passes NAT and firewalls, no loss).
    Tcp,
    /// RTP/RTCP over UDP ports (`?transport=udp`).
    Udp,
}

/// An `rtsp://` or `rtsps://` input URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// The URL without credentials and without framecache's own query parameters: what is
    /// sent to the camera, logged and shown.
    pub url: String,
    /// `rtsps://`: RTSP over TLS (port 322 by default; media interleaved in the TLS
    /// connection; the certificate is checked against the system store or `$SSL_CERT_FILE`).
    pub tls: bool,
    /// User name, percent-decoded.
    pub user: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<Secret>,
    /// Transport.
    pub transport: RtspTransport,
}

impl RtspUrl {
    /// Parses `rtsp[s]://[user[:pass]@]host[:port][/path][?query]`. `transport=tcp|udp` is
    /// framecache's; every other query parameter stays in the URL (cameras use them).
    pub fn parse(text: &str) -> Result<RtspUrl> {
        let u = Url::parse(text)?;
        let redacted = redact(text);
        let bad = |why: &str| Error::BadUrl(format!("{redacted}: {why}"));
        let tls = match u.scheme {
            "rtsp" => false,
            "rtsps" => true,
            _ => return Err(bad("not an rtsp:// URL")),
        };
        let (authority, path) = match u.rest.find('/') {
            Some(i) => (&u.rest[..i], &u.rest[i..]),
            None => (u.rest, "/"),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((ui, hp)) => (Some(ui), hp),
            None => (None, authority),
        };
        if hostport.is_empty() || hostport.starts_with(':') {
            return Err(bad("no host"));
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (user, pass) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                (
                    Some(percent_decode(user)),
                    pass.map(|p| Secret(percent_decode(p))),
                )
            }
        };
        let transport = match u.get("transport") {
            None | Some("tcp") => RtspTransport::Tcp,
            Some("udp") if tls => {
                return Err(bad(
                    "rtsps:// carries the media inside its TLS connection: transport=udp \
                     cannot be used with it",
                ))
            }
            Some("udp") => RtspTransport::Udp,
            Some(t) => return Err(bad(&format!("transport={t}: use tcp or udp"))),
        };
        // The query as given, less `transport`.
        let query: Vec<&str> = text
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("transport"))
            .collect();
        let mut url = format!("{}://{hostport}{path}", u.scheme);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url::Url::parse(&url).map_err(|e| bad(&e.to_string()))?;
        Ok(RtspUrl {
            url,
            tls,
            user,
            password,
            transport,
        })
    }
}

/// A stream of the presentation that framecache takes, and its track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// Index in the presentation (retina's stream id).
    pub stream: usize,
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// RTP clock rate, the track's timebase denominator.
    pub clock_rate: u32,
}

/// Picks the first H.264/H.265 video and the first AAC or Opus audio of a presentation given as
/// (media, encoding name, clock rate) per stream. Returns the choice and a description of
/// every stream left out (for the log, or for the error when nothing is taken).
pub fn choose_streams(streams: &[(&str, &str, u32)]) -> (Vec<Chosen>, Vec<String>) {
    let mut chosen: Vec<Chosen> = Vec::new();
    let mut left = Vec::new();
    for (i, &(media, enc, rate)) in streams.iter().enumerate() {
        let codec = match (media, enc.to_ascii_lowercase().as_str()) {
            ("video", "h264") => Some(FC_CODEC_H264),
            ("video", "h265") => Some(FC_CODEC_HEVC),
            ("audio", "mpeg4-generic") => Some(FC_CODEC_AAC),
            ("audio", "opus") => Some(FC_CODEC_OPUS),
            _ => None,
        };
        let is_video = |c: u32| c == FC_CODEC_H264 || c == FC_CODEC_HEVC;
        match codec {
            Some(c) if rate > 0 && !chosen.iter().any(|x| is_video(x.codec) == is_video(c)) => {
                chosen.push(Chosen {
                    stream: i,
                    codec: c,
                    clock_rate: rate,
                })
            }
            Some(_) => left.push(format!("{media}/{enc} (one {media} stream is taken)")),
            None => left.push(format!("{media}/{enc}")),
        }
    }
    (chosen, left)
}

/// Turns retina's frames into [`Media`] (sans-IO): tracks in the order chosen, codec
/// parameters whenever they are new, frames with their RTP timestamps (relative to the
/// session's start, in the stream's clock rate) and losses as discontinuities.
#[derive(Debug)]
pub struct RtspMapper {
    chosen: Vec<Chosen>,
    sent_params: Vec<Option<Vec<u8>>>,
}

impl RtspMapper {
    /// A mapper for `chosen`; `out` gets the tracks at once.
    pub fn new(chosen: Vec<Chosen>, out: MediaOut) -> Result<RtspMapper> {
        out(Media::Tracks(
            chosen
                .iter()
                .map(|c| Track {
                    codec: c.codec,
                    timebase: (1, c.clock_rate),
                })
                .collect(),
        ))?;
        Ok(RtspMapper {
            sent_params: vec![None; chosen.len()],
            chosen,
        })
    }

    /// The track of retina stream `stream`, if taken.
    pub fn track(&self, stream: usize) -> Option<usize> {
        self.chosen.iter().position(|c| c.stream == stream)
    }

    /// Codec parameters of `track` (Annex-B parameter sets, AudioSpecificConfig, OpusHead); sent on
    /// when they differ from the last ones sent.
    pub fn params(&mut self, track: usize, data: Vec<u8>, out: MediaOut) -> Result<()> {
        if data.is_empty() || self.sent_params.get(track) == Some(&Some(data.clone())) {
            return Ok(());
        }
        if let Some(s) = self.sent_params.get_mut(track) {
            *s = Some(data.clone());
            out(Media::Params { track, data })?;
        }
        Ok(())
    }

    /// One access unit of `track`. Video comes in decoding order without a decoding time of
    /// its own (RTP has none): cameras do not reorder, so DTS = PTS.
    pub fn frame(
        &mut self,
        track: usize,
        pts: i64,
        keyframe: bool,
        loss: bool,
        data: Vec<u8>,
        out: MediaOut,
    ) -> Result<()> {
        if data.is_empty() || track >= self.chosen.len() {
            return Ok(());
        }
        out(Media::Frame {
            track,
            pts,
            dts: pts,
            keyframe,
            discontinuity: loss,
            data,
        })
    }
}

/// Annex-B parameter sets of a video stream's parameters (retina's raw NAL units).
fn video_params(p: &VideoParametersCodec) -> Vec<u8> {
    let nals: Vec<&[u8]> = match p {
        VideoParametersCodec::H264 { sps, pps } => vec![sps, pps],
        VideoParametersCodec::H265 { vps, sps, pps } => vec![vps, sps, pps],
        _ => vec![],
    };
    let mut out = Vec::new();
    for n in nals.into_iter().filter(|n| !n.is_empty()) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}

fn params_of(p: Option<ParametersRef<'_>>) -> Vec<u8> {
    match p {
        Some(ParametersRef::Video(v)) => video_params(v.codec_params()),
        Some(ParametersRef::Audio(a)) => a.extra_data().to_vec(),
        _ => Vec::new(),
    }
}

/// How retina frames our packets: Annex-B with the parameter sets before every keyframe,
/// raw AAC (Opus is always one raw packet per frame).
const FORMAT: FrameFormat = FrameFormat {
    h26x_framing: retina::codec::h26x::Framing::AnnexB,
    parameter_set_insertion: ParameterSetInsertion::EachKeyFrame,
    aac_framing: retina::codec::aac::Framing::Raw,
};

fn rtsp_err(url: &str, what: &str, e: retina::Error) -> Error {
    let text = e.to_string();
    if text.contains("401") {
        Error::Rejected(format!(
            "{url}: {what}: the camera refused the credentials (401 Unauthorized)"
        ))
    } else {
        Error::Protocol(format!("{url}: {what}: {text}"))
    }
}

/// Runs an RTSP pull until it fails, ends or `stop` is set.
pub fn run(u: &RtspUrl, t: InputTimeouts, stop: &StopFlag, out: MediaOut) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::os("rtsp runtime", e))?;
    let group = std::sync::Arc::new(SessionGroup::default());
    // A camera's bytes reach parsers we do not own (retina, sdp-types); one of them asserting
    // on hostile input must end this session with an error, not the ingest's thread.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(session(u, t, stop, out, group.clone()))
    }));
    let r = match r {
        Ok(r) => r,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return Err(Error::Protocol(format!(
                "{}: the RTSP client failed on the server's answer ({why})",
                u.url
            )));
        }
    };
    // A UDP session is torn down in the background: give it a moment, never a hang.
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await;
    });
    r
}

/// `fut` unless `stop` is set first (checked every 100 ms) or `limit` passes.
async fn bounded<T>(
    stop: &StopFlag,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<std::result::Result<T, Error>> {
    let until = Instant::now() + limit;
    tokio::pin!(fut);
    loop {
        if stop.is_set() {
            return None;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Err(Error::Timeout));
        }
        match tokio::time::timeout(left.min(Duration::from_millis(100)), &mut fut).await {
            Ok(v) => return Some(Ok(v)),
            Err(_) => continue,
        }
    }
}

/// RTSPS: connects to the camera over TLS (checking its certificate), then relays one local
/// plain connection to it, so retina (plain RTSP only) runs the session through the TLS
/// connection. Returns the URL retina opens: the camera's path on the local relay.
async fn tls_relay(u: &url::Url, name: &str) -> Result<url::Url> {
    let host = u
        .host_str()
        .ok_or_else(|| Error::BadUrl(format!("{name}: no host")))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = u.port().unwrap_or(322);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Error::Protocol(format!("{name}: connect: {e}")))?;
    let server = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| Error::BadUrl(format!("{name}: bad host name for TLS")))?;
    let tls = tokio_rustls::TlsConnector::from(crate::http::tls_config()?)
        .connect(server, tcp)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(t) => Error::Protocol(format!("{name}: TLS: {t}")),
                None => Error::Protocol(format!("{name}: TLS: {e}")),
            },
        )?;
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = local.local_addr()?.port();
    tokio::spawn(async move {
        // One connection: retina's. Anyone else on the machine who races it gets only the
        // camera's answers to its own requests, with no credentials of ours.
        if let Ok((mut plain, _)) = local.accept().await {
            let mut tls = tls;
            let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
        }
    });
    let mut relay = url::Url::parse(&format!("rtsp://127.0.0.1:{port}/"))
        .map_err(|e| Error::BadUrl(e.to_string()))?;
    relay.set_path(u.path());
    relay.set_query(u.query());
    Ok(relay)
}

async fn session(
    u: &RtspUrl,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut<'_>,
    group: std::sync::Arc<SessionGroup>,
) -> Result<()> {
    let mut url = url::Url::parse(&u.url).map_err(|e| Error::BadUrl(format!("{}: {e}", u.url)))?;
    if u.tls {
        url = match bounded(stop, t.connect, tls_relay(&url, &u.url)).await {
            None => return Ok(()),
            Some(Err(e)) | Some(Ok(Err(e))) => return Err(e),
            Some(Ok(Ok(relay))) => relay,
        };
    }
    let creds = u.user.as_ref().map(|user| Credentials {
        username: user.clone(),
        password: u.password.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
    });
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("framecache/{}", env!("CARGO_PKG_VERSION")))
        .session_group(group)
        .teardown(TeardownPolicy::Auto);
    let name = u.url.as_str();
    macro_rules! step {
        ($what:expr, $fut:expr) => {
            match bounded(stop, t.connect, $fut).await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(Err(e))) => return Err(rtsp_err(name, $what, e)),
                Some(Ok(Ok(v))) => v,
            }
        };
    }
    let mut described = step!("DESCRIBE", retina::client::Session::describe(url, opts));
    let offered: Vec<(String, String, u32)> = described
        .streams()
        .iter()
        .map(|s| {
            (
                s.media().to_string(),
                s.encoding_name().to_string(),
                s.clock_rate_hz(),
            )
        })
        .collect();
    let view: Vec<(&str, &str, u32)> = offered
        .iter()
        .map(|(m, e, r)| (m.as_str(), e.as_str(), *r))
        .collect();
    let (chosen, left) = choose_streams(&view);
    if chosen.is_empty() {
        return Err(Error::UnsupportedFormat(format!(
            "{name}: no stream framecache can take (H.264, H.265, AAC, Opus); offered: {}",
            if left.is_empty() {
                "none".to_string()
            } else {
                left.join(", ")
            }
        )));
    }
    if !left.is_empty() {
        log::info!("rtsp {name}: leaving out {}", left.join(", "));
    }
    let transport = match u.transport {
        RtspTransport::Tcp => Transport::Tcp(Default::default()),
        RtspTransport::Udp => Transport::Udp(Default::default()),
    };
    for c in &chosen {
        let setup = SetupOptions::default()
            .transport(transport.clone())
            .frame_format(FORMAT);
        step!("SETUP", described.setup(c.stream, setup));
    }
    let mut mapper = RtspMapper::new(chosen.clone(), out)?;
    for (track, c) in chosen.iter().enumerate() {
        let p = params_of(described.streams()[c.stream].parameters());
        mapper.params(track, p, out)?;
    }
    let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
    let playing = step!("PLAY", described.play(play));
    let mut demuxed = playing.demuxed().map_err(|e| rtsp_err(name, "PLAY", e))?;
    let mut first = true;
    loop {
        let limit = if first { t.connect } else { t.idle };
        let item = match bounded(stop, limit, demuxed.next()).await {
            None => return Ok(()),
            Some(Err(Error::Timeout)) => {
                return Err(Error::Protocol(format!(
                    "{name}: no media for {} ms",
                    limit.as_millis()
                )))
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(None)) => return Err(Error::Protocol(format!("{name}: session ended"))),
            Some(Ok(Some(Err(e)))) => return Err(rtsp_err(name, "reading", e)),
            Some(Ok(Some(Ok(item)))) => item,
        };
        match item {
            CodecItem::VideoFrame(f) => {
                let Some(track) = mapper.track(f.stream_id()) else {
                    continue;
                };
                if f.has_new_parameters() {
                    let p = params_of(demuxed.streams()[f.stream_id()].parameters());
                    mapper.params(track, p, out)?;
                }
                first = false;
                let ts = f.timestamp();
                let (key, loss) = (f.is_random_access_point(), f.loss() > 0);
                mapper.frame(track, ts.elapsed(), key, loss, f.into_data(), out)?;
            }
            CodecItem::AudioFrame(f) => {
                let Some(track) = mapper.track(f.stream_id()) else {
                    continue;
                };
                first = false;
                let pts = f.timestamp().elapsed();
                mapper.frame(track, pts, true, f.loss() > 0, f.data().to_vec(), out)?;
            }
            _ => {}
        }
    }
}

/// A fake camera for the fuzz target and the hostile-bytes tests: answers DESCRIBE with `sdp`,
/// SETUP with TCP-interleaved channels and PLAY with 200, then sends `media` (interleaved
/// frames, or anything) and hangs up. Serves up to `connections` connections that come within
/// `serve_for`, then the thread ends. Returns the thread and the port.
#[doc(hidden)]
pub fn fake_camera(
    sdp: Vec<u8>,
    media: Vec<u8>,
    connections: usize,
    serve_for: Duration,
) -> std::io::Result<(std::thread::JoinHandle<()>, u16)> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    l.set_nonblocking(true)?;
    let h = std::thread::spawn(move || {
        let until = Instant::now() + serve_for;
        let mut served = 0;
        while Instant::now() < until && served < connections {
            let mut c = match l.accept() {
                Ok((c, _)) => {
                    served += 1;
                    c
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            let _ = c.set_nonblocking(false);
            let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
            let mut req = Vec::new();
            let mut b = [0u8; 4096];
            'conn: while let Ok(n) = c.read(&mut b) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
                while let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_string();
                    req.drain(..end + 4);
                    let cseq = head
                        .lines()
                        .find_map(|l| l.strip_prefix("CSeq: "))
                        .unwrap_or("1")
                        .trim()
                        .to_string();
                    let method = head.split(' ').next().unwrap_or("");
                    let mut reply = match method {
                        "DESCRIBE" => format!(
                            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: \
                             rtsp://127.0.0.1:{port}/cam/\r\nContent-Type: application/sdp\r\n\
                             Content-Length: {}\r\n\r\n",
                            sdp.len()
                        )
                        .into_bytes(),
                        "SETUP" => {
                            // The channels the client asked for.
                            format!(
                                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678;timeout=60\r\n\
                                 Transport: {}\r\n\r\n",
                                head.lines()
                                    .find_map(|l| l.strip_prefix("Transport: "))
                                    .unwrap_or("RTP/AVP/TCP;unicast;interleaved=0-1")
                            )
                            .into_bytes()
                        }
                        "PLAY" => {
                            format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 12345678\r\n\r\n")
                                .into_bytes()
                        }
                        _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n").into_bytes(),
                    };
                    if method == "DESCRIBE" {
                        reply.extend_from_slice(&sdp);
                    }
                    if c.write_all(&reply).is_err() {
                        break 'conn;
                    }
                    if method == "PLAY" {
                        let _ = c.write_all(&media);
                        std::thread::sleep(Duration::from_millis(20));
                        break 'conn;
                    }
                }
            }
        }
    });
    Ok((h, port))
}

/// The fuzz entry point: one RTSP session against a [`fake_camera`] serving `sdp` and
/// `media`, through retina and [`RtspMapper`]. Returns how many media items it produced
/// (every frame refers to an announced track, or this panics) and how the session ended (the
/// fake camera hangs up, so always with an error); it must never panic otherwise or hang.
#[doc(hidden)]
pub fn fuzz_session(sdp: &[u8], media: &[u8]) -> (usize, Result<()>) {
    let (h, port) = match fake_camera(sdp.to_vec(), media.to_vec(), 1, Duration::from_secs(2)) {
        Ok(x) => x,
        Err(e) => return (0, Err(e.into())),
    };
    let u = RtspUrl::parse(&format!("rtsp://127.0.0.1:{port}/cam")).expect("a valid URL");
    let t = InputTimeouts {
        connect: Duration::from_millis(1000),
        idle: Duration::from_millis(300),
    };
    let mut tracks = 0usize;
    let mut n = 0usize;
    let r = run(&u, t, &StopFlag::default(), &mut |m: Media| {
        match &m {
            Media::Tracks(t) => tracks = t.len(),
            Media::AddTrack(_) => tracks += 1,
            Media::Params { track, .. } | Media::Frame { track, .. } => assert!(*track < tracks),
        }
        n += 1;
        Ok(())
    });
    let _ = h.join();
    (n, r)
}

/// A small valid session for the fuzzer and the tests to start from: an SDP with H.264 and
/// AAC, and interleaved RTP with a single-NAL IDR (SPS and PPS in a STAP-A first), a P frame
/// cut into FU-A fragments, and two AAC frames.
#[doc(hidden)]
pub fn sample_session() -> (Vec<u8>, Vec<u8>) {
    sample_session_with(false)
}

/// [`sample_session`] with Opus audio instead of AAC (`opus`): two 20 ms packets, an empty
/// payload (malformed, dropped as a loss) and a 10 ms one.
#[doc(hidden)]
pub fn sample_session_with(opus: bool) -> (Vec<u8>, Vec<u8>) {
    // SPS/PPS of a 64x64 constrained-baseline stream (x264).
    const SPS: &[u8] = &[
        0x67, 0x42, 0xC0, 0x0A, 0xD9, 0x0F, 0x88, 0x8C, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
        0x00, 0x00, 0x0F, 0x03, 0xC4, 0x89, 0x92,
    ];
    const PPS: &[u8] = &[0x68, 0xCB, 0x83, 0xCB, 0x20];
    let audio = if opus {
        "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\n\
        a=fmtp:97 sprop-stereo=1\r\na=control:trackID=1\r\n"
    } else {
        "m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
        a=fmtp:97 streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1190;sizelength=13;\
        indexlength=3;indexdeltalength=3\r\na=control:trackID=1\r\n"
    };
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fuzz\r\nt=0 0\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;profile-level-id=42c00a\r\na=control:trackID=0\r\n{audio}"
    )
    .into_bytes();
    let rtp = |ch: u8, pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]| {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&(0x1000_0000u32 + u32::from(ch)).to_be_bytes());
        p.extend_from_slice(payload);
        let mut f = vec![b'$', ch];
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        f.extend_from_slice(&p);
        f
    };
    let mut media = Vec::new();
    let mut stap = vec![0x78];
    for n in [SPS, PPS] {
        stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
        stap.extend_from_slice(n);
    }
    media.extend(rtp(0, 96, 1, 0, false, &stap));
    media.extend(rtp(
        0,
        96,
        2,
        0,
        true,
        &[0x65, 0x88, 0x84, 0x00, 0x33, 0xFF],
    ));
    media.extend(rtp(0, 96, 3, 3000, false, &[0x7C, 0x81, 0x9A, 0x02, 0x03]));
    media.extend(rtp(0, 96, 4, 3000, true, &[0x7C, 0x41, 0x04, 0x05]));
    if opus {
        // TOC 0xfc: CELT fullband 20 ms, one frame; 0xf4: CELT fullband 10 ms.
        let packets: [(u32, &[u8]); 4] = [
            (0, &[0xfc, 0xff, 0xfe]),
            (960, &[0xfc, 0x01, 0x02]),
            (1920, &[]),
            (2880, &[0xf4, 0x03]),
        ];
        for (i, (ts, p)) in packets.into_iter().enumerate() {
            media.extend(rtp(2, 97, 10 + i as u16, ts, true, p));
        }
        return (sdp, media);
    }
    for (i, ts) in [0u32, 1024].into_iter().enumerate() {
        // AU-headers-length 16 bits, one header: size 4 (13 bits), index 0 (3 bits).
        let au = [0x00, 0x10, 0x00, 0x20, 0x21, 0x10, 0x04, 0x60];
        media.extend(rtp(2, 97, 10 + i as u16, ts, true, &au));
    }
    (sdp, media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_transport() {
        let u = RtspUrl::parse(
            "rtsp://admin:p%40ss:w@cam.local:8554/Streaming/101?transport=udp&subtype=0",
        )
        .unwrap();
        assert_eq!(u.url, "rtsp://cam.local:8554/Streaming/101?subtype=0");
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password, Some(Secret("p@ss:w".into())));
        assert_eq!(u.transport, RtspTransport::Udp);
        assert!(
            !format!("{u:?}").contains("p@ss"),
            "Debug shows no password"
        );

        let u = RtspUrl::parse("rtsp://10.0.0.2").unwrap();
        assert_eq!(
            (u.url.as_str(), u.transport),
            ("rtsp://10.0.0.2/", RtspTransport::Tcp)
        );
        assert_eq!(u.user, None);

        for bad in ["rtsp://", "rtsp://u:p@/x", "rtsp://h/x?transport=http"] {
            assert!(
                matches!(RtspUrl::parse(bad), Err(Error::BadUrl(_))),
                "{bad}"
            );
        }
        let u = RtspUrl::parse("rtsps://u:secret@cam.example/x").unwrap();
        assert_eq!((u.url.as_str(), u.tls), ("rtsps://cam.example/x", true));
        let e = RtspUrl::parse("rtsps://u:secret@h/x?transport=udp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("TLS") && !e.contains("secret"), "{e}");
        let e = RtspUrl::parse("rtsp://u:secret@h/x?transport=quic")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn one_video_and_one_audio_are_taken() {
        let (c, left) = choose_streams(&[
            ("application", "vnd.onvif.metadata", 90000),
            ("video", "H264", 90000),
            ("video", "h265", 90000),
            ("audio", "PCMU", 8000),
            ("audio", "mpeg4-generic", 48000),
        ]);
        assert_eq!(
            c,
            vec![
                Chosen {
                    stream: 1,
                    codec: FC_CODEC_H264,
                    clock_rate: 90000
                },
                Chosen {
                    stream: 4,
                    codec: FC_CODEC_AAC,
                    clock_rate: 48000
                },
            ]
        );
        assert_eq!(left.len(), 3);
        assert!(left[0].contains("vnd.onvif.metadata") && left[2].contains("PCMU"));
        let (c, left) = choose_streams(&[("video", "JPEG", 90000), ("audio", "G726-32", 8000)]);
        assert!(c.is_empty());
        assert_eq!(left, vec!["video/JPEG", "audio/G726-32"]);
        let (c, _) = choose_streams(&[("audio", "opus", 48000), ("audio", "mpeg4-generic", 48000)]);
        assert_eq!(
            c,
            vec![Chosen {
                stream: 0,
                codec: FC_CODEC_OPUS,
                clock_rate: 48000
            }]
        );
    }

    /// Opus from a camera: an `OpusHead` as the track's parameters, one packet per frame at
    /// its RTP time, a malformed (empty) packet dropped and flagged on the next one.
    #[test]
    fn opus_audio_is_taken_with_its_opus_head() {
        let (sdp, media) = sample_session_with(true);
        let (h, port) = fake_camera(sdp, media, 1, Duration::from_secs(2)).unwrap();
        let u = RtspUrl::parse(&format!("rtsp://127.0.0.1:{port}/cam")).unwrap();
        let t = InputTimeouts {
            connect: Duration::from_millis(1000),
            idle: Duration::from_millis(300),
        };
        let mut got = Vec::new();
        let _ = run(&u, t, &StopFlag::default(), &mut |m: Media| {
            got.push(m);
            Ok(())
        });
        h.join().unwrap();
        let Some(Media::Tracks(tracks)) = got.first() else {
            panic!("{got:?}")
        };
        assert_eq!(tracks[1].codec, FC_CODEC_OPUS);
        assert_eq!(tracks[1].timebase, (1, 48000));
        let head = got.iter().find_map(|m| match m {
            Media::Params { track: 1, data } => Some(data.clone()),
            _ => None,
        });
        let head = head.expect("an OpusHead");
        assert_eq!((&head[..8], head[9], head.len()), (&b"OpusHead"[..], 2, 19));
        let frames: Vec<_> = got
            .iter()
            .filter_map(|m| match m {
                Media::Frame {
                    track: 1,
                    pts,
                    discontinuity,
                    data,
                    ..
                } => Some((*pts, *discontinuity, data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            frames,
            vec![
                (0, false, vec![0xfc, 0xff, 0xfe]),
                (960, false, vec![0xfc, 0x01, 0x02]),
                (2880, true, vec![0xf4, 0x03]),
            ]
        );
    }

    #[test]
    fn the_sample_session_plays_and_mutations_of_it_never_panic() {
        let (sdp, media) = sample_session();
        let (n, r) = fuzz_session(&sdp, &media);
        // Tracks, two parameter sets, the IDR, the P frame and the AAC frames.
        assert!(n >= 5, "{n} items, {r:?}");
        // A deterministic mutation fuzzer over both parts (cargo-fuzz: fuzz/rtsp_session).
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ended_with_error = 0;
        for i in 0..200 {
            let (mut s, mut m) = (sdp.clone(), media.clone());
            let target = if i % 3 == 0 { &mut s } else { &mut m };
            for _ in 0..1 + rnd() % 4 {
                let at = (rnd() as usize) % target.len();
                match rnd() % 3 {
                    0 => target[at] = rnd() as u8,
                    1 => target.truncate(at.max(1)),
                    _ => target.insert(at, rnd() as u8),
                }
            }
            let (n, r) = fuzz_session(&s, &m);
            if n == 0 && r.is_err() {
                ended_with_error += 1;
            }
        }
        assert!(
            ended_with_error > 0,
            "mutations never reached an error path"
        );
    }

    /// An SDP that makes retina 0.4.21 panic (`client/parse.rs:249`, an `m=` line without
    /// formats; found by the `rtsp_session` fuzz target): the session ends with an error and
    /// the thread lives on.
    #[test]
    fn an_sdp_that_panics_retina_is_an_error() {
        let (_, media) = sample_session();
        let (n, r) = fuzz_session(b"v=0\nm= 0 RTP/ ", &media);
        assert_eq!(n, 0);
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("the RTSP client failed on the server's answer"),
            "{e}"
        );
    }

    #[test]
    fn the_mapper_sends_tracks_new_params_and_frames() {
        let mut got = Vec::new();
        let mut out = |m: Media| {
            got.push(m);
            Ok(())
        };
        let chosen = vec![
            Chosen {
                stream: 2,
                codec: FC_CODEC_H264,
                clock_rate: 90000,
            },
            Chosen {
                stream: 0,
                codec: FC_CODEC_AAC,
                clock_rate: 44100,
            },
        ];
        let mut m = RtspMapper::new(chosen, &mut out).unwrap();
        assert_eq!(
            (m.track(2), m.track(0), m.track(1)),
            (Some(0), Some(1), None)
        );
        m.params(0, vec![0, 0, 0, 1, 0x67], &mut out).unwrap();
        m.params(0, vec![0, 0, 0, 1, 0x67], &mut out).unwrap(); // same: not sent again
        m.params(1, vec![], &mut out).unwrap(); // unknown yet: nothing
        m.frame(0, 3000, true, false, vec![0, 0, 0, 1, 0x65], &mut out)
            .unwrap();
        m.frame(1, 1024, true, true, vec![0x21], &mut out).unwrap();
        m.frame(1, 2048, true, false, vec![], &mut out).unwrap(); // empty: dropped
        m.frame(7, 0, true, false, vec![1], &mut out).unwrap(); // no such track
        assert_eq!(got.len(), 4);
        assert_eq!(
            got[0],
            Media::Tracks(vec![
                Track {
                    codec: FC_CODEC_H264,
                    timebase: (1, 90000)
                },
                Track {
                    codec: FC_CODEC_AAC,
                    timebase: (1, 44100)
                },
            ])
        );
        assert!(matches!(got[1], Media::Params { track: 0, .. }));
        assert!(matches!(
            got[2],
            Media::Frame {
                track: 0,
                pts: 3000,
                dts: 3000,
                keyframe: true,
                discontinuity: false,
                ..
            }
        ));
        assert!(matches!(
            got[3],
            Media::Frame {
                track: 1,
                discontinuity: true,
                ..
            }
        ));
    }
}

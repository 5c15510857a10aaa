//! Pull inputs: each reads one URL with blocking I/O on its own thread and hands [`Media`] to a
//! callback until the input fails, ends or is told to stop.
//!
//! `udp://` MPEG-TS (unicast, multicast), `srt://` caller, `rtmp://host/app/key` play,
//! `http://…m3u8` HLS (TS or fMP4 segments), `file://MOUNT/path` (`.ts`, `.flv` or MP4, paced at real time)
//! `copy://SLOT` and `rtsp://` (in [`crate::rtsp`]).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use framecache_media::flv::FlvToMedia;
use framecache_media::hls::parse_playlist;
pub use framecache_media::hls::{Playlist, Segment};
use framecache_media::mp4::Fmp4ToMedia;
pub use framecache_media::ts::TsToMedia;
use framecache_media::{Media, Track};
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::*;

use crate::http::{http_get, parse_http};
use crate::input::demux_datagrams;
pub use crate::input::{InputTimeouts, MediaOut, StopFlag};
use crate::url::Url;

/// An input URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputUrl {
    /// `udp://[SOURCE@]ADDR:PORT[?localaddr=IP]`: MPEG-TS datagrams; a multicast ADDR is joined.
    Udp {
        /// Group or local address and port to bind.
        addr: SocketAddr,
        /// Interface address for multicast.
        localaddr: Option<std::net::Ipv4Addr>,
    },
    /// `srt://HOST:PORT?streamid=...&passphrase=...&latency=MS`: SRT caller.
    SrtCaller {
        /// Remote address.
        addr: String,
        /// Stream id sent to the listener.
        streamid: Option<String>,
        /// Passphrase.
        passphrase: Option<String>,
        /// Latency in ms.
        latency_ms: Option<u32>,
    },
    /// `rtmp://HOST[:PORT]/APP/KEY` (or `rtmps://`, over TLS): RTMP play from a server.
    RtmpPull {
        /// host:port.
        addr: String,
        /// Application name.
        app: String,
        /// Stream key.
        key: String,
        /// `rtmps://`: TLS, the server's certificate checked as for `https://`.
        tls: bool,
    },
    /// `http://HOST[:PORT]/path.m3u8`: HLS.
    Hls {
        /// The playlist URL.
        url: String,
    },
    /// `file://MOUNT/relative/path`.
    File {
        /// Mount name.
        mount: String,
        /// Path below the mount.
        path: String,
    },
    /// `copy://SLOT`: relay another packet slot.
    Copy {
        /// Source slot.
        slot: String,
    },
    /// `rtsp://[user:pass@]HOST[:PORT]/path[?transport=udp]`: an RTSP camera or server.
    Rtsp(crate::rtsp::RtspUrl),
}

impl InputUrl {
    /// Parses a pull URL. Listener URLs (`rtmp://0.0.0.0:1935`, `srt://0.0.0.0:9000`,
    /// `publish://KEY`) are the engine's business and give [`Error::BadUrl`] here.
    pub fn parse(url: &str) -> Result<InputUrl> {
        let u = Url::parse(url)?;
        let bad = |why: &str| u.bad(why);
        let rest = u.rest;
        match u.scheme {
            "udp" => {
                let hostport = rest
                    .rsplit('@')
                    .next()
                    .unwrap_or(rest)
                    .trim_end_matches('/');
                let addr: SocketAddr = hostport
                    .to_socket_addrs()
                    .map_err(|e| bad(&e.to_string()))?
                    .next()
                    .ok_or_else(|| bad("no address"))?;
                let localaddr = match u.get("localaddr") {
                    Some(a) => Some(a.parse().map_err(|_| bad("bad localaddr"))?),
                    None => None,
                };
                Ok(InputUrl::Udp { addr, localaddr })
            }
            "srt" => {
                let addr = rest.trim_end_matches('/').to_string();
                if addr.is_empty() || !addr.contains(':') {
                    return Err(bad("srt needs HOST:PORT"));
                }
                let latency_ms = match u.get("latency") {
                    Some(l) => Some(l.parse().map_err(|_| bad("bad latency"))?),
                    None => None,
                };
                Ok(InputUrl::SrtCaller {
                    addr,
                    streamid: u.get("streamid").map(String::from),
                    passphrase: u.get("passphrase").map(String::from),
                    latency_ms,
                })
            }
            scheme @ ("rtmp" | "rtmps") => {
                let tls = scheme == "rtmps";
                let mut parts = rest.splitn(2, '/');
                let host = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("");
                let (app, key) = path.rsplit_once('/').ok_or_else(|| {
                    bad("an RTMP pull needs rtmp://HOST/APP/KEY (a listener is rtmp://ADDR:PORT)")
                })?;
                if host.is_empty() || app.is_empty() || key.is_empty() {
                    return Err(bad("empty host, app or key"));
                }
                let addr = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:{}", if tls { 443 } else { 1935 })
                };
                // The query goes with the stream name, as RTMP servers read it (a viewer
                // token: `rtmp://HOST/live/cam1?token=…`).
                let key = match u.text.split_once('?') {
                    Some((_, q)) if !q.is_empty() => format!("{key}?{q}"),
                    _ => key.to_string(),
                };
                Ok(InputUrl::RtmpPull {
                    addr,
                    app: app.to_string(),
                    key,
                    tls,
                })
            }
            "http" | "https" => Ok(InputUrl::Hls {
                url: url.to_string(),
            }),
            "file" => {
                let (mount, path) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("file URLs are file://MOUNT/relative/path"))?;
                if mount.is_empty() {
                    return Err(bad("absolute file paths are not allowed; use a mount"));
                }
                check_relative(path).map_err(bad)?;
                Ok(InputUrl::File {
                    mount: mount.to_string(),
                    path: path.to_string(),
                })
            }
            "rtsp" | "rtsps" => crate::rtsp::RtspUrl::parse(url).map(InputUrl::Rtsp),
            "copy" => {
                let slot = rest.trim_end_matches('/');
                framecache_shm::slot::validate_id(slot)?;
                Ok(InputUrl::Copy {
                    slot: slot.to_string(),
                })
            }
            _ => Err(bad("unknown scheme")),
        }
    }
}

fn check_relative(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::CurDir => {}
            _ => return Err("the path must stay inside its mount (no '..', no absolute path)"),
        }
    }
    Ok(())
}

/// Named directories that `file://` URLs may read from.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    inner: Arc<RwLock<HashMap<String, PathBuf>>>,
}

impl Mounts {
    /// No mounts.
    pub fn new() -> Mounts {
        Mounts::default()
    }

    /// Registers `name` → `dir` (which must exist).
    pub fn add(&self, name: &str, dir: &Path) -> Result<()> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidArg(format!("bad mount name {name:?}")));
        }
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::file(&dir.display().to_string(), e))?;
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), dir);
        Ok(())
    }

    /// Resolves `file://MOUNT/path`: the real path must stay inside the mount (symlinks
    /// included).
    pub fn resolve(&self, mount: &str, path: &str) -> Result<PathBuf> {
        check_relative(path).map_err(|w| Error::BadUrl(w.into()))?;
        let base = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(mount)
            .cloned()
            .ok_or_else(|| Error::BadUrl(format!("no mount named {mount:?}")))?;
        let full = base
            .join(path)
            .canonicalize()
            .map_err(|e| Error::file(&format!("file://{mount}/{path}"), e))?;
        if !full.starts_with(&base) {
            return Err(Error::BadUrl(format!(
                "file://{mount}/{path} leaves its mount"
            )));
        }
        Ok(full)
    }
}

/// Where inputs find what their URLs name: the VOD mounts of `file://` and the slot root of
/// `copy://` (the engine's root, never silently the default one).
#[derive(Debug, Clone)]
pub struct Locations {
    /// `file://MOUNT/...`.
    pub mounts: Mounts,
    /// `copy://SLOT`.
    pub root: PathBuf,
    /// Servers other than the playlist's that HLS entries may point to (a CDN layout).
    pub hls_hosts: Vec<String>,
}

/// Runs `url` until it fails, ends or `stop` is set. Returns why it ended.
pub fn run_input(
    url: &InputUrl,
    at: &Locations,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    match url {
        InputUrl::Udp { addr, localaddr } => run_udp(*addr, *localaddr, t, stop, out),
        InputUrl::File { mount, path } => {
            let p = at.mounts.resolve(mount, path)?;
            run_file(&p, stop, out)
        }
        InputUrl::Copy { slot } => run_copy(&at.root, slot, t, stop, out),
        InputUrl::Rtsp(u) => crate::rtsp::run(u, t, stop, out),
        InputUrl::Hls { url } => run_hls(url, &at.hls_hosts, t, stop, out),
        InputUrl::RtmpPull {
            addr,
            app,
            key,
            tls,
        } => run_rtmp(addr, app, key, *tls, t, stop, out),
        InputUrl::SrtCaller {
            addr,
            streamid,
            passphrase,
            latency_ms,
        } => crate::srt::run_caller(
            addr,
            streamid.as_deref(),
            passphrase.as_deref(),
            *latency_ms,
            t,
            stop,
            out,
        ),
    }
}

fn run_udp(
    addr: SocketAddr,
    localaddr: Option<std::net::Ipv4Addr>,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    let multicast = addr.ip().is_multicast();
    let bind: SocketAddr = if multicast {
        SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port())
    } else {
        addr
    };
    let sock = UdpSocket::bind(bind).map_err(|e| Error::os(&format!("udp bind {bind}"), e))?;
    if let (true, std::net::IpAddr::V4(group)) = (multicast, addr.ip()) {
        sock.join_multicast_v4(
            &group,
            &localaddr.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        )
        .map_err(|e| Error::os(&format!("join {group}"), e))?;
    }
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    demux_datagrams(65536, t, stop, out, |buf| timed_read(sock.recv(buf)))
}

/// Reads an MP4 file (progressive with sample tables, or fragmented) and hands out its media:
/// tracks and parameters, then every sample in decoding order across tracks, then the samples
/// of any fragments. Only the `moov` and one sample (or fragment) at a time are in memory.
/// `stop` is asked between samples. A file cut short gives the samples before the cut, then an
/// error.
fn read_mp4_file(path: &std::path::Path, stop: &dyn Fn() -> bool, out: MediaOut) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| Error::file(&name, e))?;
    let len = f.metadata()?.len();
    let read_at = |at: u64, n: u64| -> Result<Vec<u8>> {
        let mut b = vec![0; n as usize];
        f.read_exact_at(&mut b, at).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::Truncated(format!("{name}: cut short at {len} bytes"))
            }
            _ => e.into(),
        })?;
        Ok(b)
    };
    framecache_media::mp4::read(&name, len, &read_at, stop, out)
}

/// Releases media at the pace of their timestamps.
struct Pacer {
    start: Instant,
    first: Option<i64>,
}

impl Pacer {
    fn wait(&mut self, dts90k: i64) {
        if dts90k == FC_NOPTS {
            return;
        }
        let f0 = *self.first.get_or_insert(dts90k);
        let ahead = (dts90k - f0).clamp(0, 90_000 * 3600) as u64;
        let due = self.start + Duration::from_micros(ahead * 100 / 9);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
    }
}

/// A read on a socket with a read timeout: `Ok(None)` when the timeout passed with nothing
/// (so the caller can check its stop flag), the byte count otherwise.
fn timed_read(r: std::io::Result<usize>) -> Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Plays a `.ts`, `.flv` or MP4 (`.mp4`, `.m4v`, `.m4a`, `.mov`) file at real time (by its
/// timestamps), then ends (the worker's reconnect starts it again, so a file input loops).
fn run_file(path: &Path, stop: &StopFlag, out: MediaOut) -> Result<()> {
    let mut pacer = Pacer {
        start: Instant::now(),
        first: None,
    };
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(ext.as_str(), "mp4" | "m4v" | "m4a" | "mov") {
        // Paced by each track's own timescale.
        let mut timebases = Vec::new();
        read_mp4_file(path, &|| stop.is_set(), &mut |m: Media| {
            match &m {
                Media::Tracks(t) => timebases = t.iter().map(|t| t.timebase).collect(),
                Media::Frame { track, dts, .. } => {
                    if let Some(&tb) = timebases.get(*track) {
                        pacer.wait(rescale(*dts, tb, 90_000));
                    }
                }
                _ => {}
            }
            out(m)
        })?;
        if stop.is_set() {
            return Ok(());
        }
        return Err(Error::Protocol("end of file".into()));
    }
    // MP4 reads open the file themselves (positioned reads); the others read it here.
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::file(&path.display().to_string(), e))?;
    if ext == "flv" {
        let mut data = Vec::new();
        f.read_to_end(&mut data)?;
        let mut conv = FlvToMedia::new();
        let mut media: Vec<Media> = Vec::new();
        let bad = |e: framecache_media::flv::FlvError| match e {
            framecache_media::flv::FlvError::Truncated(_) => {
                Error::Truncated(format!("{}: {e}", path.display()))
            }
            _ => Error::Corrupt(format!("{}: {e}", path.display())),
        };
        for tag in framecache_media::flv::file_tags(&data).map_err(bad)? {
            if stop.is_set() {
                break;
            }
            let tag = tag.map_err(bad)?;
            conv.tag(tag.video, tag.body, tag.ts, &mut media);
            for m in media.drain(..) {
                if let Media::Frame { dts, .. } = &m {
                    pacer.wait(dts.saturating_mul(90)); // FLV timestamps are ms
                }
                out(m)?;
            }
        }
        return Err(Error::Protocol("end of file".into()));
    }
    let mut ts = TsToMedia::new();
    let mut buf = vec![0u8; 188 * 256];
    let mut paced = |m: Media| {
        if let Media::Frame { dts, .. } = &m {
            pacer.wait(*dts);
        }
        out(m)
    };
    loop {
        if stop.is_set() {
            return Ok(());
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            ts.flush(&mut paced)?;
            return Err(Error::Protocol("end of file".into()));
        }
        ts.push(&buf[..n], &mut paced)?;
    }
}

/// Relays packet slot `slot`: its streams, parameters (each new generation) and packets.
fn run_copy(
    root: &Path,
    slot: &str,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    let mut r = Follower::open_in(root, slot, PacketStart::Keyframe)?;
    out(Media::Tracks(
        r.streams()
            .iter()
            .map(|s| Track {
                codec: s.codec,
                timebase: s.timebase,
            })
            .collect(),
    ))?;
    let mut buf = Vec::new();
    let mut last = Instant::now();
    while !stop.is_set() {
        let f = match r.next(&mut buf, Duration::from_millis(200)) {
            Ok(f) => f,
            Err(Error::Timeout) => {
                if last.elapsed() > t.idle {
                    return Err(Error::Timeout);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        last = Instant::now();
        let (info, track) = (f.info, f.info.stream as usize);
        if let Some(data) = f.params {
            out(Media::Params { track, data })?;
        }
        out(Media::Frame {
            track,
            pts: info.pts,
            dts: info.dts,
            keyframe: info.flags & FC_PACKET_KEYFRAME != 0,
            discontinuity: info.flags & FC_PACKET_DISCONTINUITY != 0 || info.skipped > 0,
            data: buf[..info.size as usize].to_vec(),
        })?;
    }
    Ok(())
}

/// Resolves a playlist entry against the playlist URL; it must stay on the same scheme, host
/// and port.
pub fn resolve_uri(base: &str, uri: &str) -> Result<String> {
    resolve_uri_allowing(base, uri, &[])
}

/// Whether `host:port` is named in `allowed`: `host`, `host:port`, or `*.domain` (any
/// subdomain), case-insensitive.
fn host_allowed(host: &str, port: u16, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        if let Some(domain) = a.strip_prefix("*.") {
            host.ends_with(&format!(".{domain}"))
        } else if let Some((h, p)) = a.rsplit_once(':') {
            h == host && p.parse::<u16>().is_ok_and(|p| p == port)
        } else {
            a == host
        }
    })
}

/// As [`resolve_uri`], but an entry may also point to a server named in `allowed_hosts`
/// (a CDN layout: the playlist on one host, segments on others; see [`host_allowed`] for
/// the forms). It may never go from https to plain http.
pub fn resolve_uri_allowing(base: &str, uri: &str, allowed_hosts: &[String]) -> Result<String> {
    let b = parse_http(base)?;
    let origin = b.origin();
    let full = if uri.contains("://") {
        uri.to_string()
    } else if let Some(abs) = uri.strip_prefix('/') {
        format!("{origin}/{abs}")
    } else {
        let dir = match b.path.split('?').next().unwrap_or("").rfind('/') {
            Some(i) => &b.path[..=i],
            None => "/",
        };
        format!("{origin}{dir}{uri}")
    };
    let u = parse_http(&full)
        .map_err(|_| Error::BadUrl(format!("playlist entry {uri:?} is not an http(s) URL")))?;
    let same = u.host == b.host && u.port == b.port && u.tls == b.tls;
    let allowed = host_allowed(&u.host, u.port, allowed_hosts) && (u.tls || !b.tls);
    if !same && !allowed {
        return Err(Error::BadUrl(format!(
            "playlist entry {uri:?} points to another server (name its host among the \
             allowed HLS hosts to follow it)"
        )));
    }
    if u.path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .any(|c| c == "..")
    {
        return Err(Error::BadUrl(format!(
            "playlist entry {uri:?} climbs with '..'"
        )));
    }
    Ok(full)
}

/// HLS: follows the first variant of a master playlist, starts near the live edge (the last
/// three segments), fetches new segments in order and demuxes them as one TS stream.
fn run_hls(
    url: &str,
    hosts: &[String],
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    let resolve_uri = |base: &str, uri: &str| resolve_uri_allowing(base, uri, hosts);
    let mut playlist_url = url.to_string();
    let text = http_get(&playlist_url, t.connect)?;
    let mut pl = parse_playlist(&String::from_utf8_lossy(&text))?;
    if let Some(v) = pl.variants.first() {
        playlist_url = resolve_uri(url, v)?;
        pl = parse_playlist(&String::from_utf8_lossy(&http_get(
            &playlist_url,
            t.connect,
        )?))?;
    }
    let mut ts = TsToMedia::new();
    let mut mp4 = Fmp4ToMedia::new();
    // The init segment fed to `mp4`, by URI.
    let mut init: Option<String> = None;
    let mut next_seq: Option<u64> = None;
    let mut queue: VecDeque<Segment> = VecDeque::new();
    let mut last_new = Instant::now();
    loop {
        if stop.is_set() {
            return Ok(());
        }
        let start_at = pl.segments.len().saturating_sub(3);
        for (i, seg) in pl.segments.iter().enumerate() {
            let take = match next_seq {
                Some(n) => seg.seq >= n,
                None => i >= start_at,
            };
            if take {
                queue.push_back(seg.clone());
                next_seq = Some(seg.seq + 1);
                last_new = Instant::now();
            }
        }
        while let Some(seg) = queue.pop_front() {
            if stop.is_set() {
                return Ok(());
            }
            let fetch = |uri: &str| {
                http_get(
                    &resolve_uri(&playlist_url, uri)?,
                    t.connect.max(pl.target * 2),
                )
            };
            match &seg.map {
                None => ts.push(&fetch(&seg.uri)?, out)?,
                Some(map) => {
                    if init.as_ref() != Some(map) {
                        mp4.push(&fetch(map)?, out)?;
                        init = Some(map.clone());
                    }
                    mp4.push(&fetch(&seg.uri)?, out)?;
                }
            }
        }
        if pl.ended {
            ts.flush(out)?;
            return Err(Error::Protocol("the playlist ended".into()));
        }
        if last_new.elapsed() > t.idle.max(pl.target * 3) {
            return Err(Error::Protocol("the playlist stopped growing".into()));
        }
        let wait = (pl.target / 2).max(Duration::from_millis(100));
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.is_set() {
            std::thread::sleep(Duration::from_millis(50));
        }
        pl = parse_playlist(&String::from_utf8_lossy(&http_get(
            &playlist_url,
            t.connect,
        )?))?;
    }
}

// ---------------------------------------------------------------------------------------------
// RTMP pull (play from a server)
// ---------------------------------------------------------------------------------------------

/// The connection of an RTMP pull: plain, or TLS (`rtmps://`).
enum RtmpStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for RtmpStream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RtmpStream::Plain(s) => s.read(b),
            RtmpStream::Tls(s) => s.read(b),
        }
    }
}

impl Write for RtmpStream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            RtmpStream::Plain(s) => s.write(b),
            RtmpStream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            RtmpStream::Plain(s) => s.flush(),
            RtmpStream::Tls(s) => s.flush(),
        }
    }
}

fn run_rtmp(
    addr: &str,
    app: &str,
    key: &str,
    tls: bool,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    let url = format!("rtmp{}://{addr}/{app}", if tls { "s" } else { "" });
    run_rtmp_on(addr, app, key, tls, t, stop, out).map_err(|e| match e {
        Error::Io(io) => crate::http::tls_error(&url, io),
        e => e,
    })
}

fn run_rtmp_on(
    addr: &str,
    app: &str,
    key: &str,
    tls: bool,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    };
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::BadUrl(format!("{addr}: host not found")))?;
    let tcp = TcpStream::connect_timeout(&sa, t.connect)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
    tcp.set_write_timeout(Some(t.connect))?;
    let mut s = if tls {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|_| Error::BadUrl(format!("rtmps://{addr}: bad host name for TLS")))?;
        let conn = rustls::ClientConnection::new(crate::http::tls_config()?, name)
            .map_err(|e| Error::Protocol(format!("rtmps://{addr}: TLS: {e}")))?;
        RtmpStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    } else {
        RtmpStream::Plain(tcp)
    };
    let mut hs = Handshake::new(PeerType::Client);
    let p0 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| Error::Protocol(format!("{e:?}")))?;
    s.write_all(&p0)?;
    let mut buf = vec![0u8; 65536];
    let begin = Instant::now();
    let read = |s: &mut RtmpStream, buf: &mut [u8]| -> Result<Option<usize>> {
        match s.read(buf) {
            Ok(0) => Err(Error::Protocol("connection closed".into())),
            r => timed_read(r),
        }
    };
    let remaining = loop {
        if begin.elapsed() > t.connect || stop.is_set() {
            return Err(Error::Timeout);
        }
        let Some(n) = read(&mut s, &mut buf)? else {
            continue;
        };
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| Error::Protocol(format!("{e:?}")))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes)?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes)?;
                break remaining_bytes;
            }
        }
    };
    let mut cfg = ClientSessionConfig::new();
    cfg.tc_url = Some(format!("rtmp{}://{addr}/{app}", if tls { "s" } else { "" }));
    let proto = |e| Error::Protocol(format!("{e:?}"));
    let (mut session, init) = ClientSession::new(cfg).map_err(proto)?;
    let mut results: VecDeque<ClientSessionResult> = init.into();
    results.push_back(session.request_connection(app.to_string()).map_err(proto)?);
    let mut conv = FlvToMedia::new();
    let mut pending = Vec::new();
    let mut input = remaining;
    let mut last = Instant::now();
    let mut playing = false;
    loop {
        if !input.is_empty() {
            results.extend(session.handle_input(&input).map_err(proto)?);
            input.clear();
        }
        while let Some(r) = results.pop_front() {
            match r {
                ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes)?,
                ClientSessionResult::RaisedEvent(ev) => match ev {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        results
                            .push_back(session.request_playback(key.to_string()).map_err(proto)?);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(Error::Rejected(description));
                    }
                    ClientSessionEvent::PlaybackRequestAccepted => playing = true,
                    ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                        last = Instant::now();
                        conv.tag(true, &data, timestamp.value, &mut pending);
                    }
                    ClientSessionEvent::AudioDataReceived { timestamp, data } => {
                        last = Instant::now();
                        conv.tag(false, &data, timestamp.value, &mut pending);
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code }
                        if code.contains("StreamNotFound")
                            || code.contains("Failed")
                            || code.contains("UnpublishNotify") =>
                    {
                        return Err(Error::Protocol(format!("server said {code}")));
                    }
                    _ => {}
                },
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        for m in pending.drain(..) {
            out(m)?;
        }
        if stop.is_set() {
            return Ok(());
        }
        let limit = if playing { t.idle } else { t.connect };
        if last.elapsed() > limit {
            return Err(Error::Timeout);
        }
        if let Some(n) = read(&mut s, &mut buf)? {
            input.extend_from_slice(&buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(matches!(
            InputUrl::parse("udp://239.1.1.1:5000?localaddr=127.0.0.1").unwrap(),
            InputUrl::Udp {
                localaddr: Some(_),
                ..
            }
        ));
        assert!(matches!(
            InputUrl::parse("udp://@127.0.0.1:5000").unwrap(),
            InputUrl::Udp { .. }
        ));
        assert_eq!(
            InputUrl::parse("rtmp://h/live/cam").unwrap(),
            InputUrl::RtmpPull {
                addr: "h:1935".into(),
                app: "live".into(),
                key: "cam".into(),
                tls: false,
            }
        );
        assert_eq!(
            InputUrl::parse("rtmps://cdn.example/live/cam").unwrap(),
            InputUrl::RtmpPull {
                addr: "cdn.example:443".into(),
                app: "live".into(),
                key: "cam".into(),
                tls: true,
            }
        );
        assert!(matches!(
            InputUrl::parse("srt://127.0.0.1:9000?streamid=%23!::r=a,m=request&latency=50").unwrap(),
            InputUrl::SrtCaller { streamid: Some(ref s), latency_ms: Some(50), .. } if s == "#!::r=a,m=request"
        ));
        for bad in [
            "gopher://x",
            "nothing",
            "file:///etc/passwd",
            "file://m/../x",
            "file://m//etc/passwd",
            "rtmp://h",
            "copy://bad/slot",
        ] {
            assert!(
                matches!(
                    InputUrl::parse(bad),
                    Err(Error::BadUrl(_)) | Err(Error::BadSlotId(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn playlist_entries_stay_on_the_server() {
        let base = "http://127.0.0.1:8080/live/index.m3u8";
        assert_eq!(
            resolve_uri(base, "seg_001.ts").unwrap(),
            "http://127.0.0.1:8080/live/seg_001.ts"
        );
        assert_eq!(
            resolve_uri(base, "/other/s.ts").unwrap(),
            "http://127.0.0.1:8080/other/s.ts"
        );
        for bad in [
            "http://evil:80/x.ts",
            "file:///etc/passwd",
            "../../etc/passwd",
            "http://127.0.0.1:8081/x.ts",
        ] {
            assert!(resolve_uri(base, bad).is_err(), "{bad}");
        }
        // https playlists keep to https on the same host and port (no downgrade).
        let base = "https://cdn.example/live/index.m3u8";
        assert_eq!(
            resolve_uri(base, "seg_001.ts").unwrap(),
            "https://cdn.example:443/live/seg_001.ts"
        );
        assert!(resolve_uri(base, "http://cdn.example:443/live/x.ts").is_err());
        let cdn = [
            "edge.example".to_string(),
            "*.cdn.example".into(),
            "x.example:8443".into(),
        ];
        for (ok, entry) in [
            (true, "https://EDGE.example/a.ts"),
            (true, "https://a.b.cdn.example/a.ts"),
            (true, "https://x.example:8443/a.ts"),
            (false, "https://x.example/a.ts"),
            (false, "https://cdn.example.evil/a.ts"),
            (false, "http://edge.example/a.ts"), // no downgrade from https
        ] {
            assert_eq!(
                resolve_uri_allowing(base, entry, &cdn).is_ok(),
                ok,
                "{entry}"
            );
        }
        assert!(resolve_uri(base, "https://other.example/x.ts").is_err());
        let p = parse_playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:1.0,\na.ts\n#EXTINF:1.0,\nb.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let segs: Vec<(u64, &str)> = p.segments.iter().map(|s| (s.seq, s.uri.as_str())).collect();
        assert_eq!(segs, vec![(7, "a.ts"), (8, "b.ts")]);
        assert!(p.segments.iter().all(|s| s.map.is_none()));
        assert!(p.ended);
        // fMP4: each segment knows its init segment, which may change.
        let p = parse_playlist(
            "#EXTM3U\n#EXT-X-MAP:URI=\"init,0.mp4\"\n#EXTINF:1,\na.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n#EXTINF:1,\nb.m4s\n",
        )
        .unwrap();
        let maps: Vec<Option<&str>> = p.segments.iter().map(|s| s.map.as_deref()).collect();
        assert_eq!(maps, vec![Some("init,0.mp4"), Some("init1.mp4")]);
        assert!(parse_playlist("#EXTM3U\n#EXT-X-KEY:METHOD=NONE\n").is_ok());
        for refused in [
            "#EXT-X-KEY:METHOD=AES-128,URI=\"k\"",
            "#EXT-X-BYTERANGE:1000@0",
            "#EXT-X-MAP:URI=\"i.mp4\",BYTERANGE=\"100@0\"",
            "#EXT-X-MAP:BYTERANGE=\"100@0\"",
        ] {
            let e = parse_playlist(&format!("#EXTM3U\n{refused}\n#EXTINF:1,\na.ts\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("HLS"), "{refused}: {e}");
        }
        assert!(parse_playlist("garbage").is_err());
    }

    #[test]
    fn mounts_confine_paths() {
        let dir = std::env::temp_dir().join(format!("fc-mount-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.ts"), b"x").unwrap();
        let m = Mounts::new();
        m.add("vod", &dir).unwrap();
        assert!(m.resolve("vod", "sub/a.ts").is_ok());
        assert!(m.resolve("vod", "../x").is_err());
        assert!(m.resolve("other", "sub/a.ts").is_err());
        std::os::unix::fs::symlink("/etc/passwd", dir.join("sub/link")).unwrap();
        assert!(matches!(
            m.resolve("vod", "sub/link"),
            Err(Error::BadUrl(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

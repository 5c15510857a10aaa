//! SRT through libsrt 1.5 (the reference implementation that ffmpeg and OBS use), loaded at run
//! time with `dlopen`, so the library builds and loads without it and SRT calls fail with
//! [`Error::NoLibrary`] instead. Debian: `libsrt1.5-openssl` or `libsrt1.5-gnutls`.
//!
//! The listener routes callers by stream id (`KEY` or `#!::r=KEY,m=publish`) and decides in
//! libsrt's listen callback, before the handshake completes: unknown keys are rejected with
//! SRT reject code 1404, keys in use with 1409, `m=request` with 1405; the key's passphrase is
//! set on the socket there.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::input::{demux_datagrams, InputTimeouts, MediaOut, StopFlag};
use crate::push::{PushConfig, PushSession};
use crate::registry::KeyRegistry;
use crate::Streams;
use framecache_shm::error::{Error, Result};

type Sock = c_int;
type ListenCb =
    unsafe extern "C" fn(*mut c_void, Sock, c_int, *const libc::sockaddr, *const c_char) -> c_int;

const SRTO_LINGER: c_int = 7;
const SRTO_SNDTIMEO: c_int = 13;
const SRTO_RCVTIMEO: c_int = 14;
const SRTO_LATENCY: c_int = 23;
const SRTO_PASSPHRASE: c_int = 26;
const SRTO_CONNTIMEO: c_int = 36;
const SRTO_STREAMID: c_int = 46;
const SRTO_TRANSTYPE: c_int = 50;
/// `SRT_EASYNCRCV` / `SRT_ETIMEOUT`: no data before the receive timeout.
const SRT_EASYNCRCV: c_int = 6002;
const SRT_ETIMEOUT: c_int = 6003;

/// Reject codes (libsrt's `SRT_REJX_*`, HTTP-like, offset 1000).
pub const REJECT_NOT_FOUND: c_int = 1404;
/// Key already pushed.
pub const REJECT_CONFLICT: c_int = 1409;
/// Mode other than publish.
pub const REJECT_BAD_MODE: c_int = 1405;
/// Malformed stream id.
pub const REJECT_BAD_REQUEST: c_int = 1400;
/// A play limit is reached (SRT_REJX_OVERLOAD).
pub const REJECT_OVERLOAD: c_int = 1402;
/// Play refused by configuration (SRT_REJX_FORBIDDEN).
pub const REJECT_FORBIDDEN: c_int = 1403;

struct Api {
    startup: unsafe extern "C" fn() -> c_int,
    create_socket: unsafe extern "C" fn() -> Sock,
    setsockflag: unsafe extern "C" fn(Sock, c_int, *const c_void, c_int) -> c_int,
    getsockflag: unsafe extern "C" fn(Sock, c_int, *mut c_void, *mut c_int) -> c_int,
    bind: unsafe extern "C" fn(Sock, *const libc::sockaddr, c_int) -> c_int,
    getsockname: unsafe extern "C" fn(Sock, *mut libc::sockaddr, *mut c_int) -> c_int,
    listen: unsafe extern "C" fn(Sock, c_int) -> c_int,
    accept: unsafe extern "C" fn(Sock, *mut libc::sockaddr, *mut c_int) -> Sock,
    listen_callback: unsafe extern "C" fn(Sock, ListenCb, *mut c_void) -> c_int,
    connect: unsafe extern "C" fn(Sock, *const libc::sockaddr, c_int) -> c_int,
    recvmsg: unsafe extern "C" fn(Sock, *mut c_char, c_int) -> c_int,
    sendmsg: unsafe extern "C" fn(Sock, *const c_char, c_int, c_int, c_int) -> c_int,
    close: unsafe extern "C" fn(Sock) -> c_int,
    getlasterror_str: unsafe extern "C" fn() -> *const c_char,
    getlasterror: unsafe extern "C" fn(*mut c_int) -> c_int,
    setrejectreason: unsafe extern "C" fn(Sock, c_int) -> c_int,
    getrejectreason: unsafe extern "C" fn(Sock) -> c_int,
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| Error::NoLibrary(e.clone()))
}

// The symbol types are the Api field types (from srt.h 1.5); spelling each out again here
// would only repeat them.
#[allow(clippy::missing_transmute_annotations)]
fn load() -> std::result::Result<Api, String> {
    let names = [
        "libsrt.so.1.5",
        "libsrt-openssl.so.1.5",
        "libsrt-gnutls.so.1.5",
        "libsrt.so",
    ];
    let mut handle = std::ptr::null_mut();
    for n in names {
        let c = CString::new(n).expect("no NUL");
        // SAFETY: plain dlopen of a library name.
        handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !handle.is_null() {
            break;
        }
    }
    if handle.is_null() {
        return Err(
            "libsrt 1.5 not found (apt install libsrt1.5-openssl or libsrt1.5-gnutls)".into(),
        );
    }
    macro_rules! sym {
        ($name:literal) => {{
            let c = CString::new($name).expect("no NUL");
            // SAFETY: dlsym on a live handle; the symbol's C type is the field's type (srt.h 1.5).
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            if p.is_null() {
                return Err(format!("libsrt lacks {}", $name));
            }
            // SAFETY: see above.
            unsafe { std::mem::transmute::<*mut c_void, _>(p) }
        }};
    }
    let api = Api {
        startup: sym!("srt_startup"),
        create_socket: sym!("srt_create_socket"),
        setsockflag: sym!("srt_setsockflag"),
        getsockflag: sym!("srt_getsockflag"),
        bind: sym!("srt_bind"),
        getsockname: sym!("srt_getsockname"),
        listen: sym!("srt_listen"),
        accept: sym!("srt_accept"),
        listen_callback: sym!("srt_listen_callback"),
        connect: sym!("srt_connect"),
        recvmsg: sym!("srt_recvmsg"),
        sendmsg: sym!("srt_sendmsg"),
        close: sym!("srt_close"),
        getlasterror_str: sym!("srt_getlasterror_str"),
        getlasterror: sym!("srt_getlasterror"),
        setrejectreason: sym!("srt_setrejectreason"),
        getrejectreason: sym!("srt_getrejectreason"),
    };
    // libsrt logs warnings (rejected callers, wrong passphrases) to stderr; we report those
    // ourselves, so keep only its errors.
    let c = CString::new("srt_setloglevel").expect("no NUL");
    // SAFETY: dlsym on a live handle; srt_setloglevel(int) per srt.h.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    if !p.is_null() {
        // SAFETY: see above; LOG_ERR is 3.
        unsafe {
            let f: unsafe extern "C" fn(c_int) = std::mem::transmute(p);
            f(3);
        }
    }
    // SAFETY: srt_startup may be called more than once; it is reference counted.
    if unsafe { (api.startup)() } < 0 {
        return Err("srt_startup failed".into());
    }
    Ok(api)
}

/// Whether libsrt could be loaded.
pub fn available() -> bool {
    api().is_ok()
}

fn last_error(a: &Api, what: &str) -> Error {
    // SAFETY: returns a thread-local static string.
    let s = unsafe { CStr::from_ptr((a.getlasterror_str)()) }
        .to_string_lossy()
        .into_owned();
    Error::Protocol(format!("srt {what}: {s}"))
}

/// An SRT socket, closed on drop.
pub struct SrtSocket {
    s: Sock,
    api: &'static Api,
}

impl Drop for SrtSocket {
    fn drop(&mut self) {
        // SAFETY: our own socket, closed once.
        unsafe { (self.api.close)(self.s) };
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the variant matching the family.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as c_int)
}

impl SrtSocket {
    fn new() -> Result<SrtSocket> {
        let api = api()?;
        // SAFETY: plain constructor.
        let s = unsafe { (api.create_socket)() };
        if s < 0 {
            return Err(last_error(api, "socket"));
        }
        let sock = SrtSocket { s, api };
        sock.set_i32(SRTO_TRANSTYPE, 0)?; // live
        Ok(sock)
    }

    fn set_i32(&self, opt: c_int, v: i32) -> Result<()> {
        // SAFETY: the option takes an int.
        let r = unsafe { (self.api.setsockflag)(self.s, opt, (&v as *const i32).cast(), 4) };
        if r < 0 {
            return Err(last_error(self.api, "setsockflag"));
        }
        Ok(())
    }

    fn set_str(&self, opt: c_int, v: &str) -> Result<()> {
        // SAFETY: string options take (pointer, length).
        let r = unsafe { (self.api.setsockflag)(self.s, opt, v.as_ptr().cast(), v.len() as c_int) };
        if r < 0 {
            return Err(last_error(self.api, "setsockflag"));
        }
        Ok(())
    }

    fn stream_id(&self) -> String {
        let mut buf = [0u8; 513];
        let mut len: c_int = 512;
        // SAFETY: buffer of `len` bytes.
        let r = unsafe {
            (self.api.getsockflag)(self.s, SRTO_STREAMID, buf.as_mut_ptr().cast(), &mut len)
        };
        if r < 0 {
            return String::new();
        }
        String::from_utf8_lossy(&buf[..(len.clamp(0, 512) as usize)]).into_owned()
    }

    /// Receives one message; `Ok(None)` on the receive timeout.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        // SAFETY: buffer of buf.len() bytes.
        let n = unsafe { (self.api.recvmsg)(self.s, buf.as_mut_ptr().cast(), buf.len() as c_int) };
        if n < 0 {
            // SAFETY: reads the calling thread's last error.
            let code = unsafe { (self.api.getlasterror)(std::ptr::null_mut()) };
            if code == SRT_EASYNCRCV || code == SRT_ETIMEOUT {
                return Ok(None);
            }
            return Err(last_error(self.api, "recv"));
        }
        Ok(Some(n as usize))
    }

    /// Sends one message (at most 1316 bytes in live mode).
    pub fn send(&self, data: &[u8]) -> Result<()> {
        // SAFETY: buffer of data.len() bytes; ttl -1 (none), not in order.
        let n =
            unsafe { (self.api.sendmsg)(self.s, data.as_ptr().cast(), data.len() as c_int, -1, 0) };
        if n < 0 {
            return Err(last_error(self.api, "send"));
        }
        Ok(())
    }

    /// Connects as a caller (blocking, up to `timeout`).
    pub fn connect(
        addr: &str,
        streamid: Option<&str>,
        passphrase: Option<&str>,
        latency_ms: Option<u32>,
        timeout: Duration,
    ) -> Result<SrtSocket> {
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| Error::BadUrl(format!("srt://{addr}: {e}")))?
            .next()
            .ok_or_else(|| Error::BadUrl(format!("srt://{addr}: no address")))?;
        let s = SrtSocket::new()?;
        s.set_i32(
            SRTO_CONNTIMEO,
            timeout.as_millis().clamp(100, 60_000) as i32,
        )?;
        if let Some(id) = streamid {
            s.set_str(SRTO_STREAMID, id)?;
        }
        if let Some(p) = passphrase {
            s.set_str(SRTO_PASSPHRASE, p)?;
        }
        if let Some(l) = latency_ms {
            s.set_i32(SRTO_LATENCY, l as i32)?;
        }
        let (ss, len) = sockaddr(&sa);
        // SAFETY: valid sockaddr of `len` bytes.
        let r = unsafe { (s.api.connect)(s.s, (&ss as *const libc::sockaddr_storage).cast(), len) };
        if r < 0 {
            // SAFETY: our socket.
            let reason = unsafe { (s.api.getrejectreason)(s.s) };
            let e = last_error(s.api, "connect");
            if reason >= 1000 {
                return Err(Error::Rejected(format!(
                    "srt://{addr}: rejected with code {reason}"
                )));
            }
            return Err(e);
        }
        s.set_i32(SRTO_RCVTIMEO, 200)?;
        Ok(s)
    }
}

/// Pulls MPEG-TS from an SRT listener (caller mode).
pub fn run_caller(
    addr: &str,
    streamid: Option<&str>,
    passphrase: Option<&str>,
    latency_ms: Option<u32>,
    t: InputTimeouts,
    stop: &StopFlag,
    out: MediaOut,
) -> Result<()> {
    let s = SrtSocket::connect(addr, streamid, passphrase, latency_ms, t.connect)?;
    receive_ts(&s, t, stop, out)
}

fn receive_ts(s: &SrtSocket, t: InputTimeouts, stop: &StopFlag, out: MediaOut) -> Result<()> {
    // Already connected: the idle limit applies from the start.
    let t = InputTimeouts {
        connect: t.idle,
        ..t
    };
    demux_datagrams(1500, t, stop, out, |buf| s.recv(buf))
}

/// The stream key in an SRT stream id, and whether it asks to publish.
/// `KEY` → publish KEY; `#!::r=KEY,m=publish` (or without `m`) → publish; `m=request` → play.
pub fn parse_streamid(id: &str) -> std::result::Result<(String, bool), &'static str> {
    let Some(body) = id.strip_prefix("#!::") else {
        if id.is_empty() {
            return Err("empty stream id");
        }
        return Ok((id.to_string(), true));
    };
    let mut key = None;
    let mut publish = true;
    for kv in body.split(',') {
        let (k, v) = kv.split_once('=').ok_or("malformed #!:: stream id")?;
        match k {
            "r" => key = Some(v.to_string()),
            "m" => publish = v == "publish",
            _ => {}
        }
    }
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or("stream id without r=")?;
    Ok((key, publish))
}

struct ListenCtx {
    registry: KeyRegistry,
    api: &'static Api,
    events: Option<crate::sink::EventCallback>,
    play: Option<SrtPlay>,
    /// Plays running, by slot.
    plays: Arc<crate::rtmp::Plays>,
}

impl ListenCtx {
    /// The slot a play of `key` reads: a registered key's slot, otherwise the key itself.
    fn play_slot(&self, key: &str) -> String {
        self.registry
            .lookup(key)
            .map_or(key.to_string(), |c| c.slot)
    }

    /// The passphrase a play of `slot` must use: its own viewer token, else the global one.
    fn play_passphrase(&self, play: &SrtPlay, slot: &str) -> Option<String> {
        play.tokens.get(slot).or_else(|| play.access.token.clone())
    }
}

/// SRT play (egress): who may read which slot, with RTMP play's credentials and caps.
#[derive(Clone)]
pub struct SrtPlay {
    /// Root of the slots played.
    pub root: std::path::PathBuf,
    /// The viewer token (the SRT passphrase a reader must use: 10..=79 characters) and the
    /// caps per stream and in total.
    pub access: crate::rtmp::PlayAccess,
    /// Viewer tokens of single slots (a slot's own passphrase, instead of the global one).
    pub tokens: crate::rtmp::PlayTokens,
    /// The plays running (shared with the engine's other listeners: one set of caps).
    pub plays: Arc<crate::rtmp::Plays>,
}

unsafe extern "C" fn on_listen(
    opaque: *mut c_void,
    ns: Sock,
    _hsversion: c_int,
    peer: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int {
    // No panic may unwind into libsrt.
    std::panic::catch_unwind(|| {
        // SAFETY: opaque is the ListenCtx the listener keeps alive while the socket lives.
        let ctx = unsafe { &*(opaque as *const ListenCtx) };
        let id = if streamid.is_null() {
            String::new()
        } else {
            // SAFETY: libsrt passes a NUL-terminated string.
            unsafe { CStr::from_ptr(streamid) }
                .to_string_lossy()
                .into_owned()
        };
        let reject = |code| {
            // SAFETY: the pending socket libsrt handed us.
            unsafe { (ctx.api.setrejectreason)(ns, code) };
            if let Some(cb) = &ctx.events {
                let key = parse_streamid(&id).map(|(k, _)| k).unwrap_or_default();
                // SAFETY: libsrt passes the caller's address (or NULL).
                let who = unsafe { sockaddr_text(peer) };
                cb(&crate::sink::IngestEvent::Refused {
                    slot: ctx
                        .registry
                        .lookup(&key)
                        .map(|c| c.slot)
                        .unwrap_or_default(),
                    input: format!("srt://{who}?streamid={key}"),
                    reason: match code {
                        REJECT_NOT_FOUND => "unknown stream key (SRT reject 1404)".into(),
                        REJECT_CONFLICT => {
                            "the key is being pushed already (SRT reject 1409)".into()
                        }
                        REJECT_BAD_MODE => "play is off (m=request; SRT reject 1405)".into(),
                        REJECT_OVERLOAD => "a play limit is reached (SRT reject 1402)".into(),
                        REJECT_FORBIDDEN => {
                            "play refused by configuration (SRT reject 1403)".into()
                        }
                        c => format!("bad request (SRT reject {c})"),
                    },
                });
            }
            -1
        };
        let (key, publish) = match parse_streamid(&id) {
            Ok(x) => x,
            Err(_) => return reject(REJECT_BAD_REQUEST),
        };
        if !publish {
            // A reader (m=request): SRT play of a live slot.
            let Some(play) = &ctx.play else {
                return reject(REJECT_BAD_MODE);
            };
            let slot = ctx.play_slot(&key);
            if framecache_shm::packet::slot_info(&play.root, &slot).is_err() {
                return reject(REJECT_NOT_FOUND);
            }
            if !ctx.plays.fits(&play.access, &slot) {
                return reject(REJECT_OVERLOAD);
            }
            if let Some(p) = ctx.play_passphrase(play, &slot) {
                if !(10..=79).contains(&p.len()) {
                    log::warn!(
                        "srt: play of {slot} refused: its viewer token is the SRT passphrase \
                         and must be 10..79 characters"
                    );
                    return reject(REJECT_FORBIDDEN);
                }
                // A reader without it, or with another, fails the handshake (libsrt).
                // SAFETY: setting an option on the pending socket is what the callback is for.
                let r = unsafe {
                    (ctx.api.setsockflag)(ns, SRTO_PASSPHRASE, p.as_ptr().cast(), p.len() as c_int)
                };
                if r < 0 {
                    return reject(REJECT_BAD_REQUEST);
                }
            }
            return 0;
        }
        let Some(cfg) = ctx.registry.lookup(&key) else {
            return reject(REJECT_NOT_FOUND);
        };
        if ctx.registry.holder(&key).is_some() {
            return reject(REJECT_CONFLICT);
        }
        if let Some(p) = cfg.passphrase {
            // SAFETY: setting an option on the pending socket is what the callback is for.
            let r = unsafe {
                (ctx.api.setsockflag)(ns, SRTO_PASSPHRASE, p.as_ptr().cast(), p.len() as c_int)
            };
            if r < 0 {
                return reject(REJECT_BAD_REQUEST);
            }
        }
        0
    })
    .unwrap_or(-1)
}

/// Settings of the SRT listener.
#[derive(Clone)]
pub struct SrtListenerConfig {
    /// Keys, slot options, events and root of publishes.
    pub push: PushConfig,
    /// Receiver latency in ms (default 120, libsrt's).
    pub latency_ms: Option<u32>,
    /// Readers (`m=request`) play slots as MPEG-TS; None: refused with 1405.
    pub play: Option<SrtPlay>,
}

/// A running SRT listener; dropping it stops accepting (connections already accepted end when
/// their callers leave).
pub struct SrtListener {
    sock: Arc<SrtSocket>,
    addr: SocketAddr,
    _ctx: Arc<ListenCtx>,
}

impl SrtListener {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        // Closing unblocks srt_accept in the accept thread (which holds the other Arc).
        // SAFETY: our socket; srt_close on an already-closed socket returns an error only.
        unsafe { (self.sock.api.close)(self.sock.s) };
    }
}

/// Binds an SRT listener on `addr` and accepts publishers on a thread of its own.
pub fn listen(addr: SocketAddr, cfg: SrtListenerConfig, streams: Streams) -> Result<SrtListener> {
    let s = SrtSocket::new()?;
    if let Some(l) = cfg.latency_ms {
        s.set_i32(SRTO_LATENCY, l as i32)?;
    }
    let (ss, len) = sockaddr(&addr);
    // SAFETY: valid sockaddr.
    if unsafe { (s.api.bind)(s.s, (&ss as *const libc::sockaddr_storage).cast(), len) } < 0 {
        return Err(last_error(s.api, &format!("bind {addr}")));
    }
    let ctx = Arc::new(ListenCtx {
        registry: cfg.push.registry.clone(),
        api: s.api,
        events: cfg.push.events.clone(),
        plays: cfg
            .play
            .as_ref()
            .map_or_else(Default::default, |p| p.plays.clone()),
        play: cfg.play.clone(),
    });
    // SAFETY: ctx outlives the socket (kept in SrtListener and the accept thread).
    if unsafe { (s.api.listen_callback)(s.s, on_listen, Arc::as_ptr(&ctx) as *mut c_void) } < 0 {
        return Err(last_error(s.api, "listen_callback"));
    }
    // SAFETY: bound socket.
    if unsafe { (s.api.listen)(s.s, 16) } < 0 {
        return Err(last_error(s.api, "listen"));
    }
    // The bound address (port 0 picks one).
    // SAFETY: zeroed storage and its size as out-parameters.
    let mut bound: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut blen = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
    // SAFETY: as above.
    let r = unsafe {
        (s.api.getsockname)(
            s.s,
            (&mut bound as *mut libc::sockaddr_storage).cast(),
            &mut blen,
        )
    };
    let addr = if r == 0 {
        peer_name(&bound).parse().unwrap_or(addr)
    } else {
        addr
    };
    let sock = Arc::new(s);
    let (sock2, ctx2) = (sock.clone(), ctx.clone());
    std::thread::Builder::new()
        .name("srt-accept".into())
        .spawn(move || accept_loop(sock2, ctx2, cfg, streams))?;
    Ok(SrtListener {
        sock,
        addr,
        _ctx: ctx,
    })
}

fn accept_loop(
    sock: Arc<SrtSocket>,
    ctx: Arc<ListenCtx>,
    cfg: SrtListenerConfig,
    streams: Streams,
) {
    loop {
        // SAFETY: zeroed storage for the peer address.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: listener socket; out-parameters sized above.
        let ns = unsafe {
            (sock.api.accept)(
                sock.s,
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if ns < 0 {
            return; // listener closed
        }
        let conn = SrtSocket {
            s: ns,
            api: sock.api,
        };
        let peer = peer_name(&ss);
        let cfg = cfg.clone();
        let streams = streams.clone();
        let ctx = ctx.clone();
        let _ = std::thread::Builder::new()
            .name("srt-conn".into())
            .spawn(move || {
                let r = match parse_streamid(&conn.stream_id()) {
                    Ok((key, false)) => player(conn, &peer, &key, &ctx),
                    _ => publisher(conn, &peer, &cfg, &streams),
                };
                if let Err(e) = r {
                    log::info!("srt: {peer}: {e}");
                }
            });
    }
}

/// The text of an address libsrt passes (sockaddr_in or sockaddr_in6, by its family).
///
/// # Safety
/// `sa` is NULL or points to a valid address of the size its family says.
unsafe fn sockaddr_text(sa: *const libc::sockaddr) -> String {
    if sa.is_null() {
        return "?".into();
    }
    // SAFETY: every sockaddr starts with its family.
    match c_int::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: family says sockaddr_in.
            let a = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            format!("{ip}:{}", u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: family says sockaddr_in6.
            let a = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            format!("[{ip}]:{}", u16::from_be(a.sin6_port))
        }
        _ => "?".into(),
    }
}

fn peer_name(ss: &libc::sockaddr_storage) -> String {
    // SAFETY: a sockaddr_storage holds any address its family says.
    unsafe { sockaddr_text((ss as *const libc::sockaddr_storage).cast()) }
}

/// Plays the slot of `key` to an accepted reader as MPEG-TS from its last keyframe, until the
/// reader leaves or the slot's writer does. A reader too slow for the stream is dropped when a
/// send cannot complete within a second; the writer never waits for it (the ring overwrites,
/// and a reader that fell behind skips to a keyframe).
fn player(conn: SrtSocket, peer: &str, key: &str, ctx: &ListenCtx) -> Result<()> {
    let play = ctx
        .play
        .as_ref()
        .ok_or_else(|| Error::Rejected("SRT play is off".into()))?;
    let slot = ctx.play_slot(key);
    // The handshake checked the caps; of two readers racing for the last place, one goes.
    let seat = ctx
        .plays
        .take(&play.access, &slot, "srt", peer)
        .map_err(|why| Error::Rejected(format!("play of {slot}: {why}")))?;
    conn.set_i32(SRTO_SNDTIMEO, 1000)?;
    conn.set_i32(SRTO_LINGER, 0).ok();
    let mut ts = crate::egress::SlotTs::open(
        &play.root,
        &slot,
        framecache_shm::packet::PacketStart::Keyframe,
    )?;
    log::info!("srt: {peer} plays slot {slot}");
    loop {
        if seat.kicked() {
            log::info!("srt: {peer}: play of {slot} ended by the operator");
            return Ok(());
        }
        let bytes = match ts.next(Duration::from_millis(500)) {
            Ok(b) => b,
            Err(Error::Timeout) => continue,
            Err(Error::WriterGone) => {
                log::info!("srt: {peer}: play of {slot} ended (the stream ended)");
                // What is still in the send buffer goes out before the close (up to 5 s):
                // the reader gets the stream to its end.
                conn.set_i32(SRTO_LINGER, 5).ok();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Messages of whole TS packets, 7 at most (1316 bytes, SRT's live payload).
        seat.sent(bytes.len());
        for chunk in bytes.chunks(1316) {
            conn.send(chunk).map_err(|e| {
                Error::Protocol(format!(
                    "play of {slot}: the reader left or fell behind ({e})"
                ))
            })?;
        }
    }
}

fn publisher(
    conn: SrtSocket,
    peer: &str,
    cfg: &SrtListenerConfig,
    streams: &Streams,
) -> Result<()> {
    let (key, _) = parse_streamid(&conn.stream_id()).map_err(|e| Error::Rejected(e.into()))?;
    // The callback checked the key; a racing second caller may have won since.
    let guard = cfg.push.registry.acquire(&key, peer)?;
    conn.set_i32(SRTO_RCVTIMEO, 200)?;
    conn.set_i32(SRTO_LINGER, 0).ok();
    let input = format!("srt://{peer}?streamid={key}");
    let mut session = PushSession::start(&cfg.push, streams, guard, input)?;
    let stop = StopFlag::default();
    let t = InputTimeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_secs(10),
    };
    let r = receive_ts(&conn, t, &stop, &mut |m| session.push(m));
    session.finish(match &r {
        Ok(()) => "stopped".into(),
        Err(e) => e.to_string(),
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids() {
        assert_eq!(parse_streamid("cam1"), Ok(("cam1".into(), true)));
        assert_eq!(
            parse_streamid("#!::r=live/cam1,m=publish"),
            Ok(("live/cam1".into(), true))
        );
        assert_eq!(parse_streamid("#!::u=x,r=cam"), Ok(("cam".into(), true)));
        assert_eq!(
            parse_streamid("#!::r=cam,m=request"),
            Ok(("cam".into(), false))
        );
        assert!(parse_streamid("#!::m=publish").is_err());
        assert!(parse_streamid("#!::garbage").is_err());
        assert!(parse_streamid("").is_err());
    }
}

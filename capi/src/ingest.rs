//! The ingest engine from C: `fc_ingest_*`.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

use framecache_shm::error::{Error, Result};

use crate::abi::{abi_structs, out_size, write_out};
use crate::*;

abi_structs! {
    fc_ingest_stats => (std::mem::size_of::<fc_ingest_stats>(), std::mem::size_of::<fc_ingest_stats>()),
    fc_probe_result => (std::mem::size_of::<fc_probe_result>(), std::mem::size_of::<fc_probe_result>()),
}

/// What [`fc_ingest_probe`] found. Set `struct_size` to `sizeof(fc_probe_result)`. Since 0.2.
#[repr(C)]
#[derive(Default)]
pub struct fc_probe_result {
    /// Set by the caller to `sizeof(fc_probe_result)`.
    pub struct_size: u32,
    /// Tracks the input announced (at most 8 listed in `codecs`).
    pub stream_count: u32,
    /// `FC_CODEC_*` of each track.
    pub codecs: [u32; 8],
    /// Picture size of the first H.264 track (0 = unknown or none).
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Sample rate of the first AAC track (0 = unknown or none).
    pub sample_rate: u32,
    /// Its channels.
    pub channels: u32,
    /// Milliseconds from the start of the probe to the first access unit.
    pub first_media_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Ingest engine
// ---------------------------------------------------------------------------------------------

/// An ingest engine: push listeners, stream keys, mounts and pull ingests. Opaque. All
/// functions on one engine may be called from any thread (they serialise on a lock).
pub struct fc_ingest {
    pub(crate) inner: Mutex<framecache_ingest::Engine>,
    /// The event kinds the host's callbacks receive (bit `1 << kind`); 0.1 hosts get the
    /// three kinds they know.
    observed: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// The kinds a host gets unless it asks for more with [`fc_ingest_observe`].
const OBSERVED_BY_DEFAULT: u32 =
    1 << FC_INGEST_CONNECTED | 1 << FC_INGEST_DISCONNECTED | 1 << FC_INGEST_MEDIA_INFO;

/// `fc_ingest_event.kind`: an input connected or a pusher was accepted.
pub const FC_INGEST_CONNECTED: u32 = 1;
/// `fc_ingest_event.kind`: an input went away (`reason` says why).
pub const FC_INGEST_DISCONNECTED: u32 = 2;
/// `fc_ingest_event.kind`: a slot was created with the streams described.
pub const FC_INGEST_MEDIA_INFO: u32 = 3;
/// `fc_ingest_event.kind`: a pull input failed before it delivered media (did not open or
/// connect, was refused, ended empty); `input`, `priority` and `reason` say which and why.
/// Delivered after [`fc_ingest_observe`] asks for it. Since 0.2.
pub const FC_INGEST_INPUT_FAILED: u32 = 4;
/// `fc_ingest_event.kind`: a pusher was refused (unknown key, key in use, wrong mode);
/// `slot` is empty for an unknown key. Delivered after [`fc_ingest_observe`]. Since 0.2.
pub const FC_INGEST_REFUSED: u32 = 5;
/// `fc_ingest_event.kind`: a packet was published (`stream`, `size`, `keyframe`, `pts`,
/// `dts`). Delivered after [`fc_ingest_observe`] asks for it: a callback per packet. Since 0.2.
pub const FC_INGEST_PACKET: u32 = 6;

/// An event of the ingest engine, valid only during the callback.
#[repr(C)]
pub struct fc_ingest_event {
    /// Size of this struct as this library fills it.
    pub struct_size: u32,
    /// `FC_INGEST_*`.
    pub kind: u32,
    /// The input (URL or peer), NUL-terminated; empty for `FC_INGEST_MEDIA_INFO`.
    pub input: *const c_char,
    /// Why it disconnected, NUL-terminated; empty otherwise.
    pub reason: *const c_char,
    /// `FC_INGEST_MEDIA_INFO`: number of streams.
    pub stream_count: u32,
    /// `FC_CODEC_*` of each stream.
    pub codecs: [u32; 8],
    /// First video stream's width (0 = none/unknown).
    pub width: u32,
    /// First video stream's height.
    pub height: u32,
    /// First audio stream's sample rate (0 = none/unknown).
    pub sample_rate: u32,
    /// First audio stream's channels.
    pub channels: u32,
    /// The slot the event is about, NUL-terminated (empty for a refused unknown key). Since
    /// 0.2: read it only when `struct_size` covers it.
    pub slot: *const c_char,
    /// `FC_INGEST_INPUT_FAILED`: the input's place in the slot's list (0 = highest priority).
    pub priority: u32,
    /// `FC_INGEST_PACKET`: stream index in the slot.
    pub stream: u32,
    /// `FC_INGEST_PACKET`: payload bytes.
    pub size: u64,
    /// `FC_INGEST_PACKET`: presentation time, 90 kHz (`FC_NOPTS` = none).
    pub pts: i64,
    /// `FC_INGEST_PACKET`: decoding time, 90 kHz.
    pub dts: i64,
    /// `FC_INGEST_PACKET`: 1 for a keyframe.
    pub keyframe: u32,
}

/// Receives engine events; called on the engine's threads, keep it short.
pub type fc_ingest_event_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, event: *const fc_ingest_event)>;

/// Counters of one stream key (push) or slot (pull).
#[repr(C)]
#[derive(Default)]
pub struct fc_ingest_stats {
    /// Set by the caller to `sizeof(fc_ingest_stats)`.
    pub struct_size: u32,
    /// 1 while an input is connected.
    pub connected: u32,
    /// Payload bytes published.
    pub bytes: u64,
    /// Packets published.
    pub packets: u64,
    /// Units dropped (malformed, oversized, before parameters).
    pub dropped: u64,
    /// Bits per second over the last full second.
    pub bitrate: u64,
    /// CLOCK_REALTIME ns of the last packet (0 = none).
    pub last_packet_ns: u64,
    /// Reconnects (a pusher or input returning).
    pub reconnects: u64,
    /// Index of the input in use (pull ingests with several inputs).
    pub current_input: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

struct UserPtr(*mut c_void);

impl UserPtr {
    // A method, so closures capture the Send + Sync wrapper, not the raw field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}
// SAFETY: the C caller promises the callback and its user pointer may be used from any thread.
unsafe impl Send for UserPtr {}
// SAFETY: as above.
unsafe impl Sync for UserPtr {}

pub(crate) fn engine<'a>(
    e: *const fc_ingest,
) -> Result<std::sync::MutexGuard<'a, framecache_ingest::Engine>> {
    let e = arg(e, "engine")?;
    Ok(e.inner.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Creates an engine with no listener and no key, in `*out` (owned by the caller until
/// `fc_ingest_destroy`; NULL on failure).
///
/// # Safety
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_create(out: *mut *mut fc_ingest) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let e = framecache_ingest::Engine::new()?;
        *out = Box::into_raw(Box::new(fc_ingest {
            inner: Mutex::new(e),
            observed: std::sync::Arc::new(OBSERVED_BY_DEFAULT.into()),
        }));
        Ok(())
    })
}

/// Stops everything the engine runs (listeners, pulls; their slots close) and frees it.
/// NULL is ignored.
///
/// # Safety
/// `engine` from `fc_ingest_create`, not used afterwards, no call on it in flight.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_destroy(engine: *mut fc_ingest) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(engine) }
}

/// An engine event as C sees it, handed to `cb` if its kind is in `observed`.
fn deliver(
    ev: &framecache_ingest::IngestEvent,
    observed: &std::sync::atomic::AtomicU32,
    cb: unsafe extern "C" fn(*mut c_void, *const fc_ingest_event),
    user: *mut c_void,
) {
    use framecache_ingest::IngestEvent as E;
    let (kind, input, reason) = match ev {
        E::Connected { input, .. } => (FC_INGEST_CONNECTED, input.as_str(), ""),
        E::Disconnected { input, reason, .. } => {
            (FC_INGEST_DISCONNECTED, input.as_str(), reason.as_str())
        }
        E::MediaInfo(_) => (FC_INGEST_MEDIA_INFO, "", ""),
        E::InputFailed { input, reason, .. } => {
            (FC_INGEST_INPUT_FAILED, input.as_str(), reason.as_str())
        }
        E::Refused { input, reason, .. } => (FC_INGEST_REFUSED, input.as_str(), reason.as_str()),
        E::Packet { .. } => (FC_INGEST_PACKET, "", ""),
    };
    if observed.load(std::sync::atomic::Ordering::Relaxed) & (1 << kind) == 0 {
        return;
    }
    let text = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
    let (input, reason, slot) = (text(input), text(reason), text(ev.slot()));
    let mut c = fc_ingest_event {
        struct_size: std::mem::size_of::<fc_ingest_event>() as u32,
        kind,
        input: input.as_ptr(),
        reason: reason.as_ptr(),
        stream_count: 0,
        codecs: [0; 8],
        width: 0,
        height: 0,
        sample_rate: 0,
        channels: 0,
        slot: slot.as_ptr(),
        priority: 0,
        stream: 0,
        size: 0,
        pts: framecache_shm::packet::FC_NOPTS,
        dts: framecache_shm::packet::FC_NOPTS,
        keyframe: 0,
    };
    match ev {
        E::MediaInfo(mi) => {
            c.stream_count = mi.streams.len() as u32;
            for (d, s) in c.codecs.iter_mut().zip(&mi.streams) {
                *d = s.codec;
            }
            if let Some(v) = mi.streams.iter().find(|s| s.width > 0) {
                (c.width, c.height) = (v.width, v.height);
            }
            if let Some(a) = mi.streams.iter().find(|s| s.sample_rate > 0) {
                (c.sample_rate, c.channels) = (a.sample_rate, a.channels);
            }
        }
        E::InputFailed { priority, .. } => c.priority = *priority as u32,
        E::Packet {
            stream,
            size,
            keyframe,
            pts,
            dts,
            ..
        } => {
            (c.stream, c.size, c.pts, c.dts) = (*stream, *size as u64, *pts, *dts);
            c.keyframe = u32::from(*keyframe);
        }
        _ => {}
    }
    // No panic of ours crosses into C here; a C callback cannot unwind into Rust.
    // SAFETY: the caller's callback with the caller's pointer and a valid event.
    unsafe { cb(user, &c) };
}

/// The engine callback that hands events to a C callback.
fn c_callback(
    e: &fc_ingest,
    cb: unsafe extern "C" fn(*mut c_void, *const fc_ingest_event),
    user: *mut c_void,
) -> framecache_ingest::EventCallback {
    let user = UserPtr(user);
    let observed = e.observed.clone();
    std::sync::Arc::new(move |ev: &framecache_ingest::IngestEvent| {
        deliver(ev, &observed, cb, user.get())
    })
}

/// Sets the engine-wide event callback (NULL = none): every listener, pusher and pull ingest,
/// those running included, reports to it. `user` is passed back as is; both must stay valid
/// until `fc_ingest_destroy` (or until replaced). It gets `FC_INGEST_CONNECTED`,
/// `_DISCONNECTED` and `_MEDIA_INFO`; [`fc_ingest_observe`] adds the others.
///
/// # Safety
/// `engine` valid; `callback` callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_callback(
    engine: *mut fc_ingest,
    callback: fc_ingest_event_fn,
    user: *mut c_void,
) -> c_int {
    boundary(|| {
        let h = arg(engine as *const fc_ingest, "engine")?;
        let cb = callback.map(|cb| c_callback(h, cb, user));
        self::engine(engine)?.set_events(cb);
        Ok(())
    })
}

/// Sets a callback for the events of slot `slot` alone (NULL removes it), beside the
/// engine-wide one; same rules. Since 0.2.
///
/// # Safety
/// `engine` valid; `slot` NUL-terminated; `callback` callable from any thread; `user` valid
/// until the callback is removed or the engine destroyed.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_stream_callback(
    engine: *mut fc_ingest,
    slot: *const c_char,
    callback: fc_ingest_event_fn,
    user: *mut c_void,
) -> c_int {
    boundary(|| {
        let h = arg(engine as *const fc_ingest, "engine")?;
        let slot = c_str(slot, "slot")?;
        framecache_shm::slot::validate_id(slot)?;
        let cb = callback.map(|cb| c_callback(h, cb, user));
        self::engine(engine)?.set_stream_events(slot, cb);
        Ok(())
    })
}

/// Chooses the event kinds the callbacks receive: a mask of `1 << FC_INGEST_*` bits.
/// Connected, disconnected and media-info are on by default; `1 << FC_INGEST_INPUT_FAILED`
/// and `1 << FC_INGEST_REFUSED` add failures, `1 << FC_INGEST_PACKET` a callback per
/// published packet (off again when the bit is cleared). Unknown bits: `FC_ERR_INVALID_ARG`.
/// Since 0.2.
///
/// # Safety
/// `engine` valid.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_observe(engine: *mut fc_ingest, kinds: u32) -> c_int {
    boundary(|| {
        let known = OBSERVED_BY_DEFAULT
            | 1 << FC_INGEST_INPUT_FAILED
            | 1 << FC_INGEST_REFUSED
            | 1 << FC_INGEST_PACKET;
        if kinds & !known != 0 {
            return Err(Error::InvalidArg(format!(
                "kinds {kinds:#x}: bits other than 1 << FC_INGEST_* ({known:#x})"
            )));
        }
        let h = arg(engine as *const fc_ingest, "engine")?;
        h.observed
            .store(kinds, std::sync::atomic::Ordering::Relaxed);
        self::engine(engine)?.set_packet_events(kinds & 1 << FC_INGEST_PACKET != 0);
        Ok(())
    })
}

/// Starts a push listener: `rtmp://ADDR:PORT` (RTMP publish by key and play of slots),
/// `rtmps://ADDR:PORT` (the same behind TLS: call [`fc_ingest_set_tls`] first, else
/// `FC_ERR_INVALID_ARG`) or `srt://ADDR:PORT?mode=listener` / `srt://0.0.0.0:PORT` (needs libsrt: else
/// `FC_ERR_NO_LIBRARY`). Port 0 picks one; the bound `ip:port` is written to `bound` (NUL-
/// terminated, truncated to `bound_len`; may be NULL).
///
/// # Safety
/// `engine` valid; `url` NUL-terminated; `bound` writable for `bound_len` bytes or NULL.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_listen(
    engine: *mut fc_ingest,
    url: *const c_char,
    bound: *mut c_char,
    bound_len: usize,
) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        let url = c_str(url, "url")?;
        let addr = match framecache_ingest::Endpoint::parse(url)? {
            ep @ (framecache_ingest::Endpoint::RtmpListen(_)
            | framecache_ingest::Endpoint::RtmpsListen(_)
            | framecache_ingest::Endpoint::SrtListen(_)) => e.listen(&ep)?,
            _ => return Err(Error::BadUrl(format!("{url} is not a listener URL"))),
        };
        // SAFETY: caller guarantees bound_len writable bytes or NULL.
        unsafe { put_c_str(bound, bound_len, &addr.to_string()) };
        Ok(())
    })
}

/// Registers stream key `key` for the listeners, feeding packet slot `slot`, with an SRT
/// `passphrase` (10..=79 bytes) or NULL. Registering again reconfigures the key.
///
/// # Safety
/// `engine` valid; strings NUL-terminated (`passphrase` may be NULL).
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_register_key(
    engine: *mut fc_ingest,
    key: *const c_char,
    slot: *const c_char,
    passphrase: *const c_char,
) -> c_int {
    boundary(|| {
        let e = self::engine(engine)?;
        let mut cfg = framecache_ingest::KeyConfig::new(c_str(slot, "slot")?);
        let p = opt_c_str(passphrase, "passphrase")?;
        cfg.passphrase = (!p.is_empty()).then(|| p.to_string());
        e.registry().register(c_str(key, "key")?, cfg)
    })
}

/// Removes a key (a live pusher goes on until it leaves); `FC_ERR_NOT_FOUND` if unknown.
///
/// # Safety
/// `engine` valid; `key` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_unregister_key(
    engine: *mut fc_ingest,
    key: *const c_char,
) -> c_int {
    boundary(|| {
        let e = self::engine(engine)?;
        let key = c_str(key, "key")?;
        if e.registry().unregister(key) {
            Ok(())
        } else {
            Err(Error::NotFound(format!("stream key {key}")))
        }
    })
}

/// How often RTMP listeners started afterwards read their publishers, in milliseconds: all
/// publishers in one wake-up every `ms` (default 100), which costs less CPU per stream and adds
/// at most `ms` of latency; 0 reads each publisher as its data arrives.
///
/// # Safety
/// `engine` valid.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_rtmp_read_interval(
    engine: *mut fc_ingest,
    ms: u32,
) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        e.set_rtmp_read_interval(std::time::Duration::from_millis(u64::from(ms)));
        Ok(())
    })
}

/// Sets the certificate chain (`cert_pem`) and private key (`key_pem`), both PEM file paths,
/// that `rtmps://` listeners started afterwards present. Both files are read and checked now:
/// a missing file, a file without a certificate or a key that does not fit gives
/// `FC_ERR_INVALID_ARG` (the reason is in `fc_last_error`) and leaves the identity as it was.
///
/// # Safety
/// `engine` valid; strings NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_tls(
    engine: *mut fc_ingest,
    cert_pem: *const c_char,
    key_pem: *const c_char,
) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        let cert = std::path::Path::new(c_str(cert_pem, "cert_pem")?);
        let key = std::path::Path::new(c_str(key_pem, "key_pem")?);
        e.set_tls_identity(cert, key)
    })
}

/// Lets `file://NAME/...` inputs read below directory `dir`.
///
/// # Safety
/// `engine` valid; strings NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_add_mount(
    engine: *mut fc_ingest,
    name: *const c_char,
    dir: *const c_char,
) -> c_int {
    boundary(|| {
        let e = self::engine(engine)?;
        e.mounts().add(
            c_str(name, "name")?,
            std::path::Path::new(c_str(dir, "dir")?),
        )
    })
}

/// Names servers other than the playlist's that HLS inputs added from now on may fetch from
/// (a CDN layout): `count` entries, each `host` (any port), `host:port` or `*.domain`;
/// `count` 0 (`hosts` may then be NULL) allows none again, the default, where every playlist
/// entry must stay on the playlist's server. Since 0.2.
///
/// # Safety
/// `engine` valid; `hosts` holds `count` NUL-terminated strings (or is NULL with `count` 0).
/// Not to be called concurrently with other calls on the same engine.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_hls_hosts(
    engine: *mut fc_ingest,
    hosts: *const *const c_char,
    count: usize,
) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        if count > 64 || (count > 0 && hosts.is_null()) {
            return Err(Error::InvalidArg("hosts: 0..=64 non-NULL entries".into()));
        }
        let list = if count == 0 {
            &[][..]
        } else {
            // SAFETY: caller guarantees `count` readable pointers.
            unsafe { std::slice::from_raw_parts(hosts, count) }
        };
        let hosts = list
            .iter()
            .enumerate()
            .map(|(i, &h)| c_str(h, &format!("hosts[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        if hosts.iter().any(|h| h.trim().is_empty()) {
            return Err(Error::InvalidArg("hosts: an empty host name".into()));
        }
        e.set_hls_allowed_hosts(&hosts);
        Ok(())
    })
}

/// Adds an ingest into packet slot `slot` from `count` URLs: `publish://KEY` registers KEY;
/// the others are pull inputs (udp://, srt://HOST:PORT?streamid=, rtmp://HOST/APP/KEY,
/// http://...m3u8, file://MOUNT/path, copy://SLOT, rtsp://[USER:PASS@]HOST/PATH), highest
/// priority first, with failover. Keys and pull inputs in one list share the slot by
/// priority (the best live input writes). A slot that already has inputs gets these instead.
/// Bad URLs give `FC_ERR_BAD_URL` and nothing is started or changed.
///
/// # Safety
/// `engine` valid; `urls` holds `count` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_add(
    engine: *mut fc_ingest,
    slot: *const c_char,
    urls: *const *const c_char,
    count: usize,
) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        let slot = c_str(slot, "slot")?;
        framecache_shm::slot::validate_id(slot)?;
        if urls.is_null() || count == 0 || count > 64 {
            return Err(Error::InvalidArg("urls: 1..=64 non-NULL entries".into()));
        }
        // SAFETY: caller guarantees `count` readable pointers.
        let list = unsafe { std::slice::from_raw_parts(urls, count) };
        let urls = list
            .iter()
            .enumerate()
            .map(|(i, &u)| c_str(u, &format!("urls[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        // Check every URL before starting anything.
        for u in &urls {
            framecache_ingest::Endpoint::parse(u)?;
        }
        e.add(slot, &urls)
    })
}

/// Stops the pull ingest of `slot` and unregisters its keys; `FC_ERR_NOT_FOUND` if none.
///
/// # Safety
/// `engine` valid; `slot` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_remove(engine: *mut fc_ingest, slot: *const c_char) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        let slot = c_str(slot, "slot")?;
        if e.remove(slot) {
            Ok(())
        } else {
            Err(Error::NotFound(format!("ingest of slot {slot}")))
        }
    })
}

/// Counters of stream key or pull slot `name`; `FC_ERR_NOT_FOUND` before it ever ran.
///
/// # Safety
/// `engine` valid; `name` NUL-terminated; `out` valid with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_get_stats(
    engine: *mut fc_ingest,
    name: *const c_char,
    out: *mut fc_ingest_stats,
) -> c_int {
    boundary(|| {
        let e = self::engine(engine)?;
        let name = c_str(name, "name")?;
        out_size(out, "out")?;
        let s = e
            .stats(framecache_ingest::registry::normalize_key(name))
            .ok_or_else(|| Error::NotFound(format!("no ingest named {name}")))?;
        let o = fc_ingest_stats {
            struct_size: std::mem::size_of::<fc_ingest_stats>() as u32,
            connected: u32::from(s.connected),
            bytes: s.bytes,
            packets: s.packets,
            dropped: s.dropped,
            bitrate: s.bitrate,
            last_packet_ns: s.last_packet_ns,
            reconnects: s.reconnects,
            current_input: s.current_input as u32,
            reserved: 0,
        };
        write_out(out, &o, "out")
    })
}

/// Probes a pull URL (what `fc_ingest_add` takes, not a listener or `publish://`): opens it
/// with the engine's mounts, root and allowed HLS hosts, reads until every track delivered a
/// unit or `timeout_ms` passed, and fills `out`. Blocks the calling thread meanwhile; the
/// engine's other calls wait too. An input that delivered no media gives its error (e.g.
/// `FC_ERR_REJECTED` for refused credentials, `FC_ERR_TIMEOUT`), and `fc_last_error` says
/// why. Since 0.2.
///
/// # Safety
/// `engine` valid; `url` NUL-terminated; `out` writable, its `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_probe(
    engine: *mut fc_ingest,
    url: *const c_char,
    timeout_ms: u32,
    out: *mut fc_probe_result,
) -> c_int {
    boundary(|| {
        let url = c_str(url, "url")?;
        out_size(out, "out")?;
        let e = self::engine(engine)?;
        let r = e.probe(url, std::time::Duration::from_millis(u64::from(timeout_ms)))?;
        let mut o = fc_probe_result {
            struct_size: std::mem::size_of::<fc_probe_result>() as u32,
            stream_count: r.codecs.len() as u32,
            width: r.width,
            height: r.height,
            sample_rate: r.sample_rate,
            channels: r.channels,
            first_media_ms: r.first_media.as_millis() as u64,
            ..Default::default()
        };
        for (d, c) in o.codecs.iter_mut().zip(&r.codecs) {
            *d = *c;
        }
        write_out(out, &o, "out")
    })
}

/// Who may play slots over RTMP listeners started afterwards. `enabled` 0 turns play off
/// (`NetStream.Play.Failed`). `token`, when not NULL, is the viewer token every play must carry
/// as `rtmp://HOST/APP/STREAM?token=TOKEN` (a non-empty string; copied; never logged).
/// `max_per_stream` and `max_total` cap the plays running at once (0 = no cap). Default: play
/// on, no token, no caps.
///
/// # Safety
/// `engine` valid; `token` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_play_access(
    engine: *mut fc_ingest,
    enabled: c_int,
    token: *const c_char,
    max_per_stream: u32,
    max_total: u32,
) -> c_int {
    boundary(|| {
        let mut e = self::engine(engine)?;
        let token = opt_token(token, "token")?.map(str::to_string);
        e.set_play_access(
            enabled != 0,
            framecache_ingest::rtmp::PlayAccess {
                token,
                max_per_stream: max_per_stream as usize,
                max_total: max_total as usize,
            },
        );
        Ok(())
    })
}

/// Sets the viewer token of one slot (`token` non-NULL, non-empty; copied, never logged) or
/// removes it (`token` NULL). A play of the slot may carry it as `?token=` instead of the token
/// of [`fc_ingest_set_play_access`]; with it set, plays without either are refused
/// (`NetStream.Play.Failed`). Takes effect at once on every RTMP listener; plays running stay.
/// Since 0.2.
///
/// # Safety
/// `engine` valid; `slot` NUL-terminated; `token` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_ingest_set_play_token(
    engine: *mut fc_ingest,
    slot: *const c_char,
    token: *const c_char,
) -> c_int {
    boundary(|| {
        let e = self::engine(engine)?;
        let slot = c_str(slot, "slot")?;
        framecache_shm::slot::validate_id(slot)?;
        e.set_play_token(slot, opt_token(token, "token")?);
        Ok(())
    })
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_ingest.rs"));

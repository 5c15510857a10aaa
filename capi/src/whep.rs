//! C ABI of the WHEP engine (`fc_whep_*`): browsers and other WebRTC peers watch packet slots.
//!
//! Two ways to serve it, usable together:
//! - `fc_whep_listen` runs the built-in HTTP/1.1 server on an address;
//! - `fc_whep_handle` takes one request that the host's own HTTP server received (method, path,
//!   the four headers WHEP needs, body) and gives back the complete response (status, headers,
//!   body), with exactly the behaviour of the built-in server: CORS, caps, ETags, `Retry-After`.

use std::ffi::{c_char, c_int, CString};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::abi::{abi_structs, out_size, read_in, write_out};
use crate::{
    arg, arg_mut, boundary, c_str, fc_ingest, free_handle, guard, lock, opt_token, put, put_c_str,
};

abi_structs! {
    fc_whep_config => (4, std::mem::size_of::<fc_whep_config>()),
    fc_whep_request => (std::mem::offset_of!(fc_whep_request, content_type), std::mem::size_of::<fc_whep_request>()),
    fc_whep_stats => (std::mem::size_of::<fc_whep_stats>(), std::mem::size_of::<fc_whep_stats>()),
}
use framecache_shm::error::{Error, Result};
use framecache_whep::{http, WhepConfig, WhepEngine};

/// A WHEP engine: viewer state, media feeds and any HTTP listeners started on it. Opaque.
/// Every function on it may be called from any thread, concurrently.
pub struct fc_whep {
    engine: WhepEngine,
    servers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for fc_whep {
    fn drop(&mut self) {
        for s in lock(&self.servers).drain(..) {
            s.abort();
        }
        self.engine.shutdown();
    }
}

/// Settings of `fc_whep_create`. Zero/NULL fields take the default named.
/// Required fields (what the least `struct_size` must cover): none.
#[repr(C)]
pub struct fc_whep_config {
    /// Set by the caller to `sizeof(fc_whep_config)`.
    pub struct_size: u32,
    /// Viewers per stream before `503` (0 = 8).
    pub max_viewers_per_stream: u32,
    /// Viewers in total before `503` (0 = 256).
    pub max_viewers_total: u32,
    /// `Retry-After` seconds on `409`/`503` (0 = 2).
    pub retry_after_s: u32,
    /// ICE gathering time before `504` (0 = 5000 ms).
    pub ice_gather_timeout_ms: u32,
    /// A viewer not connected within this is removed (0 = 15000 ms).
    pub connect_timeout_ms: u32,
    /// A viewer disconnected this long is removed (0 = 8000 ms).
    pub disconnect_timeout_ms: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// Slot root directory (NULL = the library's default, `$FC_SHM_DIR` or `/dev/shm/framecache`).
    pub root: *const c_char,
    /// Bearer token every request must carry (NULL = none).
    pub token: *const c_char,
    /// Comma-separated origins allowed by CORS (NULL or empty = any).
    pub allowed_origins: *const c_char,
    /// IP the media (ICE) sockets bind to (NULL = 127.0.0.1).
    pub ice_ip: *const c_char,
    /// An ingest engine whose registered keys are streams that exist but are not live yet
    /// (`409` instead of `404`), or NULL. Only read during `fc_whep_create`.
    pub ingest: *const fc_ingest,
}

/// One HTTP request the host received, for `fc_whep_handle`. Strings are NUL-terminated; the
/// optional headers are NULL when absent.
/// Required fields (what the least `struct_size` must cover): `method`, `path`.
#[repr(C)]
pub struct fc_whep_request {
    /// Set by the caller to `sizeof(fc_whep_request)`.
    pub struct_size: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// `POST`, `PATCH`, `DELETE`, `OPTIONS`, ...
    pub method: *const c_char,
    /// Request path: `/whep/STREAM` (offer) or `/whep/STREAM/RESOURCE` (patch, delete).
    pub path: *const c_char,
    /// `Content-Type` or NULL.
    pub content_type: *const c_char,
    /// `Authorization` or NULL.
    pub authorization: *const c_char,
    /// `If-Match` or NULL.
    pub if_match: *const c_char,
    /// `Origin` or NULL.
    pub origin: *const c_char,
    /// Body (`body_len` bytes; may be NULL when 0).
    pub body: *const u8,
    /// Body length.
    pub body_len: usize,
}

/// The response to send for one `fc_whep_handle` request. Owned by the library: read it, then
/// free it with `fc_whep_response_free`. Headers use lowercase names.
#[repr(C)]
pub struct fc_whep_response {
    /// `sizeof(fc_whep_response)` of the library that filled it.
    pub struct_size: u32,
    /// HTTP status (201 answer, 204, 4xx/5xx with a text body, ...).
    pub status: u32,
    /// Number of headers.
    pub header_count: usize,
    /// `header_count` header names, NUL-terminated.
    pub header_names: *const *const c_char,
    /// `header_count` header values, NUL-terminated.
    pub header_values: *const *const c_char,
    /// Body bytes (followed by a NUL not counted in `body_len`, so text bodies are C strings).
    pub body: *const u8,
    /// Body length.
    pub body_len: usize,
}

/// The allocation behind an `fc_whep_response`: the public part first, so the pointer handed
/// out is also the pointer to free.
#[repr(C)]
struct OwnedResponse {
    public: fc_whep_response,
    names: Vec<CString>,
    values: Vec<CString>,
    name_ptrs: Vec<*const c_char>,
    value_ptrs: Vec<*const c_char>,
    body: Vec<u8>,
}

/// Counters of `fc_whep_get_stats`.
#[repr(C)]
#[derive(Default)]
pub struct fc_whep_stats {
    /// Set by the caller to `sizeof(fc_whep_stats)`.
    pub struct_size: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// Viewers (connected or connecting): of the stream asked for, else of the engine.
    pub viewers: u64,
    /// Peer connections not yet closed (engine).
    pub peer_connections: u64,
    /// Feed threads (one per watched stream; engine).
    pub feeds: u64,
    /// Offers answered since creation (engine).
    pub offers: u64,
    /// Access units read from the ring (the stream asked for, else all).
    pub units: u64,
    /// Bytes read from the ring (likewise).
    pub bytes: u64,
    /// Packets the ring reader skipped (likewise).
    pub ring_skipped: u64,
    /// Units viewers skipped because they fell behind (likewise).
    pub viewer_skipped: u64,
    /// WHIP publishers (engine). Since 0.2.
    pub publishers: u64,
}

fn opt(p: *const c_char, what: &str) -> Result<Option<String>> {
    if p.is_null() {
        return Ok(None);
    }
    let s = c_str(p, what)?;
    Ok((!s.is_empty()).then(|| s.to_string()))
}

fn ms_or(ms: u32, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms.into())
    }
}

fn whep_config(c: &fc_whep_config) -> Result<WhepConfig> {
    let d = WhepConfig::default();
    let ice_ip = match opt(c.ice_ip, "config.ice_ip")? {
        Some(ip) => ip
            .parse()
            .map_err(|_| Error::InvalidArg(format!("config.ice_ip {ip:?} is not an IP address")))?,
        None => d.ice_ip,
    };
    let known = if c.ingest.is_null() {
        None
    } else {
        let keys = crate::ingest::engine(c.ingest)?.registry().clone();
        let f: framecache_whep::KnownStreams =
            Arc::new(move |stream: &str| keys.feeds_slot(stream));
        Some(f)
    };
    Ok(WhepConfig {
        root: opt(c.root, "config.root")?.map(Into::into),
        max_viewers_per_stream: match c.max_viewers_per_stream {
            0 => d.max_viewers_per_stream,
            n => n as usize,
        },
        max_viewers_total: match c.max_viewers_total {
            0 => d.max_viewers_total,
            n => n as usize,
        },
        token: opt(c.token, "config.token")?,
        allowed_origins: opt(c.allowed_origins, "config.allowed_origins")?
            .map(|s| {
                s.split(',')
                    .map(|o| o.trim().to_string())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        ice_ip,
        ice_gather_timeout: ms_or(c.ice_gather_timeout_ms, d.ice_gather_timeout),
        connect_timeout: ms_or(c.connect_timeout_ms, d.connect_timeout),
        disconnect_timeout: ms_or(c.disconnect_timeout_ms, d.disconnect_timeout),
        retry_after_s: match c.retry_after_s {
            0 => d.retry_after_s,
            n => n,
        },
        known_streams: known,
        // C hosts get 422 with the fix for streams browsers cannot play (no transcoder here).
        renditions: None,
    })
}

/// Blocking on the engine's runtime from one of its own threads would deadlock or panic:
/// refuse it with a clear error (e.g. a call made from an ingest event callback).
fn not_on_runtime() -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::State(
            "this call blocks and cannot be made from an async runtime thread (an event callback)",
        ));
    }
    Ok(())
}

/// Creates a WHEP engine (its own 2 runtime threads) in `*out`, owned by the caller until
/// `fc_whep_destroy`. `config` NULL = all defaults.
///
/// # Safety
/// `config` NULL or valid with `struct_size` set; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_create(
    config: *const fc_whep_config,
    out: *mut *mut fc_whep,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        // SAFETY: NULL or valid per the contract.
        let cfg = if config.is_null() {
            WhepConfig::default()
        } else {
            whep_config(&read_in(config, "config")?)?
        };
        let engine = WhepEngine::new(cfg)?;
        *out = Box::into_raw(Box::new(fc_whep {
            engine,
            servers: Mutex::new(Vec::new()),
        }));
        Ok(())
    })
}

/// Stops the listeners, removes every viewer (their connections close) and frees the engine.
/// NULL is ignored.
///
/// # Safety
/// `whep` NULL or from `fc_whep_create`, not used afterwards, no call on it in flight.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_destroy(whep: *mut fc_whep) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(whep) }
}

/// Starts the built-in HTTP/1.1 server on `addr` (`IP:PORT`; port 0 picks one), serving
/// `POST /whep/STREAM`, `PATCH`/`DELETE /whep/STREAM/RESOURCE` and `OPTIONS` (CORS). The bound
/// `ip:port` is written to `bound` (NUL-terminated, truncated to `bound_len`; may be NULL).
/// It runs until `fc_whep_destroy`.
///
/// # Safety
/// `whep` valid; `addr` NUL-terminated; `bound` writable for `bound_len` bytes or NULL.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_listen(
    whep: *mut fc_whep,
    addr: *const c_char,
    bound: *mut c_char,
    bound_len: usize,
) -> c_int {
    boundary(|| {
        let w = arg(whep, "whep")?;
        let text = c_str(addr, "addr")?;
        let sa: SocketAddr = text
            .parse()
            .map_err(|_| Error::BadUrl(format!("{text:?} is not IP:PORT")))?;
        not_on_runtime()?;
        let h = w.engine.handle().clone();
        let listener = h.block_on(tokio::net::TcpListener::bind(sa))?;
        let local = listener.local_addr()?;
        let task = h.spawn(http::serve(listener, w.engine.clone(), None));
        lock(&w.servers).push(task);
        // SAFETY: caller guarantees bound_len writable bytes or NULL.
        unsafe { put_c_str(bound, bound_len, &local.to_string()) };
        Ok(())
    })
}

fn build_request(r: &fc_whep_request) -> Result<http::HttpRequest> {
    let method = c_str(r.method, "request.method")?;
    let path = c_str(r.path, "request.path")?;
    if r.body.is_null() && r.body_len > 0 {
        return Err(Error::InvalidArg("request.body is NULL".into()));
    }
    let body = if r.body_len == 0 {
        Bytes::new()
    } else {
        // SAFETY: caller guarantees body_len readable bytes.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(r.body, r.body_len) })
    };
    let header = |p: *const c_char, name: &str| -> Result<Option<String>> {
        if p.is_null() {
            Ok(None)
        } else {
            Ok(Some(c_str(p, name)?.to_string()))
        }
    };
    let req = http::HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        content_type: header(r.content_type, "content-type")?,
        authorization: header(r.authorization, "authorization")?,
        if_match: header(r.if_match, "if-match")?,
        origin: header(r.origin, "origin")?,
        body,
        body_too_large: false,
        peer: None,
    };
    req.validate()
        .map_err(|e| Error::InvalidArg(format!("request: {e}")))?;
    Ok(req)
}

/// Handles one request the host's own HTTP server received and returns, in `*out`, the complete
/// response to send (free it with `fc_whep_response_free`). A WHEP failure (bad SDP, unknown
/// stream, full, ...) is a response with its 4xx/5xx status, not an error code: errors are only
/// for wrong use (NULL, bad `struct_size`, malformed method or path) and leave `*out` NULL.
/// Blocks until the answer is ready (ICE gathering, at most the gather timeout); must not be
/// called from a callback running on one of the library's threads (`FC_ERR_STATE`).
///
/// # Safety
/// `whep` valid; `request` valid with `struct_size` set and its pointers as documented; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_handle(
    whep: *mut fc_whep,
    request: *const fc_whep_request,
    out: *mut *mut fc_whep_response,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let w = arg(whep, "whep")?;
        let req = build_request(&read_in(request, "request")?)?;
        not_on_runtime()?;
        let engine = w.engine.clone();
        let r = w
            .engine
            .handle()
            .block_on(async move { http::respond(&engine, None, req).await });
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (n, v) in &r.headers {
            names.push(CString::new(n.replace('\0', " ")).unwrap_or_default());
            values.push(CString::new(v.replace('\0', " ")).unwrap_or_default());
        }
        let mut body = r.body.to_vec();
        let body_len = body.len();
        body.push(0);
        let mut o = Box::new(OwnedResponse {
            public: fc_whep_response {
                struct_size: std::mem::size_of::<fc_whep_response>() as u32,
                status: r.status.into(),
                header_count: names.len(),
                header_names: std::ptr::null(),
                header_values: std::ptr::null(),
                body: std::ptr::null(),
                body_len,
            },
            name_ptrs: names.iter().map(|c| c.as_ptr()).collect(),
            value_ptrs: values.iter().map(|c| c.as_ptr()).collect(),
            names,
            values,
            body,
        });
        // The vectors' heap buffers do not move with the box: these pointers stay valid.
        o.public.header_names = o.name_ptrs.as_ptr();
        o.public.header_values = o.value_ptrs.as_ptr();
        o.public.body = o.body.as_ptr();
        *out = Box::into_raw(o).cast::<fc_whep_response>();
        Ok(())
    })
}

/// The value of header `name` (case-insensitive) in `response`, or NULL if absent. The string
/// lives as long as the response. Thread-safe.
///
/// # Safety
/// `response` NULL or from `fc_whep_handle` and not freed; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_response_header(
    response: *const fc_whep_response,
    name: *const c_char,
) -> *const c_char {
    let found = guard(|| {
        // SAFETY: per the contract.
        let r = unsafe { response.as_ref() }?;
        let name = c_str(name, "name").ok()?;
        (0..r.header_count).find_map(|i| {
            // SAFETY: header_count entries, each a valid C string owned by the response.
            let (n, v) = unsafe { (*r.header_names.add(i), *r.header_values.add(i)) };
            // SAFETY: as above.
            let n = unsafe { std::ffi::CStr::from_ptr(n) };
            n.to_bytes()
                .eq_ignore_ascii_case(name.as_bytes())
                .then_some(v)
        })
    });
    found.unwrap_or(std::ptr::null())
}

/// Frees a response of `fc_whep_handle`. NULL is ignored.
///
/// # Safety
/// `response` NULL or from `fc_whep_handle`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_response_free(response: *mut fc_whep_response) {
    // SAFETY: it was a Box<OwnedResponse> whose first field is the public part (repr(C)).
    unsafe { free_handle(response.cast::<OwnedResponse>()) }
}

/// Removes every viewer of `stream` (e.g. when its source is withdrawn); the number removed is
/// written to `*removed` (may be NULL).
///
/// # Safety
/// `whep` valid; `stream` NUL-terminated; `removed` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_close_stream(
    whep: *mut fc_whep,
    stream: *const c_char,
    removed: *mut usize,
) -> c_int {
    boundary(|| {
        let w = arg(whep, "whep")?;
        put(removed, w.engine.close_stream(c_str(stream, "stream")?));
        Ok(())
    })
}

/// Sets the viewer token of one stream (`token` non-NULL, non-empty; copied, never logged) or
/// removes it (`token` NULL): requests for that stream may present it (`Authorization: Bearer`)
/// instead of the configured token, and with it set, requests with neither get 401. Viewers
/// already watching stay. Since 0.2.
///
/// # Safety
/// `whep` valid; `stream` NUL-terminated; `token` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_set_stream_token(
    whep: *mut fc_whep,
    stream: *const c_char,
    token: *const c_char,
) -> c_int {
    boundary(|| {
        let w = arg(whep, "whep")?;
        let stream = c_str(stream, "stream")?;
        w.engine
            .set_stream_token(stream, opt_token(token, "token")?);
        Ok(())
    })
}

/// Takes WHIP publishers (`POST /whip/KEY` through `fc_whep_listen` or `fc_whep_handle`) into
/// the stream keys of `ingest`, as its RTMP and SRT listeners do: an unknown key is answered
/// 404, a key with a passphrase needs it as the bearer token (401 otherwise), a key already
/// being pushed 409; the publisher's H.264 and Opus go into the key's packet slot, and
/// `ingest`'s callbacks see it connect, leave or be refused (`FC_INGEST_REFUSED`). `ingest`
/// NULL turns WHIP off again (404); publishers already in stay until they leave. The engine
/// keeps what it needs of `ingest`, but its callbacks are still called while publishers are
/// in: turn WHIP off and close them (`fc_whep_destroy`) before the callbacks' data goes.
/// Since 0.2.
///
/// # Safety
/// `whep` valid; `ingest` valid or NULL.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_set_ingest(
    whep: *mut fc_whep,
    ingest: *mut crate::ingest::fc_ingest,
) -> c_int {
    boundary(|| {
        let w = arg(whep, "whep")?;
        let gate = if ingest.is_null() {
            None
        } else {
            let i = arg(ingest, "ingest")?;
            let e = i.inner.lock().unwrap_or_else(|e| e.into_inner());
            Some(e.push_gate("whip"))
        };
        w.engine.set_push_gate(gate);
        Ok(())
    })
}

/// Fills `*out` with the engine's counters; with `stream` non-NULL, the viewer and feed
/// counters are that stream's (zero when nobody watches it).
///
/// # Safety
/// `whep` valid; `stream` NULL or NUL-terminated; `out` valid with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_whep_get_stats(
    whep: *mut fc_whep,
    stream: *const c_char,
    out: *mut fc_whep_stats,
) -> c_int {
    boundary(|| {
        let w = arg(whep, "whep")?;
        out_size(out, "out")?;
        let stream = if stream.is_null() {
            None
        } else {
            Some(c_str(stream, "stream")?)
        };
        let s = w.engine.stats();
        let mut o = fc_whep_stats {
            struct_size: std::mem::size_of::<fc_whep_stats>() as u32,
            viewers: if stream.is_some() {
                0
            } else {
                s.viewers as u64
            },
            peer_connections: s.peer_connections as u64,
            feeds: s.feeds as u64,
            offers: s.offers,
            publishers: s.publishers as u64,
            ..Default::default()
        };
        for st in s
            .streams
            .iter()
            .filter(|st| stream.is_none_or(|n| n == st.stream))
        {
            if stream.is_some() {
                o.viewers += st.viewers as u64;
            }
            o.units += st.units;
            o.bytes += st.bytes;
            o.ring_skipped += st.ring_skipped;
            o.viewer_skipped += st.viewer_skipped;
        }
        write_out(out, &o, "out")
    })
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_whep.rs"));

//! C ABI of cuframes (`fc_cuframes_*`): GPU frames across processes with CUDA IPC.
//!
//! Pointers are `CUdeviceptr` values (`uint64_t`), streams and events are `CUstream` /
//! `CUevent` passed as `void *` so the header needs no CUDA include. Without libcuda or a GPU
//! every call on the CUDA backend returns `FC_ERR_NO_CUDA`; the host backend
//! (`FC_CUFRAMES_BACKEND_HOST`) works everywhere and moves host memory (for tests and
//! development): there a "device pointer" is a host address.

use std::ffi::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::abi::{abi_structs, blank, out_size, read_in, write_out};
use crate::{arg, arg_mut, boundary, c_str, free_handle, guard, lock, put};

abi_structs! {
    fc_cuframes_publisher_config => (
        std::mem::offset_of!(fc_cuframes_publisher_config, buffers),
        std::mem::size_of::<fc_cuframes_publisher_config>()
    ),
    fc_cuframes_subscriber_config => (4, std::mem::size_of::<fc_cuframes_subscriber_config>()),
    fc_cuframes_buffer => (
        std::mem::size_of::<fc_cuframes_buffer>(),
        std::mem::size_of::<fc_cuframes_buffer>()
    ),
    fc_cuframes_publisher_stats => (
        std::mem::size_of::<fc_cuframes_publisher_stats>(),
        std::mem::size_of::<fc_cuframes_publisher_stats>()
    ),
    fc_cuframes_frame => (
        std::mem::size_of::<fc_cuframes_frame>(),
        std::mem::size_of::<fc_cuframes_frame>()
    ),
    // Both grew in 0.2 (the packet fields); callers built against 0.1 pass the old size.
    fc_cuframes_info => (
        std::mem::size_of::<fc_cuframes_info>(),
        std::mem::offset_of!(fc_cuframes_info, proto_version)
    ),
    fc_cuframes_subscriber_stats => (
        std::mem::size_of::<fc_cuframes_subscriber_stats>(),
        std::mem::offset_of!(fc_cuframes_subscriber_stats, packets)
    ),
}
use crate::packet::{
    bytes_in, copy_out, fc_packet, fc_stream_info, packet_in, params_out, stream_info, streams_in,
};
use framecache_cuda::layout::{FC_CUFRAMES_BACKEND_CUDA, FC_CUFRAMES_BACKEND_HOST};
use framecache_cuda::layout::{FC_CUFRAMES_POLICY_REVOKE, FC_CUFRAMES_POLICY_SKIP};
use framecache_cuda::{
    cuda_available, BackendChoice, ContextRef, Hold, Policy, Publisher, PublisherConfig,
    Subscriber, SubscriberConfig,
};
use framecache_shm::error::{Error, Result};
use framecache_shm::format::PixelFormat;

/// A cuframes publisher. Opaque; one thread at a time (calls are serialised inside).
pub struct fc_cuframes_publisher {
    inner: Mutex<Publisher>,
}

/// A cuframes subscriber. Opaque; one thread at a time (calls are serialised inside).
pub struct fc_cuframes_subscriber {
    inner: Mutex<Subscriber>,
    /// Holds handed out, by token, so a C caller never passes us a pointer back.
    holds: Mutex<Vec<(u64, Hold)>>,
    next_token: AtomicU64,
}

/// Settings of `fc_cuframes_publisher_create`. Zero fields take the default named.
/// Required fields (what the least `struct_size` must cover): `format`, `width`, `height`.
#[repr(C)]
pub struct fc_cuframes_publisher_config {
    /// Set by the caller to `sizeof(fc_cuframes_publisher_config)`.
    pub struct_size: u32,
    /// Pixel format FourCC (`FC_FOURCC_NV12`, `FC_FOURCC_P010`, `FC_FOURCC_BGRA`, ...).
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Buffers in the pool, 2..=64 (0 = 8).
    pub buffers: u32,
    /// Subscriber slots, 1..=64 (0 = 8).
    pub max_subscribers: u32,
    /// `FC_CUFRAMES_POLICY_REVOKE` (0 = this) or `FC_CUFRAMES_POLICY_SKIP`.
    pub policy: u32,
    /// `FC_CUFRAMES_BACKEND_CUDA` (0 = this) or `FC_CUFRAMES_BACKEND_HOST`.
    pub backend: u32,
    /// CUDA device ordinal (ignored when `cuda_context` is set).
    pub device: i32,
    /// Root directory, NULL = `$FC_SHM_DIR` or `/dev/shm/framecache`.
    pub root: *const c_char,
    /// Unit of `pts`/`duration` in seconds: numerator (0 = unknown), stored for subscribers.
    pub time_base_num: u32,
    /// Time base denominator (0 = unknown).
    pub time_base_den: u32,
    /// Nominal frame rate numerator (0 = unknown or variable), stored for subscribers.
    pub rate_num: u32,
    /// Frame rate denominator.
    pub rate_den: u32,
    /// A `CUcontext` of the caller to allocate and record on (NULL = the device's primary
    /// context). Streams passed to acquire/publish must belong to the context used. A given
    /// context must outlive the publisher.
    pub cuda_context: *mut c_void,
    /// Encoded streams published beside the frames (protocol version 2, CUFRAMES.md §10):
    /// 0 = frames only, 1..=8 = a packet slot `cuframes-KEY-packets` with these streams (the
    /// key then has at most 47 characters). Since 0.2.
    pub packet_stream_count: u32,
    /// `packet_stream_count` stream descriptions (codec, time base, size and rate or sample
    /// rate and channels, tag), each with `struct_size` set; read during the call only.
    pub packet_streams: *const fc_stream_info,
    /// Payload bytes of the packet slot (0 = 32 MiB; a multiple of 4096). A packet may take a
    /// quarter of it.
    pub packet_payload_size: u64,
}

/// Settings of `fc_cuframes_subscriber_open`. NULL config = CUDA device 0, default root.
/// Required fields (what the least `struct_size` must cover): none.
#[repr(C)]
pub struct fc_cuframes_subscriber_config {
    /// Set by the caller to `sizeof(fc_cuframes_subscriber_config)`.
    pub struct_size: u32,
    /// `FC_CUFRAMES_BACKEND_CUDA` (0 = this) or `FC_CUFRAMES_BACKEND_HOST`.
    pub backend: u32,
    /// CUDA device ordinal (ignored when `cuda_context` is set).
    pub device: i32,
    /// Root directory, NULL = default.
    pub root: *const c_char,
    /// A `CUcontext` of the caller to map buffers and wait in (NULL = the device's primary
    /// context). Streams passed to acquire/release must belong to the context used. A given
    /// context must outlive the subscriber.
    pub cuda_context: *mut c_void,
}

/// What a subscriber is attached to (`fc_cuframes_subscriber_get_info`).
#[repr(C)]
#[derive(Default)]
pub struct fc_cuframes_info {
    /// Set by the caller to `sizeof(fc_cuframes_info)`.
    pub struct_size: u32,
    /// Pixel format FourCC.
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Planes in use.
    pub plane_count: u32,
    /// Pitch of each plane.
    pub pitches: [u32; 4],
    /// Buffers in the pool.
    pub buffers: u32,
    /// `FC_CUFRAMES_BACKEND_*` of the publisher.
    pub backend: u32,
    /// `FC_CUFRAMES_POLICY_*` of the publisher.
    pub policy: u32,
    /// Time base of `pts`/`duration` (0/0 = unknown).
    pub time_base_num: u32,
    /// Time base denominator.
    pub time_base_den: u32,
    /// Nominal frame rate (0/0 = unknown or variable).
    pub rate_num: u32,
    /// Frame rate denominator.
    pub rate_den: u32,
    /// Process id of the publisher.
    pub publisher_pid: u32,
    /// Random identity of this publisher run (changes when it restarts).
    pub epoch: u64,
    /// Protocol version agreed with the publisher (1 or 2). Since 0.2.
    pub proto_version: u32,
    /// Streams of the packet slot beside the frames (0 = none: then packet calls return
    /// `FC_ERR_NO_PACKET_RING`). Since 0.2.
    pub packet_stream_count: u32,
}

/// A buffer to write the next frame into (`fc_cuframes_publisher_acquire`).
#[repr(C)]
#[derive(Default)]
pub struct fc_cuframes_buffer {
    /// Set by the caller to `sizeof(fc_cuframes_buffer)`.
    pub struct_size: u32,
    /// Buffer index in the pool.
    pub index: u32,
    /// Planes in use.
    pub plane_count: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format FourCC.
    pub format: u32,
    /// `CUdeviceptr` of each plane.
    pub planes: [u64; 4],
    /// Pitch (bytes per row) of each plane.
    pub pitches: [u32; 4],
    /// `CUdeviceptr` of the whole allocation.
    pub base: u64,
    /// Bytes of the allocation.
    pub size: u64,
}

/// A frame held by a subscriber (`fc_cuframes_subscriber_acquire`). Valid until released.
#[repr(C)]
pub struct fc_cuframes_frame {
    /// Set by the caller to `sizeof(fc_cuframes_frame)`.
    pub struct_size: u32,
    /// Planes in use.
    pub plane_count: u32,
    /// Identifies the hold for `fc_cuframes_subscriber_release`.
    pub token: u64,
    /// Frame number (1, 2, ...; restarts with a new publisher).
    pub seq: u64,
    /// Presentation timestamp (`FC_NOPTS` = none).
    pub pts: i64,
    /// Duration (0 = unknown).
    pub duration: i64,
    /// `CLOCK_MONOTONIC` when it was published.
    pub publish_ns: u64,
    /// Published frames this subscriber never got, just before this one.
    pub missed: u64,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
    /// Buffer index.
    pub buffer: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format FourCC.
    pub format: u32,
    /// Pitch of each plane.
    pub pitches: [u32; 4],
    /// `CUdeviceptr` of each plane, in this process.
    pub planes: [u64; 4],
    /// The publisher's ready event (`CUevent`) for this frame, already waited on by the stream
    /// given to acquire; other streams may `cuStreamWaitEvent` on it too.
    pub ready_event: *mut c_void,
}

/// Counters of a publisher.
#[repr(C)]
pub struct fc_cuframes_publisher_stats {
    /// Set by the caller to `sizeof(fc_cuframes_publisher_stats)`.
    pub struct_size: u32,
    /// Subscribers attached now.
    pub subscribers: u32,
    /// Frames published.
    pub published: u64,
    /// Frames skipped (skip policy).
    pub skipped: u64,
    /// Holds revoked (revoke policy).
    pub revoked: u64,
}

/// Counters of a subscriber.
#[repr(C)]
pub struct fc_cuframes_subscriber_stats {
    /// Set by the caller to `sizeof(fc_cuframes_subscriber_stats)`.
    pub struct_size: u32,
    /// 1 while a publisher is attached.
    pub attached: u32,
    /// Frames acquired.
    pub frames: u64,
    /// Published frames never acquired.
    pub missed: u64,
    /// Revocation notices received.
    pub revoked: u64,
    /// Releases that found the frame overwritten.
    pub torn: u64,
    /// Attaches (1 + re-attaches to restarted publishers).
    pub attaches: u64,
    /// Encoded packets delivered. Since 0.2.
    pub packets: u64,
    /// Packets passed over (fell more than the ring behind, or waited for a keyframe).
    pub packets_skipped: u64,
    /// Packets found overwritten while copied (never delivered).
    pub packet_overruns: u64,
}

/// # Safety
/// `ctx` NULL or a live `CUcontext` that outlives what is opened on it.
unsafe fn backend(kind: u32, device: i32, ctx: *mut c_void) -> Result<BackendChoice> {
    match kind {
        // SAFETY: the caller's contract.
        0 | FC_CUFRAMES_BACKEND_CUDA if !ctx.is_null() => {
            Ok(BackendChoice::CudaContext(unsafe { ContextRef::new(ctx) }))
        }
        0 | FC_CUFRAMES_BACKEND_CUDA => Ok(BackendChoice::Cuda(device)),
        FC_CUFRAMES_BACKEND_HOST => Ok(BackendChoice::Host),
        k => Err(Error::InvalidArg(format!("backend {k}"))),
    }
}

fn root(p: *const c_char) -> Result<Option<PathBuf>> {
    Ok(if p.is_null() {
        None
    } else {
        Some(PathBuf::from(c_str(p, "root")?))
    })
}

/// 1 if CUDA is usable here (libcuda loads, `cuInit` succeeds, a device exists), else 0.
/// Never fails; loads libcuda at most once.
#[no_mangle]
pub extern "C" fn fc_cuframes_cuda_available() -> c_int {
    guard(cuda_available) as c_int
}

/// Creates the publisher of `key`: allocates the buffer pool, the control block and the
/// socket. The caller owns `*out` until `fc_cuframes_publisher_destroy`. `FC_ERR_BUSY` if a
/// live publisher has the key; `FC_ERR_NO_CUDA` without CUDA.
///
/// # Safety
/// `key` NUL-terminated; `config` valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_create(
    key: *const c_char,
    config: *const fc_cuframes_publisher_config,
    out: *mut *mut fc_cuframes_publisher,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let key = c_str(key, "key")?;
        let c = read_in(config, "config")?;
        let format = PixelFormat::from_fourcc(c.format)?;
        let mut cfg = PublisherConfig::new(format, c.width, c.height);
        if c.buffers != 0 {
            cfg.buffers = c.buffers;
        }
        if c.max_subscribers != 0 {
            cfg.max_subscribers = c.max_subscribers;
        }
        cfg.policy = match c.policy {
            0 | FC_CUFRAMES_POLICY_REVOKE => Policy::Revoke,
            FC_CUFRAMES_POLICY_SKIP => Policy::Skip,
            p => return Err(Error::InvalidArg(format!("policy {p}"))),
        };
        // SAFETY: cuda_context per the field's contract.
        cfg.backend = unsafe { backend(c.backend, c.device, c.cuda_context)? };
        cfg.root = root(c.root)?;
        cfg.time_base = (c.time_base_num, c.time_base_den);
        cfg.rate = (c.rate_num, c.rate_den);
        if c.packet_stream_count != 0 {
            // SAFETY: `packet_stream_count` readable entries per the field's contract.
            cfg.packet_streams =
                unsafe { streams_in(c.packet_streams, c.packet_stream_count, "packet_streams")? };
            cfg.packet_payload_size = c.packet_payload_size;
        }
        let p = Publisher::create(key, &cfg)?;
        *out = Box::into_raw(Box::new(fc_cuframes_publisher {
            inner: Mutex::new(p),
        }));
        Ok(())
    })
}

/// Takes a buffer for the next frame. `stream` (a `CUstream`, NULL = default stream) is made
/// to wait on the GPU for every subscriber that read the buffer before; the CPU never waits
/// for a subscriber. It waits only while the GPU has not finished the frame last written into
/// this buffer (N - 1 frames ago): at most N - 1 frames are in flight.
/// Write the frame on `stream`, then call `fc_cuframes_publisher_publish`. `FC_ERR_NO_BUFFER`
/// when every buffer is held and the policy is skip; `FC_ERR_STATE` if a buffer is already
/// acquired.
///
/// # Safety
/// `publisher` from `fc_cuframes_publisher_create`; `out` writable, `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_acquire(
    publisher: *const fc_cuframes_publisher,
    stream: *mut c_void,
    out: *mut fc_cuframes_buffer,
) -> c_int {
    boundary(|| {
        let p = arg(publisher, "publisher")?;
        out_size(out, "out")?;
        let mut p = lock(&p.inner);
        let b = p.acquire(stream as u64)?;
        let g = p.geometry();
        let o = fc_cuframes_buffer {
            struct_size: 0,
            index: b.index,
            plane_count: b.plane_count,
            width: g.width,
            height: g.height,
            format: g.format.fourcc(),
            planes: b.planes,
            pitches: b.pitches,
            base: b.base,
            size: b.size,
        };
        write_out(out, &o, "out")
    })
}

/// Publishes the acquired buffer once the work queued on `stream` is done (records the ready
/// event there; no CPU wait) and makes it the newest frame. `*seq_out` (may be NULL) gets its
/// frame number. `FC_ERR_STATE` without an acquired buffer.
///
/// # Safety
/// `publisher` from `fc_cuframes_publisher_create`; `seq_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_publish(
    publisher: *const fc_cuframes_publisher,
    stream: *mut c_void,
    pts: i64,
    duration: i64,
    flags: u32,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let p = arg(publisher, "publisher")?;
        let seq = lock(&p.inner).publish(stream as u64, pts, duration, flags)?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Reads the publisher's counters.
///
/// # Safety
/// `publisher` valid; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_get_stats(
    publisher: *const fc_cuframes_publisher,
    out: *mut fc_cuframes_publisher_stats,
) -> c_int {
    boundary(|| {
        let p = arg(publisher, "publisher")?;
        out_size(out, "out")?;
        let s = lock(&p.inner).stats();
        let mut o: fc_cuframes_publisher_stats = blank();
        o.subscribers = s.subscribers;
        o.published = s.published;
        o.skipped = s.skipped;
        o.revoked = s.revoked;
        write_out(out, &o, "out")
    })
}

/// Stops the publisher: subscribers get `BYE` (then `FC_ERR_WRITER_GONE`), the socket and the
/// control block are removed, the pool is freed. NULL is ignored.
///
/// # Safety
/// NULL or from `fc_cuframes_publisher_create`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_destroy(publisher: *mut fc_cuframes_publisher) {
    // SAFETY: per the contract.
    unsafe { free_handle(publisher) }
}

/// Attaches to the publisher of `key` (handshake over its socket, buffers mapped). The caller
/// owns `*out` until `fc_cuframes_subscriber_close`. `FC_ERR_NOT_FOUND` if no publisher runs;
/// `FC_ERR_REJECTED` if its subscriber slots are full; `FC_ERR_NO_CUDA` without CUDA.
///
/// # Safety
/// `key` NUL-terminated; `config` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_open(
    key: *const c_char,
    config: *const fc_cuframes_subscriber_config,
    out: *mut *mut fc_cuframes_subscriber,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let key = c_str(key, "key")?;
        let mut cfg = SubscriberConfig::default();
        // SAFETY: NULL or valid per the contract.
        if !config.is_null() {
            let c = read_in(config, "config")?;
            // SAFETY: cuda_context per the field's contract.
            cfg.backend = unsafe { backend(c.backend, c.device, c.cuda_context)? };
            cfg.root = root(c.root)?;
        }
        let s = Subscriber::open(key, &cfg)?;
        *out = Box::into_raw(Box::new(fc_cuframes_subscriber {
            inner: Mutex::new(s),
            holds: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(1),
        }));
        Ok(())
    })
}

/// Holds the newest frame not yet taken, waiting up to `timeout_ms` (negative = forever).
/// `stream` (NULL = default stream) is made to wait for the publisher's writes on the GPU.
/// Use the planes on `stream` (or streams that wait on `ready_event`), then release.
/// `FC_ERR_TIMEOUT` if no frame came; `FC_ERR_WRITER_GONE` if the publisher left and none came
/// back in time (a returning publisher is attached again automatically).
///
/// # Safety
/// `subscriber` valid; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_acquire(
    subscriber: *const fc_cuframes_subscriber,
    stream: *mut c_void,
    timeout_ms: c_int,
    out: *mut fc_cuframes_frame,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        out_size(out, "out")?;
        let h = lock(&s.inner).acquire(stream as u64, super::timeout(timeout_ms))?;
        let token = s.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&s.holds).push((token, h));
        let o = fc_cuframes_frame {
            struct_size: 0,
            plane_count: h.plane_count,
            token,
            seq: h.meta.seq,
            pts: h.meta.pts,
            duration: h.meta.duration,
            publish_ns: h.meta.publish_ns,
            missed: h.missed,
            flags: h.meta.flags,
            buffer: h.meta.buffer,
            width: h.meta.width,
            height: h.meta.height,
            format: h.meta.format,
            pitches: h.pitches,
            planes: h.planes,
            ready_event: h.ready_event as *mut c_void,
        };
        write_out(out, &o, "out")
    })
}

/// Releases a held frame after the work queued on `stream` (records this subscriber's done
/// event there; the publisher's next write of the buffer waits for it on the GPU).
/// `FC_ERR_OVERWRITTEN`: the publisher revoked the hold (this subscriber was too slow) and
/// what was computed from the frame must be discarded. `FC_ERR_WRITER_GONE`: the publisher
/// left. `FC_ERR_INVALID_ARG`: not a frame held by this subscriber (e.g. released twice).
/// The frame is released in every case.
///
/// # Safety
/// `subscriber` valid; `frame` as filled by acquire.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_release(
    subscriber: *const fc_cuframes_subscriber,
    frame: *const fc_cuframes_frame,
    stream: *mut c_void,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        let f = arg(frame, "frame")?;
        let h = {
            let mut holds = lock(&s.holds);
            let k = holds
                .iter()
                .position(|(t, _)| *t == f.token)
                .ok_or_else(|| Error::InvalidArg("frame is not held (released twice?)".into()))?;
            holds.swap_remove(k).1
        };
        lock(&s.inner).release(&h, stream as u64)
    })
}

/// Describes the publisher the subscriber is attached to: geometry, time base, frame rate.
/// Attaches first if needed, waiting up to `timeout_ms` (negative = forever) for a publisher;
/// `FC_ERR_WRITER_GONE` if none is there in time. Call it before the first acquire to set up
/// the consumer; a restarted publisher may differ (compare `epoch`).
///
/// # Safety
/// `subscriber` valid; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_get_info(
    subscriber: *const fc_cuframes_subscriber,
    timeout_ms: c_int,
    out: *mut fc_cuframes_info,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        out_size(out, "out")?;
        let h = lock(&s.inner).info(super::timeout(timeout_ms))?;
        let mut o = fc_cuframes_info {
            struct_size: 0,
            format: h.format,
            width: h.width,
            height: h.height,
            plane_count: h.plane_count,
            pitches: h.pitches,
            buffers: h.buffer_count,
            backend: h.backend,
            policy: h.policy,
            time_base_num: h.time_base_num,
            time_base_den: h.time_base_den,
            rate_num: h.rate_num,
            rate_den: h.rate_den,
            publisher_pid: h.publisher_pid,
            epoch: h.epoch,
            proto_version: 0,
            packet_stream_count: 0,
        };
        let mut sub = lock(&s.inner);
        o.proto_version = u32::from(sub.stats().proto_version);
        o.packet_stream_count = match sub.packet_streams(std::time::Duration::ZERO) {
            Ok(v) => v.len() as u32,
            Err(Error::NoPacketRing(_)) => 0,
            Err(e) => return Err(e),
        };
        write_out(out, &o, "out")
    })
}

/// Reads the subscriber's counters.
///
/// # Safety
/// `subscriber` valid; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_get_stats(
    subscriber: *const fc_cuframes_subscriber,
    out: *mut fc_cuframes_subscriber_stats,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        out_size(out, "out")?;
        let st = lock(&s.inner).stats();
        let mut o: fc_cuframes_subscriber_stats = blank();
        o.attached = st.attached as u32;
        o.frames = st.frames;
        o.missed = st.missed;
        o.revoked = st.revoked;
        o.torn = st.torn;
        o.attaches = st.attaches;
        o.packets = st.packets;
        o.packets_skipped = st.packets_skipped;
        o.packet_overruns = st.packet_overruns;
        write_out(out, &o, "out")
    })
}

/// Detaches (the publisher drops this subscriber's holds) and frees the handle. Frames still
/// held become invalid. NULL is ignored.
///
/// # Safety
/// NULL or from `fc_cuframes_subscriber_open`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_close(subscriber: *mut fc_cuframes_subscriber) {
    // SAFETY: per the contract.
    unsafe { free_handle(subscriber) }
}

/// Sets the codec parameters of packet stream `stream` (`size` bytes at `data`: H.264/HEVC
/// Annex-B parameter sets, the AAC AudioSpecificConfig, the OpusHead; e.g. an encoder's
/// `extradata`); their generation goes to `*gen_out` if not NULL. The next packet of the stream
/// carries `FC_PACKET_CONFIG_CHANGE`. `FC_ERR_NO_PACKET_RING` if the publisher declared no
/// packet streams; `FC_ERR_OVERSIZED` beyond the slot's parameter capacity. Since 0.2.
///
/// # Safety
/// `publisher` from `fc_cuframes_publisher_create`; `data` readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_set_codec_params(
    publisher: *const fc_cuframes_publisher,
    stream: u32,
    data: *const u8,
    size: usize,
    gen_out: *mut u32,
) -> c_int {
    boundary(|| {
        let p = arg(publisher, "publisher")?;
        // SAFETY: `size` readable bytes per the contract.
        let bytes = unsafe { bytes_in(data, size)? };
        let gen = lock(&p.inner).set_codec_params(stream, bytes)?;
        put(gen_out, gen);
        Ok(())
    })
}

/// Publishes one encoded packet beside the frames (`packet->stream`, `flags`, `pts`, `dts`,
/// `data`, `size`; the payload is copied). Its packet seq goes to `*seq_out` if not NULL. Never
/// waits for subscribers. `FC_ERR_NO_PACKET_RING` if no packet streams were declared;
/// `FC_ERR_OVERSIZED` if larger than a quarter of the payload ring (nothing is published).
/// Since 0.2.
///
/// # Safety
/// `publisher` valid; `packet` valid with `data` readable for `size` bytes; `seq_out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_publisher_publish_packet(
    publisher: *const fc_cuframes_publisher,
    packet: *const fc_packet,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let p = arg(publisher, "publisher")?;
        let pk: fc_packet = read_in(packet, "packet")?;
        // SAFETY: `data` readable for `size` bytes per the contract.
        let seq = lock(&p.inner).publish_packet(&unsafe { packet_in(&pk)? })?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Describes packet stream `index` of the publisher's packet slot in `*out` (attaching first,
/// waiting up to `timeout_ms`, negative = forever). `FC_ERR_NO_PACKET_RING` without one;
/// `FC_ERR_INVALID_ARG` for an index past `fc_cuframes_info.packet_stream_count`. Since 0.2.
///
/// # Safety
/// `subscriber` valid; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_get_packet_stream(
    subscriber: *const fc_cuframes_subscriber,
    index: u32,
    timeout_ms: c_int,
    out: *mut fc_stream_info,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        out_size(out, "out")?;
        let streams = lock(&s.inner).packet_streams(super::timeout(timeout_ms))?;
        let st = streams.get(index as usize).ok_or_else(|| {
            Error::InvalidArg(format!("packet stream {index} of {}", streams.len()))
        })?;
        write_out(out, &stream_info(st), "out")
    })
}

/// Waits up to `timeout_ms` (negative = forever) for the next encoded packet beside the frames
/// and copies it into `buf` (`cap` bytes); `*packet` describes it (`data` = `buf`). A new
/// subscriber starts at a keyframe. `FC_ERR_BUFFER_TOO_SMALL` leaves the packet for a retry
/// (`fc_last_error` names the size needed); `FC_ERR_PACKET_OVERRUN` if it was overwritten while
/// copied (nothing delivered; the next packet is a keyframe); `FC_ERR_NO_PACKET_RING` if the
/// publisher has no packet slot (or speaks version 1); `FC_ERR_TIMEOUT`;
/// `FC_ERR_WRITER_GONE` when the publisher left and none came back in time (a returning one is
/// attached again; its first packet carries `FC_PACKET_DISCONTINUITY`). Since 0.2.
///
/// # Safety
/// `subscriber` valid; `buf` writable for `cap` bytes; `packet` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_next_packet(
    subscriber: *const fc_cuframes_subscriber,
    buf: *mut u8,
    cap: usize,
    packet: *mut fc_packet,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        let t = super::timeout(timeout_ms);
        // SAFETY: `buf` and `packet` per the contract.
        unsafe {
            copy_out(buf, cap, packet, |out| {
                lock(&s.inner).next_packet_copy(out, t)
            })
        }
    })
}

/// Copies the codec parameters of packet stream `stream`, generation `gen` (0 = current; a
/// packet's `params_gen` names the ones that apply to it) into `buf` (`cap` bytes).
/// `*size_out` gets the size (also on `FC_ERR_BUFFER_TOO_SMALL`), `*gen_out` the generation if
/// not NULL. `FC_ERR_NO_CODEC_PARAMS` if there are none or that generation is gone;
/// `FC_ERR_NO_PACKET_RING` without a packet slot. Since 0.2.
///
/// # Safety
/// `subscriber` valid; `buf` writable for `cap` bytes (may be NULL if `cap` is 0); `size_out`
/// writable; `gen_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fc_cuframes_subscriber_get_codec_params(
    subscriber: *const fc_cuframes_subscriber,
    stream: u32,
    gen: u32,
    buf: *mut u8,
    cap: usize,
    size_out: *mut usize,
    gen_out: *mut u32,
) -> c_int {
    boundary(|| {
        let s = arg(subscriber, "subscriber")?;
        let size_out = arg_mut(size_out, "size_out")?;
        let (g, data) = lock(&s.inner).codec_params(stream, gen)?;
        // SAFETY: `buf` and `gen_out` per the contract.
        unsafe { params_out(g, &data, buf, cap, size_out, gen_out) }
    })
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_cuframes.rs"));

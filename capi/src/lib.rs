//! The C ABI (`include/framecache.h`, generated from this file by cbindgen).
//!
//! Conventions, for every function here:
//! - Return value: `FC_OK` (0) or a negative `FC_ERR_*` code; `fc_strerror` names it and
//!   `fc_last_error` gives the detail of the last failure on the calling thread.
//! - NULL where a pointer is required, a config whose `struct_size` is too small, or an
//!   impossible value gives `FC_ERR_INVALID_ARG`.
//! - Handles are opaque; a `*_create`/`*_open` hands ownership to the caller, who releases it with
//!   the matching `*_close` exactly once (NULL is accepted and ignored).
//! - A handle may be used from any thread, one call at a time per handle is not required: calls
//!   on one handle are serialised internally. Different handles are independent.
//! - No Rust panic crosses this boundary: one is caught and reported as `FC_ERR_PANIC`.

#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use framecache_shm::error::{self, Error, Result};
use framecache_shm::format::PixelFormat;
use framecache_shm::packet::{
    Packet, PacketInfo, PacketReader, PacketReaderConfig, PacketSlotConfig, PacketStart,
    PacketWriter, StreamConfig, MAX_STREAMS,
};
use framecache_shm::ring::{
    self, Consumer, ConsumerConfig, FrameInfo, FrameMeta, Producer, ReadMode, SlotConfig, StartAt,
};
use framecache_shm::slot;

pub mod cuframes;
pub mod whep;
pub use whep::*;

pub use framecache_shm::error::{
    FC_ERR_BAD_MAGIC, FC_ERR_BAD_SLOT_ID, FC_ERR_BUFFER_TOO_SMALL, FC_ERR_BUSY, FC_ERR_CORRUPT,
    FC_ERR_INVALID_ARG, FC_ERR_IO, FC_ERR_NOT_FOUND, FC_ERR_NO_SPACE, FC_ERR_OVERWRITTEN,
    FC_ERR_PANIC, FC_ERR_PERMISSION, FC_ERR_STATE, FC_ERR_TIMEOUT, FC_ERR_TRUNCATED,
    FC_ERR_UNSUPPORTED_FORMAT, FC_ERR_VERSION, FC_ERR_WRITER_GONE, FC_ERR_WRONG_KIND, FC_OK,
};
pub use framecache_shm::error::{
    FC_ERR_NO_CODEC_PARAMS, FC_ERR_NO_PACKET_RING, FC_ERR_OVERSIZED, FC_ERR_PACKET_OVERRUN,
};

/// `fc_consumer_config.mode`: every frame in order (skipping, and counting, when a ring behind).
pub const FC_MODE_SEQUENTIAL: u32 = 0;
/// `fc_consumer_config.mode`: always the newest frame.
pub const FC_MODE_LATEST: u32 = 1;
/// `fc_consumer_config.start`: start at the newest published frame.
pub const FC_START_NEWEST: u32 = 0;
/// `fc_consumer_config.start`: start at the oldest frame still in the ring.
pub const FC_START_OLDEST: u32 = 1;
/// `fc_consumer_config.start`: start at the next frame published.
pub const FC_START_NEXT: u32 = 2;
/// `fc_slot_config.flags`: keep the slot file when the producer closes.
pub const FC_SLOT_KEEP_ON_CLOSE: u32 = 1;
/// `fc_slot_status.kind`: a frame ring.
pub const FC_KIND_FRAMES: u32 = 1;

/// An open frame-slot writer. Opaque.
pub struct fc_producer {
    inner: Mutex<Producer>,
}

/// An open frame-slot reader. Opaque.
pub struct fc_consumer {
    inner: Mutex<Consumer>,
}

/// How to create a frame slot. Set `struct_size = sizeof(fc_slot_config)`; zeroed fields take
/// their defaults.
#[repr(C)]
pub struct fc_slot_config {
    /// `sizeof(fc_slot_config)`.
    pub struct_size: u32,
    /// Pixel format, an `FC_FOURCC_*` value (required).
    pub fourcc: u32,
    /// Width in pixels (required).
    pub width: u32,
    /// Height in pixels (required).
    pub height: u32,
    /// Frame rate numerator (0 with `fps_den` 0 = 30/1).
    pub fps_num: u32,
    /// Frame rate denominator (0 = 1).
    pub fps_den: u32,
    /// Frame slots in the ring (0 = 120).
    pub depth: u32,
    /// File mode (0 = 0660).
    pub mode: u32,
    /// Row alignment in bytes, a power of two (0 = 1, tight rows).
    pub row_align: u32,
    /// `FC_SLOT_*` flags.
    pub flags: u32,
    /// Short source-type label, or NULL. Copied.
    pub source_type: *const c_char,
    /// Labels `key=value` separated by newlines, or NULL. Copied.
    pub labels: *const c_char,
}

/// Reader options. Set `struct_size = sizeof(fc_consumer_config)`, or pass NULL for defaults
/// (sequential, starting at the newest frame).
#[repr(C)]
pub struct fc_consumer_config {
    /// `sizeof(fc_consumer_config)`.
    pub struct_size: u32,
    /// `FC_MODE_SEQUENTIAL` or `FC_MODE_LATEST`.
    pub mode: u32,
    /// `FC_START_NEWEST`, `FC_START_OLDEST` or `FC_START_NEXT`.
    pub start: u32,
}

/// A frame handed out by `fc_consumer_read` (a view into shared memory) or
/// `fc_consumer_read_copy` (`data` = the caller's buffer). Set `struct_size = sizeof(fc_frame)`
/// before the call.
#[repr(C)]
pub struct fc_frame {
    /// `sizeof(fc_frame)`, set by the caller.
    pub struct_size: u32,
    /// Pixel format FourCC.
    pub fourcc: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Planes in use.
    pub plane_count: u32,
    /// `FC_FRAME_*` flags.
    pub flags: u32,
    /// Bytes per row of each plane.
    pub strides: [u32; 4],
    /// Offset of each plane from `data`.
    pub offsets: [u32; 4],
    /// The frame's bytes. For views: valid until the next read or close on this consumer, and
    /// only trustworthy if `fc_consumer_check` says `FC_OK` after use.
    pub data: *const u8,
    /// Bytes at `data`.
    pub size: u64,
    /// Sequence number.
    pub seq: u64,
    /// Presentation timestamp.
    pub pts: i64,
    /// Capture time, CLOCK_REALTIME ns.
    pub capture_ns: u64,
    /// Publish time, CLOCK_MONOTONIC ns.
    pub publish_ns: u64,
    /// Frames skipped between the previous delivered frame and this one.
    pub skipped: u64,
}

/// Reader counters. Set `struct_size = sizeof(fc_consumer_counters)` before the call.
#[repr(C)]
pub struct fc_consumer_counters {
    /// `sizeof(fc_consumer_counters)`, set by the caller.
    pub struct_size: u32,
    /// 1 if the writer is alive, else 0.
    pub writer_alive: u32,
    /// Frames delivered.
    pub frames_read: u64,
    /// Frames passed over without delivery.
    pub frames_skipped: u64,
    /// Reads found overwritten during the read.
    pub overwritten: u64,
    /// Re-attachments to a re-created slot.
    pub reattached: u64,
    /// Frames published by the writer of the attached slot.
    pub writer_frames: u64,
    /// Publish→read latency of the last frame, ns.
    pub latency_last_ns: u64,
    /// Mean publish→read latency, ns.
    pub latency_avg_ns: u64,
    /// Largest publish→read latency, ns.
    pub latency_max_ns: u64,
}

/// What `fc_slot_info` / `fc_slot_list` report of a slot. Set `struct_size` before the call
/// (for `fc_slot_list`, in the first element).
#[repr(C)]
pub struct fc_slot_status {
    /// `sizeof(fc_slot_status)`, set by the caller.
    pub struct_size: u32,
    /// `FC_KIND_*`.
    pub kind: u32,
    /// Slot id, NUL-terminated.
    pub id: [c_char; 72],
    /// Source-type label, NUL-terminated.
    pub source_type: [c_char; 16],
    /// Pixel format FourCC.
    pub fourcc: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate numerator.
    pub fps_num: u32,
    /// Frame rate denominator.
    pub fps_den: u32,
    /// Ring depth.
    pub depth: u32,
    /// Writer pid recorded at creation.
    pub writer_pid: u32,
    /// 1 if that writer is alive.
    pub writer_alive: u32,
    /// Bytes per frame.
    pub frame_size: u64,
    /// Frames (frame slot) or packets (packet slot) published.
    pub frames_written: u64,
    /// Creation time, CLOCK_REALTIME ns.
    pub epoch_ns: u64,
    /// CLOCK_MONOTONIC ns of the last publish.
    pub last_publish_ns: u64,
    /// Packet slots: number of streams (0 for frame slots).
    pub stream_count: u32,
    /// Packet slots: `FC_CODEC_*` of each stream.
    pub codecs: [u32; 8],
    /// Packet slots: payload bytes published.
    pub bytes_published: u64,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(e: &Error) {
    let text = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = text);
}

/// The one panic boundary: runs `f`, maps its error to a code (remembering the detail for
/// `fc_last_error`), and turns a panic into `FC_ERR_PANIC`.
fn boundary(f: impl FnOnce() -> Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => FC_OK,
        Ok(Err(e)) => {
            set_last_error(&e);
            e.code()
        }
        Err(_) => {
            set_last_error(&Error::Panic);
            FC_ERR_PANIC
        }
    }
}

fn arg<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the caller promises a valid pointer or NULL.
    unsafe { p.as_ref() }.ok_or_else(|| Error::InvalidArg(format!("{what} is NULL")))
}

fn arg_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: the caller promises a valid pointer or NULL.
    unsafe { p.as_mut() }.ok_or_else(|| Error::InvalidArg(format!("{what} is NULL")))
}

/// Frees a handle the C side gives back (`*_close`, `*_destroy`): NULL is ignored, and a panic
/// in its destructor stays on this side of the boundary.
///
/// # Safety
/// `p` is NULL or came from `Box::into_raw` of a `T`, and is not used again.
unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: ownership returns to us exactly once, per the caller's contract.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

/// Checks the `struct_size` a caller declared for a struct it passes.
fn sized<T>(declared: u32, what: &str) -> Result<()> {
    if (declared as usize) < std::mem::size_of::<T>() {
        return Err(Error::InvalidArg(format!(
            "{what}.struct_size is {declared}, expected at least {}",
            std::mem::size_of::<T>()
        )));
    }
    Ok(())
}

fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::InvalidArg(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, NUL-terminated per the contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::InvalidArg(format!("{what} is not UTF-8")))
}

fn opt_c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        Ok("")
    } else {
        c_str(p, what)
    }
}

/// `key=value` lines (the C form of labels) as pairs.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::InvalidArg(format!("label {line:?} is not key=value")))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Copies `s` into a fixed C string field, truncated, NUL-terminated.
fn copy_c_str(dst: &mut [c_char], s: &str) {
    dst.fill(0);
    let n = dst.len() - 1;
    for (d, b) in dst.iter_mut().zip(s.bytes().take(n)) {
        *d = b as c_char;
    }
}

/// Writes `v` through an optional out-pointer (NULL = the caller does not want it).
fn put<T>(p: *mut T, v: T) {
    // SAFETY: the caller promises a writable pointer or NULL.
    if let Some(o) = unsafe { p.as_mut() } {
        *o = v;
    }
}

/// Copies `s` into a caller's buffer of `len` bytes (NUL-terminated, truncated); NULL or an
/// empty buffer means the caller does not want it.
///
/// # Safety
/// `buf` NULL or writable for `len` bytes.
unsafe fn put_c_str(buf: *mut c_char, len: usize, s: &str) {
    if !buf.is_null() && len > 0 {
        // SAFETY: writable for `len` bytes per the contract.
        copy_c_str(unsafe { std::slice::from_raw_parts_mut(buf, len) }, s);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic caught earlier may have poisoned it; the state it guards stays consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn timeout(ms: c_int) -> Duration {
    if ms < 0 {
        Duration::MAX
    } else {
        Duration::from_millis(ms as u64)
    }
}

/// The static, NUL-terminated name of an `FC_*` code. Never NULL; the string lives forever.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn fc_strerror(code: c_int) -> *const c_char {
    error::strerror(code).as_ptr().cast()
}

/// Detail of the last failed call on this thread (empty if none). Valid until the next
/// framecache call on this thread; do not free.
#[no_mangle]
pub extern "C" fn fc_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Library version, e.g. `"0.1.0"`. Static; do not free. Thread-safe.
#[no_mangle]
pub extern "C" fn fc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Creates frame slot `slot` (an id of 1-64 `[A-Za-z0-9._-]`) and returns its writer in `*out`.
/// A stale slot (its writer died) is replaced; a live one gives `FC_ERR_BUSY`. `config` is
/// read during the call only. On success the caller owns `*out` (release with
/// `fc_producer_close`); on failure `*out` is set to NULL.
///
/// # Safety
/// `slot` must be NULL or a NUL-terminated string; `config` NULL or valid; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_create(
    slot: *const c_char,
    config: *const fc_slot_config,
    out: *mut *mut fc_producer,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let c = arg(config, "config")?;
        sized::<fc_slot_config>(c.struct_size, "config")?;
        let mut cfg = SlotConfig::new(PixelFormat::from_fourcc(c.fourcc)?, c.width, c.height);
        if c.fps_num != 0 || c.fps_den != 0 {
            cfg.fps_num = c.fps_num;
            cfg.fps_den = if c.fps_den == 0 { 1 } else { c.fps_den };
        }
        if c.depth != 0 {
            cfg.depth = c.depth;
        }
        cfg.mode = c.mode;
        cfg.row_align = c.row_align.max(1);
        cfg.keep_on_close = c.flags & FC_SLOT_KEEP_ON_CLOSE != 0;
        cfg.source_type = opt_c_str(c.source_type, "source_type")?.to_string();
        for line in opt_c_str(c.labels, "labels")?
            .lines()
            .filter(|l| !l.is_empty())
        {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::InvalidArg(format!("label {line:?} is not key=value")))?;
            cfg.labels.push((k.to_string(), v.to_string()));
        }
        let p = Producer::create(id, &cfg)?;
        *out = Box::into_raw(Box::new(fc_producer {
            inner: Mutex::new(p),
        }));
        Ok(())
    })
}

/// Copies one whole frame (`size` must equal the slot's frame size) into the ring and publishes
/// it; its sequence number goes to `*seq_out` if not NULL. `capture_ns` 0 = now. Never waits
/// for readers.
///
/// # Safety
/// `producer` must come from `fc_producer_create` and not be closed; `data` must hold `size`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_write(
    producer: *mut fc_producer,
    data: *const u8,
    size: usize,
    pts: i64,
    capture_ns: u64,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let p = arg(producer, "producer")?;
        if data.is_null() {
            return Err(Error::InvalidArg("data is NULL".into()));
        }
        // SAFETY: caller guarantees `size` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(data, size) };
        let seq = lock(&p.inner).write(
            bytes,
            FrameMeta {
                pts,
                capture_ns,
                flags: 0,
            },
        )?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Reserves the next frame slot for writing in place: `*data_out` points at `*size_out` bytes
/// of shared memory (page-aligned; planes at the slot's offsets) that stay valid until
/// `fc_producer_commit`. Acquiring twice without a commit gives `FC_ERR_STATE`.
///
/// # Safety
/// `producer` valid and open; `data_out` and `size_out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_acquire(
    producer: *mut fc_producer,
    data_out: *mut *mut u8,
    size_out: *mut usize,
) -> c_int {
    boundary(|| {
        let p = arg(producer, "producer")?;
        let data_out = arg_mut(data_out, "data_out")?;
        let size_out = arg_mut(size_out, "size_out")?;
        let mut g = lock(&p.inner);
        *data_out = g.begin()?;
        *size_out = g.geometry().frame_size as usize;
        Ok(())
    })
}

/// Publishes the frame reserved by `fc_producer_acquire`; its sequence number goes to
/// `*seq_out` if not NULL. `FC_ERR_STATE` if nothing is acquired.
///
/// # Safety
/// `producer` valid and open.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_commit(
    producer: *mut fc_producer,
    pts: i64,
    capture_ns: u64,
    flags: u32,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let p = arg(producer, "producer")?;
        let seq = lock(&p.inner).commit(FrameMeta {
            pts,
            capture_ns,
            flags,
        })?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Closes the writer: readers see "writer gone"; the slot file is removed unless
/// `FC_SLOT_KEEP_ON_CLOSE` was set (readers that have it open keep reading). NULL is ignored.
///
/// # Safety
/// `producer` must be NULL or from `fc_producer_create`, and not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_producer_close(producer: *mut fc_producer) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(producer) }
}

/// Opens frame slot `slot` for reading (read-only mapping; no registration with the writer).
/// `config` NULL = defaults. On success the caller owns `*out` (release with
/// `fc_consumer_close`); on failure `*out` is NULL.
///
/// # Safety
/// `slot` NULL or NUL-terminated; `config` NULL or valid; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_open(
    slot: *const c_char,
    config: *const fc_consumer_config,
    out: *mut *mut fc_consumer,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let mut cfg = ConsumerConfig::default();
        // SAFETY: NULL or valid per the contract.
        if let Some(c) = unsafe { config.as_ref() } {
            sized::<fc_consumer_config>(c.struct_size, "config")?;
            cfg.mode = match c.mode {
                FC_MODE_SEQUENTIAL => ReadMode::Sequential,
                FC_MODE_LATEST => ReadMode::Latest,
                m => return Err(Error::InvalidArg(format!("mode {m}"))),
            };
            cfg.start = match c.start {
                FC_START_NEWEST => StartAt::Newest,
                FC_START_OLDEST => StartAt::Oldest,
                FC_START_NEXT => StartAt::Next,
                s => return Err(Error::InvalidArg(format!("start {s}"))),
            };
        }
        let c = Consumer::open(id, cfg)?;
        *out = Box::into_raw(Box::new(fc_consumer {
            inner: Mutex::new(c),
        }));
        Ok(())
    })
}

fn fill_frame(f: &mut fc_frame, c: &Consumer, info: &FrameInfo, data: *const u8) {
    let g = c.geometry();
    f.fourcc = g.format.fourcc();
    f.width = g.width;
    f.height = g.height;
    f.plane_count = g.plane_count;
    f.flags = info.flags;
    f.strides = g.strides;
    f.offsets = g.offsets;
    f.data = data;
    f.size = g.frame_size;
    f.seq = info.seq;
    f.pts = info.pts;
    f.capture_ns = info.capture_ns;
    f.publish_ns = info.publish_ns;
    f.skipped = info.skipped;
}

/// Waits up to `timeout_ms` (negative = forever, 0 = poll) for the next frame and fills `*frame`
/// with a zero-copy view of it. `FC_ERR_TIMEOUT` if none came; `FC_ERR_WRITER_GONE` if the
/// writer is gone, nothing is left and no new writer appeared in time (a reader re-attaches to a
/// re-created slot by itself). The view is valid until the next read or close on this consumer;
/// call `fc_consumer_check` after using it.
///
/// # Safety
/// `consumer` valid and open; `frame` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_read(
    consumer: *mut fc_consumer,
    frame: *mut fc_frame,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        let f = arg_mut(frame, "frame")?;
        sized::<fc_frame>(f.struct_size, "frame")?;
        let mut g = lock(&c.inner);
        let (info, data) = {
            let v = g.read(timeout(timeout_ms))?;
            (v.info, v.data().as_ptr())
        };
        fill_frame(f, &g, &info, data);
        Ok(())
    })
}

/// `FC_OK` if the frame view `frame` (from `fc_consumer_read` on this consumer) was not
/// overwritten since it was handed out, else `FC_ERR_OVERWRITTEN` (counted in the stats).
///
/// # Safety
/// `consumer` valid and open; `frame` valid.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_check(
    consumer: *mut fc_consumer,
    frame: *const fc_frame,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        let f = arg(frame, "frame")?;
        sized::<fc_frame>(f.struct_size, "frame")?;
        if lock(&c.inner).check_view(f.seq) {
            Ok(())
        } else {
            Err(Error::Overwritten)
        }
    })
}

/// Waits like `fc_consumer_read`, then copies the frame into `buf` (`cap` bytes, at least the
/// frame size, else `FC_ERR_BUFFER_TOO_SMALL`) and validates it: a frame overwritten during the
/// copy is never returned (the reader counts it and moves on). `*frame` describes the copy
/// (`data` = `buf`).
///
/// # Safety
/// `consumer` valid and open; `buf` writable for `cap` bytes; `frame` writable with
/// `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_read_copy(
    consumer: *mut fc_consumer,
    buf: *mut u8,
    cap: usize,
    frame: *mut fc_frame,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        let f = arg_mut(frame, "frame")?;
        sized::<fc_frame>(f.struct_size, "frame")?;
        if buf.is_null() {
            return Err(Error::InvalidArg("buf is NULL".into()));
        }
        // SAFETY: caller guarantees `cap` writable bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
        let mut g = lock(&c.inner);
        let info = g.read_copy(out, timeout(timeout_ms))?;
        fill_frame(f, &g, &info, buf);
        Ok(())
    })
}

/// Fills `*stats` with the reader's counters.
///
/// # Safety
/// `consumer` valid and open; `stats` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_stats(
    consumer: *mut fc_consumer,
    stats: *mut fc_consumer_counters,
) -> c_int {
    boundary(|| {
        let c = arg(consumer, "consumer")?;
        let s = arg_mut(stats, "stats")?;
        sized::<fc_consumer_counters>(s.struct_size, "stats")?;
        let st = lock(&c.inner).stats();
        s.writer_alive = st.writer_alive.into();
        s.frames_read = st.frames_read;
        s.frames_skipped = st.frames_skipped;
        s.overwritten = st.overwritten;
        s.reattached = st.reattached;
        s.writer_frames = st.writer_frames;
        s.latency_last_ns = st.latency_last_ns;
        s.latency_avg_ns = st.latency_avg_ns;
        s.latency_max_ns = st.latency_max_ns;
        Ok(())
    })
}

/// Closes a reader and unmaps the slot; frame views it handed out become invalid. NULL is
/// ignored.
///
/// # Safety
/// `consumer` NULL or from `fc_consumer_open`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_consumer_close(consumer: *mut fc_consumer) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(consumer) }
}

fn blank_status(size: u32) -> fc_slot_status {
    // SAFETY: plain old data; all-zero is a valid value.
    let mut s: fc_slot_status = unsafe { std::mem::zeroed() };
    s.struct_size = size;
    s
}

fn fill_status(out: &mut fc_slot_status, i: &ring::SlotInfo) {
    out.kind = FC_KIND_FRAMES;
    copy_c_str(&mut out.id, &i.id);
    copy_c_str(&mut out.source_type, &i.source_type);
    out.fourcc = i.fourcc;
    out.width = i.width;
    out.height = i.height;
    out.fps_num = i.fps_num;
    out.fps_den = i.fps_den;
    out.depth = i.depth;
    out.writer_pid = i.writer_pid;
    out.writer_alive = i.writer_alive.into();
    out.frame_size = i.frame_size;
    out.frames_written = i.frames_written;
    out.epoch_ns = i.epoch_ns;
    out.last_publish_ns = i.last_publish_ns;
}

fn fill_packet_status(out: &mut fc_slot_status, i: &framecache_shm::packet::PacketSlotInfo) {
    out.kind = FC_KIND_PACKETS;
    copy_c_str(&mut out.id, &i.id);
    copy_c_str(&mut out.source_type, &i.source_type);
    out.writer_pid = i.writer_pid;
    out.writer_alive = i.writer_alive.into();
    out.frames_written = i.packets_written;
    out.epoch_ns = i.epoch_ns;
    out.last_publish_ns = i.last_publish_ns;
    out.stream_count = i.streams.len() as u32;
    out.codecs = [0; 8];
    for (c, st) in out.codecs.iter_mut().zip(&i.streams) {
        *c = st.codec;
    }
    out.bytes_published = i.bytes_published;
    if let Some(v) = i.streams.iter().find(|s| s.width > 0) {
        (out.width, out.height, out.fps_num, out.fps_den) = (v.width, v.height, v.fps.0, v.fps.1);
    }
}

/// Describes slot `slot` in `*out` without changing it: its frame slot, or its packet slot
/// when the id has no frame slot.
///
/// # Safety
/// `slot` NUL-terminated; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_slot_info(slot: *const c_char, out: *mut fc_slot_status) -> c_int {
    boundary(|| {
        let id = c_str(slot, "slot")?;
        let out = arg_mut(out, "out")?;
        sized::<fc_slot_status>(out.struct_size, "out")?;
        // A frame slot if the id has one, else its packet slot.
        let root = slot::root_dir();
        match ring::slot_info(&root, id) {
            Ok(info) => fill_status(out, &info),
            Err(Error::NotFound(_)) => match framecache_shm::packet::slot_info(&root, id) {
                Ok(info) => fill_packet_status(out, &info),
                Err(Error::NoPacketRing(_)) => return Err(Error::NotFound(id.to_string())),
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
        Ok(())
    })
}

/// Lists the readable slots (frame slots first, then packet slots) of the root directory (a scan; there is no registry): fills up to
/// `cap` entries of `out` (each gets `struct_size` from `out[0]`) and sets `*count` to the number
/// of slots found, which may exceed `cap` (call again with a bigger array). `out` may be NULL
/// when `cap` is 0. Unreadable files are skipped.
///
/// # Safety
/// `out` writable for `cap` entries; `count` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_slot_list(
    out: *mut fc_slot_status,
    cap: usize,
    count: *mut usize,
) -> c_int {
    boundary(|| {
        let count = arg_mut(count, "count")?;
        *count = 0;
        let root = slot::root_dir();
        let frames: Vec<ring::SlotInfo> = ring::list_slots(&root)?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect();
        let packets: Vec<framecache_shm::packet::PacketSlotInfo> = framecache_shm::packet::list_slots(&root)?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect();
        let total = frames.len() + packets.len();
        if cap > 0 {
            let first = arg_mut(out, "out")?;
            sized::<fc_slot_status>(first.struct_size, "out[0]")?;
            let size = first.struct_size;
            // SAFETY: caller guarantees `cap` writable entries.
            let all = unsafe { std::slice::from_raw_parts_mut(out, cap) };
            let mut entries = all.iter_mut();
            for (o, i) in entries.by_ref().zip(&frames) {
                *o = blank_status(size);
                fill_status(o, i);
            }
            for (o, i) in entries.zip(&packets) {
                *o = blank_status(size);
                fill_packet_status(o, i);
            }
        }
        *count = total;
        Ok(())
    })
}

/// An open packet-slot writer. Opaque.
pub struct fc_packet_writer {
    inner: Mutex<PacketWriter>,
}

/// An open packet-slot reader. Opaque.
pub struct fc_packet_reader {
    inner: Mutex<PacketReader>,
}

/// One elementary stream of a packet slot (input to `fc_packet_writer_create`, output of
/// `fc_packet_get_stream`). Set `struct_size = sizeof(fc_stream_info)`.
#[repr(C)]
pub struct fc_stream_info {
    /// `sizeof(fc_stream_info)`.
    pub struct_size: u32,
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// `FC_MEDIA_*` (output only; derived from the codec).
    pub media: u32,
    /// Timebase numerator (0 with `timebase_den` 0 = 1/90000).
    pub timebase_num: u32,
    /// Timebase denominator.
    pub timebase_den: u32,
    /// Video width (0 = unknown).
    pub width: u32,
    /// Video height (0 = unknown).
    pub height: u32,
    /// Video frame rate numerator (0 = unknown).
    pub fps_num: u32,
    /// Video frame rate denominator.
    pub fps_den: u32,
    /// Audio sample rate (0 = unknown).
    pub sample_rate: u32,
    /// Audio channels (0 = unknown).
    pub channels: u32,
    /// Current codec-parameter generation (output only).
    pub params_gen: u32,
    /// Language/name tag, NUL-terminated.
    pub tag: [c_char; 16],
}

/// How to create a packet slot. Set `struct_size`; zeroed sizes take their defaults.
#[repr(C)]
pub struct fc_packet_slot_config {
    /// `sizeof(fc_packet_slot_config)`.
    pub struct_size: u32,
    /// Streams in `streams` (1..=8).
    pub stream_count: u32,
    /// The streams; each with its `struct_size` set. Copied.
    pub streams: *const fc_stream_info,
    /// Payload ring bytes, a multiple of 4096 (0 = 32 MiB).
    pub payload_size: u64,
    /// Packet descriptors (0 = 16384).
    pub desc_count: u32,
    /// Bytes per codec-parameter slot (0 = 4096).
    pub params_capacity: u32,
    /// File mode (0 = 0660).
    pub mode: u32,
    /// `FC_SLOT_*` flags.
    pub flags: u32,
    /// Source-type label or NULL. Copied.
    pub source_type: *const c_char,
    /// `key=value` labels separated by newlines, or NULL. Copied.
    pub labels: *const c_char,
}

/// A packet: input to `fc_packet_publish` (`stream`, `flags`, `pts`, `dts`, `data`, `size`)
/// and output of `fc_packet_next` / `fc_packet_next_copy`. Set `struct_size`.
#[repr(C)]
pub struct fc_packet {
    /// `sizeof(fc_packet)`.
    pub struct_size: u32,
    /// Stream index.
    pub stream: u32,
    /// `FC_PACKET_*` flags.
    pub flags: u32,
    /// Codec-parameter generation that applies (output).
    pub params_gen: u32,
    /// Presentation timestamp (`FC_NOPTS` = none).
    pub pts: i64,
    /// Decoding timestamp (`FC_NOPTS` = none).
    pub dts: i64,
    /// Payload. For views from `fc_packet_next`: valid until the next call on the reader, and
    /// only trustworthy if `fc_packet_check` says `FC_OK` after use.
    pub data: *const u8,
    /// Payload bytes.
    pub size: u64,
    /// Sequence number (output).
    pub seq: u64,
    /// Publish time, CLOCK_MONOTONIC ns (output).
    pub publish_ns: u64,
    /// Packets skipped before this one (output).
    pub skipped: u64,
    /// Absolute payload position (output; used by `fc_packet_check`).
    pub pos: u64,
}

/// Packet reader options (NULL = start at the most recent keyframe).
#[repr(C)]
pub struct fc_packet_reader_config {
    /// `sizeof(fc_packet_reader_config)`.
    pub struct_size: u32,
    /// `FC_PACKET_START_*`.
    pub start: u32,
}

/// `fc_packet_reader_config.start`: the most recent keyframe of the primary stream.
pub const FC_PACKET_START_KEYFRAME: u32 = 0;
/// `fc_packet_reader_config.start`: the oldest keyframe still in the ring.
pub const FC_PACKET_START_OLDEST_KEYFRAME: u32 = 1;
/// `fc_packet_reader_config.start`: the next packet published.
pub const FC_PACKET_START_NEXT: u32 = 2;
/// `fc_slot_status.kind`: a packet ring.
pub const FC_KIND_PACKETS: u32 = 2;

/// Packet reader counters. Set `struct_size`.
#[repr(C)]
pub struct fc_packet_reader_counters {
    /// `sizeof(fc_packet_reader_counters)`.
    pub struct_size: u32,
    /// 1 if the writer is alive.
    pub writer_alive: u32,
    /// Packets delivered.
    pub packets_read: u64,
    /// Packets passed over.
    pub packets_skipped: u64,
    /// Reads found overwritten.
    pub overruns: u64,
    /// Re-attachments.
    pub reattached: u64,
    /// Packets the writer published.
    pub writer_packets: u64,
    /// Published but not yet read.
    pub lag: u64,
    /// Publish→read latency of the last packet, ns.
    pub latency_last_ns: u64,
    /// Largest publish→read latency, ns.
    pub latency_max_ns: u64,
}

fn stream_config(s: &fc_stream_info, i: usize) -> Result<StreamConfig> {
    sized::<fc_stream_info>(s.struct_size, &format!("streams[{i}]"))?;
    let mut c = StreamConfig::new(s.codec);
    if s.timebase_num != 0 || s.timebase_den != 0 {
        c.timebase = (s.timebase_num, s.timebase_den);
    }
    c.width = s.width;
    c.height = s.height;
    c.fps = (s.fps_num, if s.fps_den == 0 { 1 } else { s.fps_den });
    c.sample_rate = s.sample_rate;
    c.channels = s.channels;
    // SAFETY: a fixed array; CStr stops at the first NUL or we take nothing.
    let tag: Vec<u8> = s
        .tag
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    c.tag = String::from_utf8(tag)
        .map_err(|_| Error::InvalidArg(format!("streams[{i}].tag is not UTF-8")))?;
    Ok(c)
}

/// Creates packet slot `slot` and returns its writer in `*out` (owned by the caller until
/// `fc_packet_writer_close`; NULL on failure). A live writer gives `FC_ERR_BUSY`.
///
/// # Safety
/// `slot` NUL-terminated; `config` valid with `stream_count` readable `streams`; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_writer_create(
    slot: *const c_char,
    config: *const fc_packet_slot_config,
    out: *mut *mut fc_packet_writer,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let c = arg(config, "config")?;
        sized::<fc_packet_slot_config>(c.struct_size, "config")?;
        if c.stream_count == 0 || c.stream_count as usize > MAX_STREAMS || c.streams.is_null() {
            return Err(Error::InvalidArg(format!(
                "{} streams (1..={MAX_STREAMS}, non-NULL)",
                c.stream_count
            )));
        }
        // SAFETY: caller guarantees `stream_count` readable entries.
        let streams = unsafe { std::slice::from_raw_parts(c.streams, c.stream_count as usize) };
        let streams = streams
            .iter()
            .enumerate()
            .map(|(i, s)| stream_config(s, i))
            .collect::<Result<Vec<_>>>()?;
        let mut cfg = PacketSlotConfig::new(streams);
        if c.payload_size != 0 {
            cfg.payload_size = c.payload_size;
        }
        if c.desc_count != 0 {
            cfg.desc_count = c.desc_count;
        }
        if c.params_capacity != 0 {
            cfg.params_capacity = c.params_capacity;
        }
        cfg.mode = c.mode;
        cfg.keep_on_close = c.flags & FC_SLOT_KEEP_ON_CLOSE != 0;
        cfg.source_type = opt_c_str(c.source_type, "source_type")?.to_string();
        cfg.labels = parse_labels(opt_c_str(c.labels, "labels")?)?;
        let w = PacketWriter::create(id, &cfg)?;
        *out = Box::into_raw(Box::new(fc_packet_writer {
            inner: Mutex::new(w),
        }));
        Ok(())
    })
}

/// Publishes codec parameters for `stream` (`size` bytes at `data`; at most the slot's
/// parameter capacity, else `FC_ERR_OVERSIZED`); their generation goes to `*gen_out` if not NULL.
///
/// # Safety
/// `writer` valid and open; `data` readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_set_codec_params(
    writer: *mut fc_packet_writer,
    stream: u32,
    data: *const u8,
    size: usize,
    gen_out: *mut u32,
) -> c_int {
    boundary(|| {
        let w = arg(writer, "writer")?;
        if data.is_null() && size > 0 {
            return Err(Error::InvalidArg("data is NULL".into()));
        }
        // SAFETY: caller guarantees `size` readable bytes.
        let bytes = if size == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(data, size) }
        };
        let gen = lock(&w.inner).set_codec_params(stream, bytes)?;
        put(gen_out, gen);
        Ok(())
    })
}

/// Publishes one packet (`packet->stream`, `flags`, `pts`, `dts`, `data`, `size`; the payload
/// is copied into the ring). Its sequence number goes to `*seq_out` if not NULL. Never waits
/// for readers. `FC_ERR_OVERSIZED` if larger than a quarter of the payload ring.
///
/// # Safety
/// `writer` valid and open; `packet` valid with `data` readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_publish(
    writer: *mut fc_packet_writer,
    packet: *const fc_packet,
    seq_out: *mut u64,
) -> c_int {
    boundary(|| {
        let w = arg(writer, "writer")?;
        let p = arg(packet, "packet")?;
        sized::<fc_packet>(p.struct_size, "packet")?;
        if p.data.is_null() {
            return Err(Error::InvalidArg("packet->data is NULL".into()));
        }
        let size = usize::try_from(p.size).map_err(|_| Error::InvalidArg("size".into()))?;
        // SAFETY: caller guarantees `size` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(p.data, size) };
        let seq = lock(&w.inner).publish(&Packet {
            stream: p.stream,
            pts: p.pts,
            dts: p.dts,
            flags: p.flags,
            data,
        })?;
        put(seq_out, seq);
        Ok(())
    })
}

/// Closes a packet writer (readers see the writer gone; the file is removed unless
/// `FC_SLOT_KEEP_ON_CLOSE`). NULL is ignored.
///
/// # Safety
/// `writer` NULL or from `fc_packet_writer_create`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_writer_close(writer: *mut fc_packet_writer) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(writer) }
}

/// Opens packet slot `slot` for reading; `config` NULL = start at the most recent keyframe.
/// `FC_ERR_NO_PACKET_RING` if the id has no packet slot. The caller owns `*out`.
///
/// # Safety
/// `slot` NUL-terminated; `config` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_reader_open(
    slot: *const c_char,
    config: *const fc_packet_reader_config,
    out: *mut *mut fc_packet_reader,
) -> c_int {
    boundary(|| {
        let out = arg_mut(out, "out")?;
        *out = std::ptr::null_mut();
        let id = c_str(slot, "slot")?;
        let mut cfg = PacketReaderConfig::default();
        // SAFETY: NULL or valid per the contract.
        if let Some(c) = unsafe { config.as_ref() } {
            sized::<fc_packet_reader_config>(c.struct_size, "config")?;
            cfg.start = match c.start {
                FC_PACKET_START_KEYFRAME => PacketStart::Keyframe,
                FC_PACKET_START_OLDEST_KEYFRAME => PacketStart::OldestKeyframe,
                FC_PACKET_START_NEXT => PacketStart::Next,
                s => return Err(Error::InvalidArg(format!("start {s}"))),
            };
        }
        let r = PacketReader::open(id, cfg)?;
        *out = Box::into_raw(Box::new(fc_packet_reader {
            inner: Mutex::new(r),
        }));
        Ok(())
    })
}

/// Number of streams of the slot in `*count`.
///
/// # Safety
/// `reader` valid and open; `count` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_stream_count(
    reader: *mut fc_packet_reader,
    count: *mut u32,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        *arg_mut(count, "count")? = lock(&r.inner).layout().stream_count;
        Ok(())
    })
}

/// Describes stream `index` in `*out`.
///
/// # Safety
/// `reader` valid and open; `out` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_get_stream(
    reader: *mut fc_packet_reader,
    index: u32,
    out: *mut fc_stream_info,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let o = arg_mut(out, "out")?;
        sized::<fc_stream_info>(o.struct_size, "out")?;
        let streams = lock(&r.inner).streams();
        let s = streams
            .get(index as usize)
            .ok_or_else(|| Error::InvalidArg(format!("stream {index}")))?;
        o.codec = s.codec;
        o.media = s.media;
        (o.timebase_num, o.timebase_den) = s.timebase;
        o.width = s.width;
        o.height = s.height;
        (o.fps_num, o.fps_den) = s.fps;
        o.sample_rate = s.sample_rate;
        o.channels = s.channels;
        o.params_gen = s.params_gen;
        copy_c_str(&mut o.tag, &s.tag);
        Ok(())
    })
}

fn fill_packet(p: &mut fc_packet, i: &PacketInfo, data: *const u8) {
    p.stream = i.stream;
    p.flags = i.flags;
    p.params_gen = i.params_gen;
    p.pts = i.pts;
    p.dts = i.dts;
    p.data = data;
    p.size = u64::from(i.size);
    p.seq = i.seq;
    p.publish_ns = i.publish_ns;
    p.skipped = i.skipped;
    p.pos = i.pos;
}

/// Waits up to `timeout_ms` (negative = forever) for the next packet and fills `*packet` with a
/// zero-copy view of it. `FC_ERR_TIMEOUT`, or `FC_ERR_WRITER_GONE` when the writer is gone and
/// nothing is left. Call `fc_packet_check` after using the payload.
///
/// # Safety
/// `reader` valid and open; `packet` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_next(
    reader: *mut fc_packet_reader,
    packet: *mut fc_packet,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let p = arg_mut(packet, "packet")?;
        sized::<fc_packet>(p.struct_size, "packet")?;
        let mut g = lock(&r.inner);
        let v = g.next(timeout(timeout_ms))?;
        fill_packet(p, &v.info, v.data().as_ptr());
        Ok(())
    })
}

/// `FC_OK` if the view `packet` (from `fc_packet_next` on this reader) was not overwritten
/// since, else `FC_ERR_PACKET_OVERRUN`; then the reader also moves on to the next keyframe, so
/// the packets it delivers next never continue a GOP that lost a packet.
///
/// # Safety
/// `reader` valid and open; `packet` valid.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_check(
    reader: *mut fc_packet_reader,
    packet: *const fc_packet,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let p = arg(packet, "packet")?;
        sized::<fc_packet>(p.struct_size, "packet")?;
        let info = PacketInfo {
            seq: p.seq,
            pos: p.pos,
            ..Default::default()
        };
        if lock(&r.inner).check_view(&info) {
            Ok(())
        } else {
            Err(Error::PacketOverrun)
        }
    })
}

/// Waits like `fc_packet_next`, then copies the payload into `buf` (`cap` bytes;
/// `FC_ERR_BUFFER_TOO_SMALL` leaves the packet for a retry). `FC_ERR_PACKET_OVERRUN` if it was
/// overwritten during the copy (the reader moves on to the next keyframe).
///
/// # Safety
/// `reader` valid and open; `buf` writable for `cap` bytes; `packet` writable with `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_next_copy(
    reader: *mut fc_packet_reader,
    buf: *mut u8,
    cap: usize,
    packet: *mut fc_packet,
    timeout_ms: c_int,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let p = arg_mut(packet, "packet")?;
        sized::<fc_packet>(p.struct_size, "packet")?;
        if buf.is_null() {
            return Err(Error::InvalidArg("buf is NULL".into()));
        }
        // SAFETY: caller guarantees `cap` writable bytes.
        let out = unsafe { std::slice::from_raw_parts_mut(buf, cap) };
        let info = lock(&r.inner).next_copy(out, timeout(timeout_ms))?;
        fill_packet(p, &info, buf);
        Ok(())
    })
}

/// Copies the codec parameters of `stream`, generation `gen` (0 = current; a packet's
/// `params_gen` names the ones that apply to it) into `buf` (`cap` bytes). `*size_out` gets the
/// size (also when `FC_ERR_BUFFER_TOO_SMALL`), `*gen_out` the generation if not NULL.
/// `FC_ERR_NO_CODEC_PARAMS` if there are none or that generation is gone.
///
/// # Safety
/// `reader` valid and open; `buf` writable for `cap` bytes (may be NULL if `cap` is 0);
/// `size_out` writable.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_get_codec_params(
    reader: *mut fc_packet_reader,
    stream: u32,
    gen: u32,
    buf: *mut u8,
    cap: usize,
    size_out: *mut usize,
    gen_out: *mut u32,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let size_out = arg_mut(size_out, "size_out")?;
        let (g, data) = lock(&r.inner).codec_params(stream, gen)?;
        *size_out = data.len();
        put(gen_out, g);
        if data.len() > cap {
            return Err(Error::BufferTooSmall {
                need: data.len(),
                got: cap,
            });
        }
        if !data.is_empty() {
            if buf.is_null() {
                return Err(Error::InvalidArg("buf is NULL".into()));
            }
            // SAFETY: caller guarantees `cap` >= len writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
        }
        Ok(())
    })
}

/// Fills `*stats` with the reader's counters.
///
/// # Safety
/// `reader` valid and open; `stats` writable with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_reader_stats(
    reader: *mut fc_packet_reader,
    stats: *mut fc_packet_reader_counters,
) -> c_int {
    boundary(|| {
        let r = arg(reader, "reader")?;
        let s = arg_mut(stats, "stats")?;
        sized::<fc_packet_reader_counters>(s.struct_size, "stats")?;
        let st = lock(&r.inner).stats();
        s.writer_alive = st.writer_alive.into();
        s.packets_read = st.packets_read;
        s.packets_skipped = st.packets_skipped;
        s.overruns = st.overruns;
        s.reattached = st.reattached;
        s.writer_packets = st.writer_packets;
        s.lag = st.lag;
        s.latency_last_ns = st.latency_last_ns;
        s.latency_max_ns = st.latency_max_ns;
        Ok(())
    })
}

/// Closes a packet reader; views it handed out become invalid. NULL is ignored.
///
/// # Safety
/// `reader` NULL or from `fc_packet_reader_open`, not used again.
#[no_mangle]
pub unsafe extern "C" fn fc_packet_reader_close(reader: *mut fc_packet_reader) {
    // SAFETY: NULL or from the matching constructor, not used again, per the contract.
    unsafe { free_handle(reader) }
}

// ---------------------------------------------------------------------------------------------
// Ingest engine
// ---------------------------------------------------------------------------------------------

/// An ingest engine: push listeners, stream keys, mounts and pull ingests. Opaque. All
/// functions on one engine may be called from any thread (they serialise on a lock).
pub struct fc_ingest {
    inner: Mutex<framecache_ingest::Engine>,
}

/// `fc_ingest_event.kind`: an input connected or a pusher was accepted.
pub const FC_INGEST_CONNECTED: u32 = 1;
/// `fc_ingest_event.kind`: an input went away (`reason` says why).
pub const FC_INGEST_DISCONNECTED: u32 = 2;
/// `fc_ingest_event.kind`: a slot was created with the streams described.
pub const FC_INGEST_MEDIA_INFO: u32 = 3;

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

fn engine<'a>(e: *const fc_ingest) -> Result<std::sync::MutexGuard<'a, framecache_ingest::Engine>> {
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

/// Sets the event callback for listeners and ingests started afterwards (NULL = none).
/// `user` is passed back as is; both must stay valid until `fc_ingest_destroy`.
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
        let mut e = self::engine(engine)?;
        let Some(cb) = callback else {
            e.set_events(None);
            return Ok(());
        };
        let user = UserPtr(user);
        e.set_events(Some(std::sync::Arc::new(
            move |ev: &framecache_ingest::IngestEvent| {
                use framecache_ingest::IngestEvent as E;
                let (kind, input, reason) = match ev {
                    E::Connected { input } => (FC_INGEST_CONNECTED, input.as_str(), ""),
                    E::Disconnected { input, reason } => {
                        (FC_INGEST_DISCONNECTED, input.as_str(), reason.as_str())
                    }
                    E::MediaInfo(_) => (FC_INGEST_MEDIA_INFO, "", ""),
                    E::Packet { .. } => return,
                };
                let input = CString::new(input.replace('\0', " ")).unwrap_or_default();
                let reason = CString::new(reason.replace('\0', " ")).unwrap_or_default();
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
                };
                if let E::MediaInfo(mi) = ev {
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
                // No panic of ours crosses into C here; a C callback cannot unwind into Rust.
                // SAFETY: the caller's callback with the caller's pointer and a valid event.
                unsafe { cb(user.get(), &c) };
            },
        )));
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

/// Adds an ingest into packet slot `slot` from `count` URLs: `publish://KEY` registers KEY;
/// the others are pull inputs (udp://, srt://HOST:PORT?streamid=, rtmp://HOST/APP/KEY,
/// http://...m3u8, file://MOUNT/path, copy://SLOT), highest priority first, with failover.
/// Bad URLs give `FC_ERR_BAD_URL` and nothing is started.
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
        slot::validate_id(slot)?;
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
        let out = arg_mut(out, "out")?;
        sized::<fc_ingest_stats>(out.struct_size, "out")?;
        let s = e
            .stats(framecache_ingest::registry::normalize_key(name))
            .ok_or_else(|| Error::NotFound(format!("no ingest named {name}")))?;
        *out = fc_ingest_stats {
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
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_header_matches_the_generated_one() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/framecache.h"));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../include/framecache.h");
        let checked_in = std::fs::read_to_string(path).expect("include/framecache.h");
        assert!(
            generated == checked_in,
            "include/framecache.h is out of date: regenerate it with `FC_UPDATE_HEADER=1 cargo build` and commit it"
        );
    }

    #[test]
    fn a_panic_becomes_an_error_code_with_a_message() {
        let code = boundary(|| panic!("deliberate"));
        assert_eq!(code, FC_ERR_PANIC);
        // SAFETY: fc_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(fc_last_error()) }.to_str().unwrap();
        assert!(msg.contains("panic"), "{msg}");
    }

    #[test]
    fn small_struct_size_is_rejected() {
        let mut out: *mut fc_consumer = std::ptr::null_mut();
        let cfg = fc_consumer_config {
            struct_size: 4,
            mode: 0,
            start: 0,
        };
        // SAFETY: valid pointers.
        let rc = unsafe { fc_consumer_open(c"cam".as_ptr(), &cfg, &mut out) };
        assert_eq!(rc, FC_ERR_INVALID_ARG);
        assert!(out.is_null());
    }
}

//! cuframes: GPU frames shared across processes with CUDA IPC (`docs/CUFRAMES.md`).
//!
//! A [`Publisher`] owns a pool of device buffers under a key; [`Subscriber`]s map them, wait on
//! the publisher's interprocess event on their own stream, and release each frame by recording
//! their own event. A slow subscriber never stalls the publisher: when every buffer is held the
//! oldest hold is revoked (or the frame skipped), and the holder learns it at release.
//!
//! - [`layout`]: the shared control block, byte by byte.
//! - [`proto`]: the Unix-socket messages (sans-IO codec).
//! - [`backend`]: the GPU operations behind a trait; [`HostBackend`] moves host memory where no
//!   GPU exists (tests, CI), [`CudaBackend`] uses the driver API, loaded at run time.
//!
//! Without libcuda or a device, every CUDA-backend call returns [`Error::NoCuda`]; nothing else
//! in the library depends on CUDA.
//!
//! **Owns** (crate framecache-cuda): the cuframes control block, its socket protocol, the
//! publisher and subscriber, the backends. **May import**: `framecache-shm` (slots, futex,
//! errors), libc, cudarc (loaded at run time). Not the media, ingest or WHEP crates, nor the C
//! ABI. It never prints.

#![warn(missing_docs)]
#![allow(clippy::needless_range_loop)] // plane loops index several parallel arrays
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]

pub mod backend;
pub mod driver;
pub mod layout;
pub mod proto;
mod publisher;
mod subscriber;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

pub use backend::{Backend, DevPtr, Event, HostBackend, Stream};
pub use driver::{cuda_available, CudaBackend};
pub use layout::CuFrameMeta;
pub use publisher::{packet_slot_id, BufferRef, Publisher, PublisherConfig, PublisherStats};
pub use subscriber::{Hold, Subscriber, SubscriberConfig, SubscriberStats};

use framecache_shm::error::{Error, Result};
use framecache_shm::format::FrameGeometry;
use framecache_shm::slot::{self, Mapping};
use layout::*;

/// Which implementation of [`Backend`] to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// CUDA on device `ordinal` ([`Error::NoCuda`] without one).
    Cuda(i32),
    /// CUDA on a context the caller owns (e.g. ffmpeg's device context).
    CudaContext(ContextRef),
    /// Host memory (the CPU implementation).
    Host,
}

/// A `CUcontext` owned by the caller, promised to outlive what is built on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextRef(usize);

impl ContextRef {
    /// Wraps `ctx`.
    ///
    /// # Safety
    /// `ctx` must be a valid `CUcontext` that stays alive for as long as any publisher or
    /// subscriber opened with it (and any frame held through it) exists.
    pub unsafe fn new(ctx: *mut std::ffi::c_void) -> ContextRef {
        ContextRef(ctx as usize)
    }

    /// The `CUcontext` as an address.
    pub fn get(self) -> usize {
        self.0
    }
}

impl BackendChoice {
    /// Opens the backend.
    pub fn open(self) -> Result<Arc<dyn Backend>> {
        Ok(match self {
            BackendChoice::Cuda(d) => Arc::new(CudaBackend::new(d)?),
            BackendChoice::CudaContext(c) => Arc::new(CudaBackend::with_context(c)?),
            BackendChoice::Host => Arc::new(HostBackend::new()),
        })
    }

    /// Parses `cuda`, `cuda:N` or `host`.
    pub fn parse(s: &str) -> Result<BackendChoice> {
        match s {
            "host" => Ok(BackendChoice::Host),
            "cuda" => Ok(BackendChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(BackendChoice::Cuda)
                .ok_or_else(|| Error::InvalidArg(format!("backend {s:?}: cuda, cuda:N or host"))),
        }
    }
}

/// What the publisher does when every buffer is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Revoke the oldest hold (default).
    #[default]
    Revoke,
    /// Do not publish the frame ([`Error::NoBuffer`]).
    Skip,
}

/// Paths of a key's control block and socket.
pub fn paths(root: &Path, key: &str) -> Result<(PathBuf, PathBuf)> {
    slot::validate_id(key)?;
    let ctl = root.join(format!("{key}.cuframes"));
    let sock = root.join(format!("cuframes-{key}.sock"));
    // sun_path holds 108 bytes including the NUL.
    if sock.as_os_str().len() > 107 {
        return Err(Error::InvalidArg(format!(
            "socket path {} is longer than the 107 bytes a Unix socket allows",
            sock.display()
        )));
    }
    Ok((ctl, sock))
}

/// A mapped control block with typed access to its atomics.
pub(crate) struct Control {
    _file: File,
    map: Mapping,
    pub header: CuframesHeader,
    pub geometry: FrameGeometry,
}

impl Control {
    pub fn new(file: File, map: Mapping) -> Result<Control> {
        let header = CuframesHeader::read(map.bytes())?;
        let geometry = header.validate(map.len() as u64)?;
        Ok(Control {
            _file: file,
            map,
            header,
            geometry,
        })
    }

    pub fn n(&self) -> u32 {
        self.header.buffer_count
    }

    pub fn notify(&self) -> &AtomicU32 {
        self.map.atomic_u32(off::NOTIFY)
    }
    /// Marks the control block closed and wakes its waiters, as every slot writer closes
    /// (`notify` keeps its meaning, the newest frame's sequence).
    pub fn mark_closed(&self) {
        framecache_shm::lifecycle::mark_closed(
            &self.map,
            off::STATE,
            framecache_shm::ring::layout::STATE_CLOSED,
            off::NOTIFY,
            false,
        );
    }
    pub fn head(&self, o: usize) -> &AtomicU64 {
        self.map.atomic_u64(o)
    }
    fn slot_base(&self, i: u32) -> usize {
        self.header.slots_offset as usize + self.header.slot_desc_size as usize * i as usize
    }
    pub fn slot(&self, i: u32, o: usize) -> &AtomicU64 {
        self.map.atomic_u64(self.slot_base(i) + o)
    }
    pub fn sub(&self, s: u32, o: usize) -> &AtomicU64 {
        self.map.atomic_u64(
            self.header.subs_offset as usize + self.header.sub_slot_size as usize * s as usize + o,
        )
    }
    pub fn sub_state(&self, s: u32) -> &AtomicU32 {
        self.map.atomic_u32(
            self.header.subs_offset as usize
                + self.header.sub_slot_size as usize * s as usize
                + off::SUB_STATE,
        )
    }
    /// Writes a subscriber slot's plain fields (`pid`, `attached_ns`).
    pub fn set_sub_identity(&self, s: u32, pid: u32, attached_ns: u64) {
        let base =
            self.header.subs_offset as usize + self.header.sub_slot_size as usize * s as usize;
        // SAFETY: in bounds (validated layout); plain fields only the publisher writes.
        unsafe {
            std::ptr::write_volatile(self.map.ptr().add(base + 4) as *mut u32, pid);
            std::ptr::write_volatile(self.map.ptr().add(base + 8) as *mut u64, attached_ns);
        }
    }
    /// Reads buffer `i`'s meta (may be torn: callers validate with the seqlock).
    pub fn read_meta(&self, i: u32) -> CuFrameMeta {
        // SAFETY: in bounds; a volatile unaligned read of plain data.
        unsafe {
            std::ptr::read_volatile(
                self.map.ptr().add(self.slot_base(i) + off::SLOT_META) as *const CuFrameMeta
            )
        }
    }
    /// Writes buffer `i`'s meta (publisher only, while the slot's seq is odd).
    pub fn write_meta(&self, i: u32, m: &CuFrameMeta) {
        // SAFETY: as above; only the publisher writes metas.
        unsafe {
            std::ptr::write_volatile(
                self.map.ptr().add(self.slot_base(i) + off::SLOT_META) as *mut CuFrameMeta,
                *m,
            )
        }
    }
}

/// Plane pointers of buffer base `base` for a geometry.
pub(crate) fn planes(base: DevPtr, g: &FrameGeometry) -> [DevPtr; 4] {
    let mut p = [0; 4];
    for i in 0..g.plane_count as usize {
        p[i] = base + u64::from(g.offsets[i]);
    }
    p
}

/// The test pattern of `framecache cuframes`: every byte of plane `p` of frame `seq` is this.
pub fn pattern_byte(seq: u64, plane: usize) -> u8 {
    (seq.wrapping_mul(7).wrapping_add(plane as u64 * 61) % 251) as u8
}

/// Keys with a control block under `root` (live or stale), sorted.
pub fn list_keys(root: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = name.strip_suffix(".cuframes")?;
            slot::validate_id(key).ok()?;
            Some(key.to_string())
        })
        .collect();
    keys.sort();
    keys
}

/// Removes the control block and socket of `key` if no publisher holds its lock (a publisher
/// killed with -9 leaves both). Returns whether it removed them.
pub fn remove_if_stale(root: &Path, key: &str) -> Result<bool> {
    let (ctl, sock) = paths(root, key)?;
    let removed = slot::remove_if_stale(root, &ctl)?;
    if removed {
        let _ = std::fs::remove_file(sock);
    }
    Ok(removed)
}

//! The CUDA backend: device memory and interprocess events through the driver API (cudarc,
//! loaded at run time). Nothing here touches libcuda before [`cuda_available`] said it is
//! there, because cudarc panics when it is missing.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys;

use super::backend::{Backend, DevPtr, Event, Stream};
use super::proto::Handle;
use super::ContextRef;
use framecache_shm::error::{Error, Result};

/// Whether libcuda can be loaded and `cuInit` succeeds with at least one device. Cached.
pub fn cuda_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // A panic inside cudarc's loader must not escape (it would cross the C ABI).
        std::panic::catch_unwind(|| {
            // SAFETY: only dlopen()s candidates; returns false when none loads.
            if !unsafe { sys::is_culib_present() } {
                return false;
            }
            let mut count = 0;
            // SAFETY: libcuda is present; plain driver calls with valid out-pointers.
            unsafe {
                sys::cuInit(0).result().is_ok()
                    && sys::cuDeviceGetCount(&mut count).result().is_ok()
                    && count > 0
            }
        })
        .unwrap_or(false)
    })
}

fn check(r: sys::CUresult, what: &str) -> Result<()> {
    r.result().map_err(|e| {
        let name = e
            .error_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0));
        Error::Protocol(format!("CUDA {what}: {name}"))
    })
}

/// This process's exported allocations and events, for a subscriber in the same process as its
/// publisher: CUDA IPC cannot open a handle in the process that made it
/// (`cuIpcOpenMemHandle` answers `CUDA_ERROR_INVALID_CONTEXT`), so an import of a handle of our
/// own (on the same context) uses the allocation or event itself. Each entry counts its holders
/// (the exporter and every local importer); the memory is freed and the event destroyed when
/// the last of them lets go, so a publisher dropped while a subscriber of the same process
/// still holds a frame does not free the frame under it.
#[derive(Default)]
struct Local {
    /// Handle → (allocation, its context).
    mem: HashMap<Handle, (DevPtr, usize)>,
    /// Exported allocation → holders.
    mem_refs: HashMap<DevPtr, u32>,
    /// Handle → (event, its context).
    events: HashMap<Handle, (Event, usize)>,
    /// Exported event → holders.
    event_refs: HashMap<Event, u32>,
}

fn local() -> std::sync::MutexGuard<'static, Local> {
    static LOCAL: OnceLock<Mutex<Local>> = OnceLock::new();
    LOCAL
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Drops one holder of `key`: `Some(true)` when that was the last one (its handle is forgotten
/// too), `Some(false)` while others hold it, `None` when `key` is no export of this process.
fn unref<K: std::hash::Hash + Eq + Copy, V>(
    refs: &mut HashMap<K, u32>,
    handles: &mut HashMap<Handle, V>,
    key: K,
    is: impl Fn(&V) -> bool,
) -> Option<bool> {
    let n = refs.get_mut(&key)?;
    *n -= 1;
    if *n > 0 {
        return Some(false);
    }
    refs.remove(&key);
    handles.retain(|_, v| !is(v));
    Some(true)
}

/// CUDA device memory and interprocess events on one device's primary context, or on a
/// context the caller owns (ffmpeg's, so that its streams and our events belong together).
pub struct CudaBackend {
    ctx: sys::CUcontext,
    dev: sys::CUdevice,
    uuid: [u8; 16],
    /// Whether `ctx` is the retained primary context (released on drop).
    retained: bool,
}

/// Keeps a context current on this thread; the caller's context comes back on drop
/// (push/pop, so a caller such as ffmpeg finds its own context current afterwards).
struct Bound;

impl Bound {
    /// Makes `ctx` current until the guard drops.
    ///
    /// # Safety
    /// `ctx` must be a live context.
    #[must_use = "the context is current only while the guard lives"]
    unsafe fn push(ctx: sys::CUcontext) -> Result<Bound> {
        // SAFETY: ctx live per the contract; the pop is in drop.
        check(unsafe { sys::cuCtxPushCurrent_v2(ctx) }, "cuCtxPushCurrent")?;
        Ok(Bound)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let mut old = std::ptr::null_mut();
        // SAFETY: balances the push in bind().
        unsafe { sys::cuCtxPopCurrent_v2(&mut old) };
    }
}

// SAFETY: a CUcontext handle may be used from any thread once made current there, which every
// method does first.
unsafe impl Send for CudaBackend {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for CudaBackend {}

impl CudaBackend {
    /// Opens device `ordinal`'s primary context; `NoCuda` without a usable GPU.
    pub fn new(ordinal: i32) -> Result<CudaBackend> {
        if !cuda_available() {
            return Err(Error::NoCuda(
                "libcuda.so is not loadable or no CUDA device is present".into(),
            ));
        }
        let mut dev = 0;
        let mut ctx = std::ptr::null_mut();
        let mut uuid = sys::CUuuid_st { bytes: [0; 16] };
        // SAFETY: driver present (checked); out-pointers valid.
        unsafe {
            check(sys::cuDeviceGet(&mut dev, ordinal), "cuDeviceGet")
                .map_err(|e| Error::NoCuda(format!("device {ordinal}: {e}")))?;
            check(
                sys::cuDevicePrimaryCtxRetain(&mut ctx, dev),
                "cuDevicePrimaryCtxRetain",
            )?;
            check(sys::cuDeviceGetUuid(&mut uuid, dev), "cuDeviceGetUuid")?;
        }
        Ok(CudaBackend {
            ctx,
            dev,
            uuid: uuid.bytes.map(|b| b as u8),
            retained: true,
        })
    }

    /// Works on `ctx`, a context the caller created and keeps alive for as long as this
    /// backend and everything allocated through it exist (the promise of [`ContextRef::new`]).
    pub fn with_context(ctx: ContextRef) -> Result<CudaBackend> {
        if !cuda_available() {
            return Err(Error::NoCuda(
                "libcuda.so is not loadable or no CUDA device is present".into(),
            ));
        }
        let ctx = ctx.get() as sys::CUcontext;
        let mut dev = 0;
        let mut uuid = sys::CUuuid_st { bytes: [0; 16] };
        // SAFETY: ctx live (ContextRef's contract); out-pointers valid.
        unsafe {
            let _bound = Bound::push(ctx)?;
            check(sys::cuCtxGetDevice(&mut dev), "cuCtxGetDevice")?;
            check(sys::cuDeviceGetUuid(&mut uuid, dev), "cuDeviceGetUuid")?;
        }
        Ok(CudaBackend {
            ctx,
            dev,
            uuid: uuid.bytes.map(|b| b as u8),
            retained: false,
        })
    }

    #[must_use = "the context is current only while the guard lives"]
    fn bind(&self) -> Result<Bound> {
        // SAFETY: ctx is a retained primary context or the caller's live context.
        unsafe { Bound::push(self.ctx) }
    }

    /// The primary context (for callers that create their own streams).
    pub fn context(&self) -> sys::CUcontext {
        self.ctx
    }

    /// Creates a non-blocking stream on this context.
    pub fn stream_create(&self) -> Result<Stream> {
        let _bound = self.bind()?;
        let mut s = std::ptr::null_mut();
        // SAFETY: valid out-pointer, context current.
        check(
            unsafe {
                sys::cuStreamCreate(&mut s, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32)
            },
            "cuStreamCreate",
        )?;
        Ok(s as Stream)
    }

    /// Destroys a stream from [`CudaBackend::stream_create`].
    pub fn stream_destroy(&self, s: Stream) {
        if let Ok(_bound) = self.bind() {
            // SAFETY: a stream we created.
            unsafe { sys::cuStreamDestroy_v2(s as sys::CUstream) };
        }
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if self.retained {
            // SAFETY: balances the retain in new().
            unsafe { sys::cuDevicePrimaryCtxRelease_v2(self.dev) };
        }
    }
}

fn to_handle(bytes: &[std::ffi::c_char; 64]) -> Handle {
    bytes.map(|b| b as u8)
}

fn from_handle(h: &Handle) -> [std::ffi::c_char; 64] {
    h.map(|b| b as std::ffi::c_char)
}

impl Backend for CudaBackend {
    fn kind(&self) -> u32 {
        super::layout::FC_CUFRAMES_BACKEND_CUDA
    }
    fn device_uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn alloc(&self, size: u64) -> Result<DevPtr> {
        let _bound = self.bind()?;
        let mut p = 0;
        // SAFETY: valid out-pointer, context current.
        check(
            unsafe { sys::cuMemAlloc_v2(&mut p, size as usize) },
            "cuMemAlloc",
        )?;
        Ok(p)
    }
    fn free(&self, ptr: DevPtr, _size: u64) {
        let mut l = local();
        let Local { mem, mem_refs, .. } = &mut *l;
        if unref(mem_refs, mem, ptr, |v| v.0 == ptr) == Some(false) {
            return; // a subscriber of this process still maps it
        }
        drop(l);
        if let Ok(_bound) = self.bind() {
            // SAFETY: memory from alloc().
            unsafe { sys::cuMemFree_v2(ptr) };
        }
    }
    fn export_mem(&self, ptr: DevPtr) -> Result<Handle> {
        let _bound = self.bind()?;
        let mut h = sys::CUipcMemHandle_st { reserved: [0; 64] };
        // SAFETY: ptr is the base of a cuMemAlloc allocation.
        check(
            unsafe { sys::cuIpcGetMemHandle(&mut h, ptr) },
            "cuIpcGetMemHandle",
        )?;
        let h = to_handle(&h.reserved);
        let mut l = local();
        let Local { mem, mem_refs, .. } = &mut *l;
        if let Entry::Vacant(e) = mem.entry(h) {
            e.insert((ptr, self.ctx as usize));
            mem_refs.insert(ptr, 1);
        }
        Ok(h)
    }
    fn import_mem(&self, handle: &Handle, _size: u64) -> Result<DevPtr> {
        {
            let mut l = local();
            if let Some(&(p, ctx)) = l.mem.get(handle) {
                if ctx == self.ctx as usize {
                    *l.mem_refs.entry(p).or_insert(0) += 1;
                    return Ok(p);
                }
            }
        }
        let _bound = self.bind()?;
        let mut p = 0;
        let h = sys::CUipcMemHandle_st {
            reserved: from_handle(handle),
        };
        // SAFETY: the driver validates the handle bytes.
        check(
            unsafe {
                sys::cuIpcOpenMemHandle_v2(
                    &mut p,
                    h,
                    sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
                )
            },
            "cuIpcOpenMemHandle",
        )?;
        Ok(p)
    }
    fn close_mem(&self, ptr: DevPtr, _size: u64) {
        let mut l = local();
        let Local { mem, mem_refs, .. } = &mut *l;
        match unref(mem_refs, mem, ptr, |v| v.0 == ptr) {
            Some(false) => {}
            Some(true) => {
                drop(l);
                // The exporter freed it already and this was the last local holder.
                if let Ok(_bound) = self.bind() {
                    // SAFETY: memory from alloc() of this process, no holder left.
                    unsafe { sys::cuMemFree_v2(ptr) };
                }
            }
            None => {
                drop(l);
                if let Ok(_bound) = self.bind() {
                    // SAFETY: ptr from import_mem().
                    unsafe { sys::cuIpcCloseMemHandle(ptr) };
                }
            }
        }
    }
    fn event_create(&self) -> Result<Event> {
        let _bound = self.bind()?;
        let mut e = std::ptr::null_mut();
        let flags = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32
            | sys::CUevent_flags::CU_EVENT_INTERPROCESS as u32;
        // SAFETY: valid out-pointer.
        check(
            unsafe { sys::cuEventCreate(&mut e, flags) },
            "cuEventCreate",
        )?;
        Ok(e as Event)
    }
    fn export_event(&self, ev: Event) -> Result<Handle> {
        let _bound = self.bind()?;
        let mut h = sys::CUipcEventHandle_st { reserved: [0; 64] };
        // SAFETY: ev is an interprocess event of ours.
        check(
            unsafe { sys::cuIpcGetEventHandle(&mut h, ev as sys::CUevent) },
            "cuIpcGetEventHandle",
        )?;
        let h = to_handle(&h.reserved);
        let mut l = local();
        let Local {
            events, event_refs, ..
        } = &mut *l;
        if let Entry::Vacant(e) = events.entry(h) {
            e.insert((ev, self.ctx as usize));
            event_refs.insert(ev, 1);
        }
        Ok(h)
    }
    fn import_event(&self, handle: &Handle) -> Result<Event> {
        {
            let mut l = local();
            if let Some(&(e, ctx)) = l.events.get(handle) {
                if ctx == self.ctx as usize {
                    *l.event_refs.entry(e).or_insert(0) += 1;
                    return Ok(e);
                }
            }
        }
        let _bound = self.bind()?;
        let mut e = std::ptr::null_mut();
        let h = sys::CUipcEventHandle_st {
            reserved: from_handle(handle),
        };
        // SAFETY: the driver validates the handle bytes.
        check(
            unsafe { sys::cuIpcOpenEventHandle(&mut e, h) },
            "cuIpcOpenEventHandle",
        )?;
        Ok(e as Event)
    }
    fn event_destroy(&self, ev: Event) {
        let mut l = local();
        let Local {
            events, event_refs, ..
        } = &mut *l;
        if unref(event_refs, events, ev, |v| v.0 == ev) == Some(false) {
            return; // another holder in this process still uses it
        }
        drop(l);
        if let Ok(_bound) = self.bind() {
            // SAFETY: an event we created or opened.
            unsafe { sys::cuEventDestroy_v2(ev as sys::CUevent) };
        }
    }
    fn record(&self, ev: Event, stream: Stream) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: event and stream belong to this context (or stream 0).
        check(
            unsafe { sys::cuEventRecord(ev as sys::CUevent, stream as sys::CUstream) },
            "cuEventRecord",
        )
    }
    fn stream_wait(&self, stream: Stream, ev: Event) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: as above.
        check(
            unsafe { sys::cuStreamWaitEvent(stream as sys::CUstream, ev as sys::CUevent, 0) },
            "cuStreamWaitEvent",
        )
    }
    fn event_wait(&self, ev: Event) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: an event of ours (or opened); the driver waits for its last record.
        check(
            unsafe { sys::cuEventSynchronize(ev as sys::CUevent) },
            "cuEventSynchronize",
        )
    }
    fn fill(&self, ptr: DevPtr, value: u8, len: u64, stream: Stream) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: range inside an allocation (callers' contract).
        check(
            unsafe { sys::cuMemsetD8Async(ptr, value, len as usize, stream as sys::CUstream) },
            "cuMemsetD8Async",
        )
    }
    fn copy_to_host(&self, dst: &mut [u8], src: DevPtr, stream: Stream) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: dst is valid for its length; synchronised before returning.
        unsafe {
            check(
                sys::cuMemcpyDtoHAsync_v2(
                    dst.as_mut_ptr() as *mut _,
                    src,
                    dst.len(),
                    stream as sys::CUstream,
                ),
                "cuMemcpyDtoHAsync",
            )?;
        }
        self.synchronize(stream)
    }
    fn copy_from_host(&self, dst: DevPtr, src: &[u8], stream: Stream) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: src valid for its length; synchronised before returning.
        unsafe {
            check(
                sys::cuMemcpyHtoDAsync_v2(
                    dst,
                    src.as_ptr() as *const _,
                    src.len(),
                    stream as sys::CUstream,
                ),
                "cuMemcpyHtoDAsync",
            )?;
        }
        self.synchronize(stream)
    }
    fn synchronize(&self, stream: Stream) -> Result<()> {
        let _bound = self.bind()?;
        // SAFETY: a stream of this context.
        check(
            unsafe { sys::cuStreamSynchronize(stream as sys::CUstream) },
            "cuStreamSynchronize",
        )
    }
}

//! The GPU operations cuframes needs, behind one trait: [`CudaBackend`](super::driver) on a GPU,
//! [`HostBackend`] (memfd buffers, counter events) everywhere else. The protocol code above it is
//! the same for both, which is what lets CI test the handshake and the state machines.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::proto::Handle;
use framecache_shm::error::{Error, Result};

/// A raw `CUstream` (0 = the default stream). Ignored by the host backend.
pub type Stream = u64;
/// A raw `CUevent` (or the host backend's event id).
pub type Event = u64;
/// A raw `CUdeviceptr` (or a host address for the host backend).
pub type DevPtr = u64;

/// What cuframes asks of a GPU API. Every method is safe to call from any thread.
pub trait Backend: Send + Sync + 'static {
    /// `FC_CUFRAMES_BACKEND_*`.
    fn kind(&self) -> u32;
    /// UUID of the device (zeros for the host).
    fn device_uuid(&self) -> [u8; 16];
    /// Allocates `size` bytes of device memory that can be exported.
    fn alloc(&self, size: u64) -> Result<DevPtr>;
    /// Frees memory from [`Backend::alloc`].
    fn free(&self, ptr: DevPtr, size: u64);
    /// The IPC handle of an allocation.
    fn export_mem(&self, ptr: DevPtr) -> Result<Handle>;
    /// Maps another process's allocation.
    fn import_mem(&self, handle: &Handle, size: u64) -> Result<DevPtr>;
    /// Unmaps memory from [`Backend::import_mem`].
    fn close_mem(&self, ptr: DevPtr, size: u64);
    /// Creates an interprocess event.
    fn event_create(&self) -> Result<Event>;
    /// The IPC handle of an event.
    fn export_event(&self, ev: Event) -> Result<Handle>;
    /// Opens another process's event.
    fn import_event(&self, handle: &Handle) -> Result<Event>;
    /// Destroys a created or imported event.
    fn event_destroy(&self, ev: Event);
    /// Records `ev` on `stream` (marks the work queued so far).
    fn record(&self, ev: Event, stream: Stream) -> Result<()>;
    /// Makes `stream` wait for the last record of `ev`, without blocking the CPU.
    fn stream_wait(&self, stream: Stream, ev: Event) -> Result<()>;
    /// Blocks the CPU until the last record of `ev` is done (at once if never recorded).
    fn event_wait(&self, ev: Event) -> Result<()>;
    /// Fills `len` bytes at `ptr` with `value`, queued on `stream`.
    fn fill(&self, ptr: DevPtr, value: u8, len: u64, stream: Stream) -> Result<()>;
    /// Copies device memory into `dst` and waits until it is there.
    fn copy_to_host(&self, dst: &mut [u8], src: DevPtr, stream: Stream) -> Result<()>;
    /// Copies `src` into device memory and waits until it is there.
    fn copy_from_host(&self, dst: DevPtr, src: &[u8], stream: Stream) -> Result<()>;
    /// Blocks until the work queued on `stream` is done.
    fn synchronize(&self, stream: Stream) -> Result<()>;
}

const HOST_MEM_MAGIC: &[u8; 8] = b"FCHOSTMM";
const HOST_EVENT_MAGIC: &[u8; 8] = b"FCHOSTEV";

/// The CPU implementation: buffers are memfds mapped by every process (the peer opens
/// `/proc/PID/fd/FD`), events are shared u64 record counters. Host writes are complete when a
/// call returns, so waits are no-ops. It exists for tests and machines without a GPU; it moves
/// host memory and says so (`FC_CUFRAMES_BACKEND_HOST`).
#[derive(Default)]
pub struct HostBackend {
    // Allocations we created: address → (fd, size).
    own: Mutex<HashMap<u64, (OwnedFd, u64)>>,
    // Events: id → (fd, mapped counter address).
    events: Mutex<HashMap<u64, (OwnedFd, usize)>>,
    next_event: AtomicU64,
}

fn memfd(name: &str, size: u64) -> Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: valid C string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::os("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: valid fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(Error::os(
            "ftruncate memfd",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

fn map_fd(fd: i32, size: u64) -> Result<u64> {
    // SAFETY: mapping a file we hold open; the kernel checks the length.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::os("mmap", std::io::Error::last_os_error()));
    }
    Ok(p as u64)
}

fn host_handle(magic: &[u8; 8], fd: i32, size: u64) -> Handle {
    let mut h = [0u8; 64];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    h[12..16].copy_from_slice(&fd.to_le_bytes());
    h[16..24].copy_from_slice(&size.to_le_bytes());
    h
}

fn open_host_handle(h: &Handle, magic: &[u8; 8]) -> Result<(File, u64)> {
    if &h[..8] != magic {
        return Err(Error::Protocol("not a host-backend handle".into()));
    }
    let pid = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let fd = i32::from_le_bytes(h[12..16].try_into().unwrap());
    let size = u64::from_le_bytes(h[16..24].try_into().unwrap());
    let path = format!("/proc/{pid}/fd/{fd}");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::os(&format!("open {path}"), e))?;
    let real = f.metadata().map_err(|e| Error::os("stat", e))?.len();
    if real < size {
        return Err(Error::Protocol(format!(
            "host handle says {size} bytes, {path} has {real}"
        )));
    }
    Ok((f, size))
}

impl HostBackend {
    /// A host backend.
    pub fn new() -> HostBackend {
        HostBackend::default()
    }

    fn counter(&self, ev: Event) -> Result<&AtomicU64> {
        let map = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let (_, addr) = map
            .get(&ev)
            .ok_or_else(|| Error::InvalidArg(format!("unknown host event {ev}")))?;
        // SAFETY: the mapping lives until event_destroy, which the callers order after use.
        Ok(unsafe { &*(*addr as *const AtomicU64) })
    }

    /// How often `ev` was recorded (any process): lets tests see that both sides share it.
    pub fn record_count(&self, ev: Event) -> Result<u64> {
        Ok(self.counter(ev)?.load(Ordering::Acquire))
    }

    fn add_event(&self, fd: OwnedFd) -> Result<Event> {
        let addr = map_fd(fd.as_raw_fd(), 4096)? as usize;
        let id = self.next_event.fetch_add(1, Ordering::Relaxed) + 1;
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (fd, addr));
        Ok(id)
    }
}

impl Backend for HostBackend {
    fn kind(&self) -> u32 {
        super::layout::FC_CUFRAMES_BACKEND_HOST
    }
    fn device_uuid(&self) -> [u8; 16] {
        [0; 16]
    }
    fn alloc(&self, size: u64) -> Result<DevPtr> {
        let fd = memfd("framecache-cuframes-host", size)?;
        let p = map_fd(fd.as_raw_fd(), size)?;
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p, (fd, size));
        Ok(p)
    }
    fn free(&self, ptr: DevPtr, size: u64) {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ptr);
        self.close_mem(ptr, size);
    }
    fn export_mem(&self, ptr: DevPtr) -> Result<Handle> {
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        let (fd, size) = own
            .get(&ptr)
            .ok_or_else(|| Error::InvalidArg("export of memory not allocated here".into()))?;
        Ok(host_handle(HOST_MEM_MAGIC, fd.as_raw_fd(), *size))
    }
    fn import_mem(&self, handle: &Handle, size: u64) -> Result<DevPtr> {
        let (f, have) = open_host_handle(handle, HOST_MEM_MAGIC)?;
        if have < size {
            return Err(Error::Protocol(
                "host buffer smaller than buffer_size".into(),
            ));
        }
        map_fd(f.as_raw_fd(), size)
    }
    fn close_mem(&self, ptr: DevPtr, size: u64) {
        // SAFETY: ptr/size come from our own mmap.
        unsafe { libc::munmap(ptr as *mut libc::c_void, size as usize) };
    }
    fn event_create(&self) -> Result<Event> {
        self.add_event(memfd("framecache-cuframes-event", 4096)?)
    }
    fn export_event(&self, ev: Event) -> Result<Handle> {
        let map = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let (fd, _) = map
            .get(&ev)
            .ok_or_else(|| Error::InvalidArg(format!("unknown host event {ev}")))?;
        let mut h = host_handle(HOST_EVENT_MAGIC, fd.as_raw_fd(), 0);
        h[16..24].fill(0);
        Ok(h)
    }
    fn import_event(&self, handle: &Handle) -> Result<Event> {
        let (f, _) = open_host_handle(handle, HOST_EVENT_MAGIC)?;
        self.add_event(OwnedFd::from(f))
    }
    fn event_destroy(&self, ev: Event) {
        if let Some((_fd, addr)) = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ev)
        {
            // SAFETY: our own 4096-byte mapping.
            unsafe { libc::munmap(addr as *mut libc::c_void, 4096) };
        }
    }
    fn record(&self, ev: Event, _stream: Stream) -> Result<()> {
        self.counter(ev)?.fetch_add(1, Ordering::Release);
        Ok(())
    }
    fn stream_wait(&self, _stream: Stream, ev: Event) -> Result<()> {
        // Nothing to wait for on the CPU; touching the counter proves the handle is live.
        self.counter(ev)?.load(Ordering::Acquire);
        Ok(())
    }
    fn event_wait(&self, ev: Event) -> Result<()> {
        // Host work is done when it returns; touching the counter proves the handle is live.
        self.counter(ev)?.load(Ordering::Acquire);
        Ok(())
    }
    fn fill(&self, ptr: DevPtr, value: u8, len: u64, _stream: Stream) -> Result<()> {
        // SAFETY: callers pass ranges inside a buffer mapping of ours.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, value, len as usize) };
        Ok(())
    }
    fn copy_to_host(&self, dst: &mut [u8], src: DevPtr, _stream: Stream) -> Result<()> {
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }
    fn copy_from_host(&self, dst: DevPtr, src: &[u8], _stream: Stream) -> Result<()> {
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }
    fn synchronize(&self, _stream: Stream) -> Result<()> {
        Ok(())
    }
}

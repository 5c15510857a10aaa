//! Slots: named shared-memory files under one root directory, shared by every ring kind.
//!
//! This module owns what all rings have in common: slot-id validation, the root directory,
//! atomic creation (initialise a temporary file, then rename), the writer's liveness lock, the
//! memory mapping, and discovery by scanning the root (there is no registry file).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Error, Result};

/// Environment variable that overrides the root directory.
pub const ROOT_ENV: &str = "FC_SHM_DIR";
/// Root directory used when [`ROOT_ENV`] is unset.
pub const DEFAULT_ROOT: &str = "/dev/shm/framecache";
/// Longest slot id.
pub const MAX_ID_LEN: usize = 64;
/// Mode of new slot files unless the caller chooses another.
pub const DEFAULT_MODE: u32 = 0o660;

/// The kinds of ring a slot file can hold; the kind is the file-name suffix, so a frame slot and
/// a packet slot may share an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum SlotKind {
    /// A raw frame ring (`ID.frames`).
    Frames,
    /// An encoded packet ring (`ID.packets`).
    Packets,
}

impl SlotKind {
    /// File-name suffix, including the dot.
    pub const fn suffix(self) -> &'static str {
        match self {
            SlotKind::Frames => ".frames",
            SlotKind::Packets => ".packets",
        }
    }
}

/// The root directory: `$FC_SHM_DIR`, else `/dev/shm/framecache`.
pub fn root_dir() -> PathBuf {
    match std::env::var_os(ROOT_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_ROOT),
    }
}

/// Checks a slot id: 1-64 characters of `[A-Za-z0-9._-]`, not `.` or `..` and not starting with
/// a dot (dot-files in the root are framecache's own temporaries and locks).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadSlotId(id.chars().take(80).collect()))
    }
}

/// Path of a slot file under `root`, after validating the id.
pub fn slot_path(root: &Path, id: &str, kind: SlotKind) -> Result<PathBuf> {
    validate_id(id)?;
    Ok(root.join(format!("{id}{}", kind.suffix())))
}

// The clocks the headers stamp and the random ids, kept here under their old paths.
pub use crate::clock::{monotonic_ns, random_u64, realtime_ns};

/// A shared memory mapping of a whole slot file, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; synchronisation is the rings' job (atomics).
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file`; `writable` selects PROT_WRITE (writers) or read-only (readers).
    pub fn map(file: &File, len: usize, writable: bool) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::Truncated("empty file".into()));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // Writers pre-fault their pages so the hot path takes no page faults.
        let flags = libc::MAP_SHARED | if writable { libc::MAP_POPULATE } else { 0 };
        // SAFETY: fd is open for the mapping's lifetime of this call; len > 0.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(Error::os("mmap", io::Error::last_os_error()));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start of the mapping.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true for a live mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The atomic u64 at `offset` (8-aligned, in bounds: the rings' validated layouts ensure it).
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "atomic u64 at {offset}"
        );
        // SAFETY: in bounds and aligned (the mapping is page-aligned); lives as long as &self.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    /// The atomic u32 at `offset` (4-aligned, in bounds).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.len,
            "atomic u32 at {offset}"
        );
        // SAFETY: as above.
        unsafe { AtomicU32::from_ptr(self.ptr.add(offset).cast()) }
    }

    /// The mapping as bytes. Bytes a writer changes concurrently may change under the slice:
    /// callers use it only for immutable header parts and validation.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from mmap.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Whether a writer holds the liveness lock on `file`. Uses an open-file-description lock
/// query (`F_OFD_GETLK`), which takes nothing and works on a read-only descriptor.
pub fn writer_lock_held(file: &File) -> bool {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: valid fd and flock struct.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Takes the writer's liveness lock: an exclusive OFD lock that the kernel drops when the
/// writer's descriptor closes or the process dies, so liveness needs no daemon.
fn take_writer_lock(file: &File) -> io::Result<bool> {
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: valid fd and flock struct.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Holds `flock` on the root's `.create.lock` so that check-then-rename of creators is
/// serialised (two writers racing for a stale slot cannot both win).
struct RootLock(File);

impl RootLock {
    fn take(root: &Path) -> Result<RootLock> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .open(root.join(".create.lock"))
            .or_else(|_| File::open(root.join(".create.lock")))
            .map_err(|e| Error::os("root lock", e))?;
        // SAFETY: valid fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::os("flock root lock", io::Error::last_os_error()));
        }
        Ok(RootLock(f))
    }
}

impl Drop for RootLock {
    fn drop(&mut self) {
        // SAFETY: valid fd.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Makes sure the root exists. New roots are world-writable with the sticky bit, like
/// `/dev/shm` itself: slot-file modes decide who may read or write a slot.
pub fn ensure_root(root: &Path) -> Result<()> {
    match fs::create_dir_all(root) {
        Ok(()) => {}
        Err(e) => return Err(Error::os(&format!("create root {}", root.display()), e)),
    }
    if let Ok(md) = fs::metadata(root) {
        if md.uid() == unsafe { libc::geteuid() } && md.permissions().mode() & 0o7777 != 0o1777 {
            let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o1777));
        }
    }
    Ok(())
}

/// A freshly created, initialised and published slot file, owned by this writer.
pub struct CreatedSlot {
    /// The slot file, holding the liveness lock.
    pub file: File,
    /// Read-write mapping of the whole file.
    pub map: Mapping,
    /// Final path.
    pub path: PathBuf,
}

/// Creates slot `path` of `size` bytes atomically: the file is allocated, initialised by `init`
/// and locked under a temporary name, then renamed into place, so a reader never maps a
/// half-written header. An existing slot with a live writer gives `Busy` (with the pid that
/// `owner_pid` reads from its header); a stale one (writer dead) is replaced.
pub fn create(
    root: &Path,
    path: &Path,
    size: u64,
    mode: u32,
    owner_pid: impl Fn(&File) -> u32,
    init: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<CreatedSlot> {
    ensure_root(root)?;
    let _guard = RootLock::take(root)?;
    if let Ok(existing) = File::open(path) {
        if writer_lock_held(&existing) {
            return Err(Error::Busy {
                pid: owner_pid(&existing),
            });
        }
        log::info!(
            "{}: replacing a stale slot (its writer, pid {}, is gone)",
            path.display(),
            owner_pid(&existing)
        );
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("slot");
    let tmp = root.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::os(&format!("create {}", tmp.display()), e))?;
    let cleanup = TmpGuard(&tmp);
    // The umask would strip group bits from the mode the user asked for.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::os("chmod", e))?;
    let len = usize::try_from(size).map_err(|_| Error::InvalidArg("slot too large".into()))?;
    // Allocate every page now: a full /dev/shm is a clean error here, not a SIGBUS later.
    // SAFETY: valid fd.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    if r == libc::ENOSPC || r == libc::EFBIG {
        let free = fs_space(root).map_or("unknown".to_string(), |(free, total)| {
            format!("{} free of {}", bytes_text(free), bytes_text(total))
        });
        return Err(Error::NoSpace(format!(
            "slot {name} needs {} and the filesystem of {} has {free}: make it larger \
             (Docker: --shm-size or ipc: host), put the slots on a larger tmpfs with \
             FC_SHM_DIR, or make the slot smaller (depth, size, payload ring)",
            bytes_text(size),
            root.display()
        )));
    }
    if r != 0 {
        return Err(Error::os("allocate slot", io::Error::from_raw_os_error(r)));
    }
    if !take_writer_lock(&file).map_err(|e| Error::os("lock slot", e))? {
        return Err(Error::Busy { pid: 0 });
    }
    let mut map = Mapping::map(&file, len, true)?;
    // SAFETY: we own the only writable mapping of a file nobody else can see yet.
    init(unsafe { std::slice::from_raw_parts_mut(map.ptr(), map.len()) })?;
    fs::rename(&tmp, path).map_err(|e| Error::os(&format!("publish {}", path.display()), e))?;
    std::mem::forget(cleanup);
    let _ = &mut map;
    Ok(CreatedSlot {
        file,
        map,
        path: path.to_path_buf(),
    })
}

/// (bytes free to an unprivileged writer, total bytes) of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statvfs is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// `n` bytes as people read them: "475.0 MiB (498073600 bytes)".
pub fn bytes_text(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1 << 30 {
        format!("{:.2} GiB ({n} bytes)", n as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB ({n} bytes)", n as f64 / MIB)
    }
}

struct TmpGuard<'a>(&'a Path);

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// Removes `path` if no writer holds its liveness lock (a crashed or closed writer's slot, or an
/// unreadable file). Runs under the root lock, so it never removes a slot a new writer is
/// publishing at the same moment. Returns whether it removed the file.
pub fn remove_if_stale(root: &Path, path: &Path) -> Result<bool> {
    let _guard = RootLock::take(root)?;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::os(&format!("open {}", path.display()), e)),
    };
    if writer_lock_held(&file) {
        return Ok(false);
    }
    fs::remove_file(path).map_err(|e| Error::os(&format!("remove {}", path.display()), e))?;
    Ok(true)
}

/// Leftover temporary files of creators that died mid-creation (`.NAME.tmp.PID`, PID gone).
pub fn stale_temporaries(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(root) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Parsed as a positive pid: 0 or a negative number would make kill() probe a group.
            let pid: u32 = name
                .strip_prefix('.')?
                .rsplit_once(".tmp.")?
                .1
                .parse()
                .ok()?;
            let pid = i32::try_from(pid).ok().filter(|&p| p > 0)?;
            // SAFETY: kill with signal 0 only probes for existence.
            let alive = unsafe { libc::kill(pid, 0) } == 0
                || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            (!alive).then(|| e.path())
        })
        .collect()
}

/// Joins `key=value` labels into the header's text form (one per line, at most 255 bytes).
pub(crate) fn labels_text(labels: &[(String, String)]) -> Result<String> {
    let mut s = String::new();
    for (k, v) in labels {
        if k.is_empty() || k.contains(['\n', '\0', '=']) || v.contains(['\n', '\0']) {
            return Err(Error::InvalidArg(format!("label {k:?}={v:?}")));
        }
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!("{k}={v}"));
    }
    if s.len() > 255 {
        return Err(Error::InvalidArg("labels longer than 255 bytes".into()));
    }
    Ok(s)
}

/// Reads a little-endian u32 at `offset` of a file (e.g. the writer pid, for `Busy` errors).
pub(crate) fn read_u32_at(file: &File, offset: usize) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 4];
    match file.read_exact_at(&mut b, offset as u64) {
        Ok(()) => u32::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// Unlinks a closing writer's slot file, only if `path` still names it. The liveness lock the
/// writer still holds keeps any new writer out until this returns; readers that have the file
/// mapped keep reading what is left.
pub(crate) fn unlink_if_ours(file: &File, path: &Path) {
    if let (Ok(ours), Ok(now)) = (file.metadata(), fs::metadata(path)) {
        if file_identity(&ours) == file_identity(&now) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether `path` now names a different file than `identity` (a re-created slot).
pub(crate) fn replaced(path: &Path, identity: (u64, u64)) -> bool {
    fs::metadata(path).is_ok_and(|md| file_identity(&md) != identity)
}

/// Identity of a slot file (device, inode): a re-created slot is a new inode.
pub fn file_identity(md: &fs::Metadata) -> (u64, u64) {
    (md.dev(), md.ino())
}

/// Opens an existing slot file read-only and maps it whole. A file too short to hold
/// `min_len` bytes is `Truncated`.
pub fn open_readonly(path: &Path, id: &str, min_len: usize) -> Result<(File, Mapping)> {
    let file = File::open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound(id.to_string()),
        _ => Error::os(&format!("open {}", path.display()), e),
    })?;
    let len = file.metadata().map_err(|e| Error::os("stat", e))?.len();
    if len < min_len as u64 {
        return Err(Error::Truncated(format!(
            "{len} bytes, header needs {min_len}"
        )));
    }
    let len = usize::try_from(len).map_err(|_| Error::Corrupt("file too large".into()))?;
    let map = Mapping::map(&file, len, false)?;
    Ok((file, map))
}

/// Ids of the slots of `kind` in `root` (files named `ID` + suffix with a valid id), sorted.
/// Validation of each header is the caller's.
pub fn scan(root: &Path, kind: SlotKind) -> Result<Vec<String>> {
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::os(&format!("list {}", root.display()), e)),
    };
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(kind.suffix()).map(str::to_string))
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Copies a string into a fixed NUL-terminated field, truncating at a character boundary.
pub fn put_cstr(dst: &mut [u8], s: &str) {
    dst.fill(0);
    let mut n = s.len().min(dst.len().saturating_sub(1));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-terminated UTF-8 field; `None` when it has no NUL or is not UTF-8.
pub fn get_cstr(src: &[u8]) -> Option<&str> {
    let end = src.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&src[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids() {
        for ok in ["a", "cam1", "Cam_1.main-2", &"x".repeat(64)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc",
            ".hidden",
            "a b",
            "é",
            "a\0b",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(validate_id(bad), Err(Error::BadSlotId(_))),
                "{bad:?}"
            );
        }
        let root = Path::new("/r");
        assert_eq!(
            slot_path(root, "cam", SlotKind::Frames).unwrap(),
            Path::new("/r/cam.frames")
        );
        assert!(slot_path(root, "../../etc/passwd", SlotKind::Frames).is_err());
    }

    #[test]
    fn cstr_fields() {
        let mut b = [0xffu8; 5];
        put_cstr(&mut b, "abcdef");
        assert_eq!(&b, b"abcd\0");
        assert_eq!(get_cstr(&b), Some("abcd"));
        put_cstr(&mut b, "aé"); // 'é' is 2 bytes: fits in 4 with the NUL
        assert_eq!(get_cstr(&b), Some("aé"));
        put_cstr(&mut b, "abcé"); // would split 'é': cut before it
        assert_eq!(get_cstr(&b), Some("abc"));
        assert_eq!(get_cstr(&[1, 2, 3]), None);
    }
}

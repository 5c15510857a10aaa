//! The life of a slot file, written once for every ring kind.
//!
//! A ring kind (the frame ring, the packet ring) states where its header keeps the words the
//! lifecycle touches and how to validate a mapped file ([`RingKind`]); the lifecycle does the
//! rest, the same way for all of them:
//!
//! - **Owned** (the writer's side, [`Owned`]): created atomically under the root lock (a live
//!   writer's slot is `Busy`, a stale one is replaced), holds the liveness lock, and on drop
//!   marks the slot closed, wakes every waiting reader and unlinks the file unless asked to keep
//!   it (only if the path still names it).
//! - **Attached** (a reader's side, [`Attached`]): maps the file read-only, validates it, tells
//!   whether the writer is alive (the state word, then the lock), re-attaches when a new writer
//!   re-created the slot (a new inode at the path), and waits for the next publish or the
//!   writer's end ([`Attached::wait`]).
//!
//! The cuframes control block is created with the same [`slot::create`] and closed with the
//! same [`mark_closed`]; its readers attach through its socket handshake instead.

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::futex;
use crate::slot::{self, Mapping, SlotKind};

/// What the lifecycle needs to know of a ring kind.
pub trait RingKind: Sized {
    /// The kind (file-name suffix) of its slots.
    const KIND: SlotKind;
    /// Bytes a file must hold before its header can be read.
    const HEADER_SIZE: usize;
    /// Offset of the header's `writer_pid` (u32).
    const WRITER_PID: usize;
    /// Offset of the header's `state` (u32).
    const STATE: usize;
    /// The `state` value of a closed slot (`FC_STATE_CLOSED` for the rings).
    const STATE_CLOSED: u32;
    /// Offset of the header's futex word `wake` (u32), bumped on publish and close.
    const WAKE: usize;
    /// Offset of the header's `write_seq` (u64), the count of items published.
    const WRITE_SEQ: usize;

    /// Validates a mapped slot file and builds the ring over it.
    fn open(map: Mapping) -> Result<Self>;

    /// The ring's mapping.
    fn mapping(&self) -> &Mapping;

    /// The error for a slot that does not exist.
    fn missing(id: &str) -> Error {
        Error::NotFound(id.to_string())
    }
}

/// Every slot of `kind` under `root`, each with what `info` says of it (or the error that made
/// it unreadable): the listing of `framecache ls`, `fc_slot_list` and the gc, for any kind.
pub fn list<T>(
    root: &Path,
    kind: SlotKind,
    info: impl Fn(&Path, &str) -> Result<T>,
) -> Result<Vec<(String, Result<T>)>> {
    Ok(slot::scan(root, kind)?
        .into_iter()
        .map(|id| {
            let i = info(root, &id);
            (id, i)
        })
        .collect())
}

/// Marks the slot of `map` closed (stores `closed` in its `state` word at `state`) and wakes
/// every waiter on its futex word at `wake`: how every writer closes. A wake word that only counts wake-ups (the
/// rings' `wake`) is bumped first, so a reader about to wait does not sleep through the close;
/// one with a meaning of its own (cuframes' `notify`, the newest frame's sequence) is left as is.
pub fn mark_closed(map: &Mapping, state: usize, closed: u32, wake: usize, bump: bool) {
    map.atomic_u32(state).store(closed, Ordering::Release);
    let w = map.atomic_u32(wake);
    if bump {
        w.fetch_add(1, Ordering::Release);
    }
    futex::wake_all(w);
}

/// The writer's side of a slot: owns the file, its liveness lock and the writable mapping.
/// Dropping it closes the slot.
pub struct Owned<R: RingKind> {
    ring: R,
    file: File,
    path: PathBuf,
    keep_on_close: bool,
}

impl<R: RingKind> Owned<R> {
    /// Creates slot `id` of `size` bytes under `root` with file mode `mode` (0 = the default),
    /// its header written by `init` before any reader can see the file, and the ring built by
    /// `ring` over the new mapping.
    pub fn create(
        root: &Path,
        id: &str,
        size: u64,
        mode: u32,
        keep_on_close: bool,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
        ring: impl FnOnce(Mapping) -> R,
    ) -> Result<Owned<R>> {
        let path = slot::slot_path(root, id, R::KIND)?;
        if mode & !0o777 != 0 {
            return Err(Error::InvalidArg(format!("mode {mode:o}")));
        }
        let mode = if mode == 0 { slot::DEFAULT_MODE } else { mode };
        let created = slot::create(
            root,
            &path,
            size,
            mode,
            |f| slot::read_u32_at(f, R::WRITER_PID),
            init,
        )?;
        Ok(Owned {
            ring: ring(created.map),
            file: created.file,
            path: created.path,
            keep_on_close,
        })
    }

    /// Path of the slot file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<R: RingKind> Deref for Owned<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.ring
    }
}

impl<R: RingKind> DerefMut for Owned<R> {
    fn deref_mut(&mut self) -> &mut R {
        &mut self.ring
    }
}

impl<R: RingKind> Drop for Owned<R> {
    fn drop(&mut self) {
        mark_closed(
            self.ring.mapping(),
            R::STATE,
            R::STATE_CLOSED,
            R::WAKE,
            true,
        );
        if !self.keep_on_close {
            slot::unlink_if_ours(&self.file, &self.path);
        }
    }
}

/// What [`Attached::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Something may have changed (a publish, a wake-up, a liveness slice): look again.
    Again,
    /// The writer was gone and a new one re-created the slot: the reader now reads the new
    /// file from its start.
    Reattached,
}

/// A reader's side of a slot: the read-only mapping of one slot file, and the means to follow
/// the slot to a new file when a new writer re-creates it.
pub struct Attached<R: RingKind> {
    ring: R,
    file: File,
    path: PathBuf,
    id: String,
    identity: (u64, u64),
}

impl<R: RingKind> Attached<R> {
    /// Opens slot `id` under `root` read-only and validates it.
    pub fn open(root: &Path, id: &str) -> Result<Attached<R>> {
        let path = slot::slot_path(root, id, R::KIND)?;
        let (ring, file, identity) = Self::map(&path, id)?;
        Ok(Attached {
            ring,
            file,
            path,
            id: id.to_string(),
            identity,
        })
    }

    fn map(path: &Path, id: &str) -> Result<(R, File, (u64, u64))> {
        let (file, map) = slot::open_readonly(path, id, R::HEADER_SIZE).map_err(|e| match e {
            Error::NotFound(_) => R::missing(id),
            e => e,
        })?;
        let identity = slot::file_identity(&file.metadata().map_err(|e| Error::os("stat", e))?);
        Ok((R::open(map)?, file, identity))
    }

    /// The slot id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> &AtomicU32 {
        self.ring.mapping().atomic_u32(R::STATE)
    }

    /// Items the writer has published.
    pub fn write_seq(&self) -> &AtomicU64 {
        self.ring.mapping().atomic_u64(R::WRITE_SEQ)
    }

    /// Whether the writer closed the slot (cheap: one load).
    pub fn closed(&self) -> bool {
        self.state().load(Ordering::Acquire) == R::STATE_CLOSED
    }

    /// Whether a writer holds the slot: it did not close it and its liveness lock is held (a
    /// system call; a SIGKILLed writer is seen here).
    pub fn writer_alive(&self) -> bool {
        !self.closed() && slot::writer_lock_held(&self.file)
    }

    /// If the slot's path now holds a different, valid slot file (a new writer), switches to
    /// it. A half-gone or foreign file leaves the reader where it is.
    pub fn try_reattach(&mut self) -> bool {
        if !slot::replaced(&self.path, self.identity) {
            return false;
        }
        match Self::map(&self.path, &self.id) {
            Ok((ring, file, identity)) => {
                self.ring = ring;
                self.file = file;
                self.identity = identity;
                log::info!(
                    "slot {}: a new writer re-created it; reading it from its start",
                    self.id
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Waits, at most until `deadline`, for something after the reader saw `seen` items:
    /// a publish, the writer's close or death (then a new writer's file), or one liveness slice.
    /// `quiet` carries, between the calls of one read, whether the last slice passed without a
    /// publish (start a read with `false`); `alive` receives whether the writer was alive.
    /// `Timeout` at the deadline with a live writer; `WriterGone` at the deadline without one.
    pub fn wait(
        &mut self,
        seen: u64,
        deadline: Instant,
        quiet: &mut bool,
        alive: &mut bool,
    ) -> Result<Waited> {
        let now = Instant::now();
        // The lock query is a syscall: only after a quiet wait slice or at the deadline. A
        // clean close is seen at once through the state word.
        let live = if *quiet || now >= deadline {
            self.writer_alive()
        } else {
            !self.closed()
        };
        *alive = live;
        if !live {
            if self.try_reattach() {
                *alive = self.writer_alive();
                return Ok(Waited::Reattached);
            }
            if now >= deadline {
                return Err(Error::WriterGone);
            }
            std::thread::sleep(futex::REATTACH_POLL.min(deadline - now));
            return Ok(Waited::Again);
        }
        if now >= deadline {
            return Err(Error::Timeout);
        }
        let wake = self.ring.mapping().atomic_u32(R::WAKE);
        *quiet = futex::wait_for_publish(wake, self.write_seq(), seen, deadline - now);
        Ok(Waited::Again)
    }
}

impl<R: RingKind> Deref for Attached<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.ring
    }
}

/// The lifecycle's contract, checked the same way for every ring kind (the frame ring's and
/// the packet ring's tests call it with their own `create`).
#[cfg(test)]
pub(crate) fn check_contract<R: RingKind>(
    name: &str,
    create: impl Fn(&Path, &str, bool) -> Result<Owned<R>>,
) {
    use std::time::Duration;
    let root = std::env::temp_dir().join(format!("fc-lifecycle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let id = "contract";
    let path = slot::slot_path(&root, id, R::KIND).unwrap();
    assert!(matches!(
        Attached::<R>::open(&root, id),
        Err(e) if e.code() == R::missing(id).code()
    ));

    // A live writer: readers see it alive; a second writer is busy.
    let w = create(&root, id, false).unwrap();
    let mut r = Attached::<R>::open(&root, id).unwrap();
    assert!(r.writer_alive() && !r.closed());
    assert!(
        matches!(create(&root, id, false), Err(Error::Busy { pid }) if pid == std::process::id())
    );
    let (mut quiet, mut alive) = (false, false);
    let soon = Instant::now() + Duration::from_millis(30);
    let mut waited = Ok(Waited::Again);
    while matches!(waited, Ok(Waited::Again)) {
        waited = r.wait(0, soon, &mut quiet, &mut alive);
    }
    assert!(matches!(waited, Err(Error::Timeout)) && alive);

    // Closing: marked closed, seen at once, the file unlinked; the reader's wait ends with
    // WriterGone at its deadline.
    drop(w);
    assert!(r.closed() && !r.writer_alive());
    assert!(!path.exists());
    let soon = Instant::now() + Duration::from_millis(30);
    let mut waited = Ok(Waited::Again);
    while matches!(waited, Ok(Waited::Again)) {
        waited = r.wait(0, soon, &mut quiet, &mut alive);
    }
    assert!(matches!(waited, Err(Error::WriterGone)) && !alive);

    // A new writer re-creates the slot: the reader follows it.
    let w = create(&root, id, true).unwrap();
    let later = Instant::now() + Duration::from_secs(5);
    assert_eq!(
        r.wait(0, later, &mut false, &mut alive).unwrap(),
        Waited::Reattached
    );
    assert!(alive && r.writer_alive());
    assert!(!r.try_reattach(), "same file: nothing to follow");

    // keep_on_close leaves the file, closed, for late readers; a new writer replaces it.
    drop(w);
    assert!(path.exists());
    let late = Attached::<R>::open(&root, id).unwrap();
    assert!(late.closed() && !late.writer_alive());
    drop(create(&root, id, false).unwrap());
    let listed = list(&root, R::KIND, |_, id| Ok(id.len())).unwrap();
    assert!(listed.is_empty(), "{}", listed.len());
    let _ = std::fs::remove_dir_all(&root);
}

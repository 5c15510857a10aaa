//! The one error type of the library and its stable integer codes.
//!
//! Every [`Error`] maps to exactly one negative `FC_ERR_*` code that the C ABI returns; the codes
//! are part of the ABI and never change meaning once released (new ones are only appended).

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in framecache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A NULL pointer, an impossible value or a call in the wrong state.
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    /// The slot (or the root directory) does not exist.
    #[error("slot not found: {0}")]
    NotFound(String),
    /// Another live writer owns the slot.
    #[error("slot is owned by a live writer (pid {pid})")]
    Busy {
        /// Process id recorded in the slot header by the live owner.
        pid: u32,
    },
    /// No frame arrived within the timeout.
    #[error("timed out")]
    Timeout,
    /// The writer is gone and no unread frame remains.
    #[error("writer is gone and no frame remains to read")]
    WriterGone,
    /// The frame was overwritten by the writer while (or before) it was read.
    #[error("frame was overwritten while it was read")]
    Overwritten,
    /// The file does not start with the expected magic number.
    #[error("not a framecache slot (bad magic)")]
    BadMagic,
    /// The slot was written by an incompatible protocol version.
    #[error("unsupported protocol version {found} (this library speaks {supported})")]
    Version {
        /// Version found in the header.
        found: u32,
        /// Version this library implements.
        supported: u32,
    },
    /// The header is internally inconsistent (lying sizes, offsets out of range).
    #[error("corrupt slot header: {0}")]
    Corrupt(String),
    /// The file is shorter than its header says.
    #[error("slot file is truncated: {0}")]
    Truncated(String),
    /// The slot id does not match `[A-Za-z0-9._-]{1,64}` (or is `.`/`..`).
    #[error("bad slot id {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadSlotId(String),
    /// The operating system refused access.
    #[error("permission denied: {0}")]
    Permission(String),
    /// Shared memory is full.
    #[error("no space left for the slot: {0}")]
    NoSpace(String),
    /// Any other operating-system error.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The caller's buffer is smaller than the frame.
    #[error("buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes offered.
        got: usize,
    },
    /// The pixel format (FourCC) is not one framecache knows.
    #[error("unsupported pixel format {0}")]
    UnsupportedFormat(String),
    /// A Rust panic was caught at the C boundary (a bug in framecache).
    #[error("internal panic caught at the C boundary")]
    Panic,
    /// A call that is not allowed in the handle's current state (e.g. acquire twice).
    #[error("wrong state: {0}")]
    State(&'static str),
    /// The slot exists but is of another kind (e.g. a packet ring opened as a frame ring).
    #[error("slot is of another kind: {0}")]
    WrongKind(String),
    /// A packet larger than the packet ring allows.
    #[error("packet of {size} bytes is larger than the ring allows ({max})")]
    Oversized {
        /// Size of the packet.
        size: u64,
        /// Largest packet the ring takes.
        max: u64,
    },
    /// There is no packet ring under this id.
    #[error("no packet ring for slot {0}")]
    NoPacketRing(String),
    /// No codec parameters (of that generation) are available for the stream.
    #[error("no codec parameters: {0}")]
    NoCodecParams(String),
    /// The packet was overwritten while (or before) it was read.
    #[error("packet was overwritten while it was read")]
    PacketOverrun,
    /// The URL is malformed, of an unknown scheme, or not allowed (file outside a mount).
    #[error("bad URL: {0}")]
    BadUrl(String),
    /// A peer or a request was refused (unknown stream key, key in use, wrong passphrase).
    #[error("rejected: {0}")]
    Rejected(String),
    /// A protocol peer sent something we cannot use, or the connection failed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A system library this feature needs (libsrt) is not installed.
    #[error("library not available: {0}")]
    NoLibrary(String),
    /// CUDA is not usable here (no libcuda, no device): every cuframes call on the CUDA backend.
    #[error("CUDA not available: {0}")]
    NoCuda(String),
    /// Every buffer is held and the policy is to skip: the frame was not published.
    #[error("no free buffer: every buffer is held by a subscriber (frame skipped)")]
    NoBuffer,
}

/// Success.
pub const FC_OK: i32 = 0;
/// See [`Error::InvalidArg`].
pub const FC_ERR_INVALID_ARG: i32 = -1;
/// See [`Error::NotFound`].
pub const FC_ERR_NOT_FOUND: i32 = -2;
/// See [`Error::Busy`].
pub const FC_ERR_BUSY: i32 = -3;
/// See [`Error::Timeout`].
pub const FC_ERR_TIMEOUT: i32 = -4;
/// See [`Error::WriterGone`].
pub const FC_ERR_WRITER_GONE: i32 = -5;
/// See [`Error::Overwritten`].
pub const FC_ERR_OVERWRITTEN: i32 = -6;
/// See [`Error::BadMagic`].
pub const FC_ERR_BAD_MAGIC: i32 = -7;
/// See [`Error::Version`].
pub const FC_ERR_VERSION: i32 = -8;
/// See [`Error::Corrupt`].
pub const FC_ERR_CORRUPT: i32 = -9;
/// See [`Error::Truncated`].
pub const FC_ERR_TRUNCATED: i32 = -10;
/// See [`Error::BadSlotId`].
pub const FC_ERR_BAD_SLOT_ID: i32 = -11;
/// See [`Error::Permission`].
pub const FC_ERR_PERMISSION: i32 = -12;
/// See [`Error::NoSpace`].
pub const FC_ERR_NO_SPACE: i32 = -13;
/// See [`Error::Io`].
pub const FC_ERR_IO: i32 = -14;
/// See [`Error::BufferTooSmall`].
pub const FC_ERR_BUFFER_TOO_SMALL: i32 = -15;
/// See [`Error::UnsupportedFormat`].
pub const FC_ERR_UNSUPPORTED_FORMAT: i32 = -16;
/// See [`Error::Panic`].
pub const FC_ERR_PANIC: i32 = -17;
/// See [`Error::State`].
pub const FC_ERR_STATE: i32 = -18;
/// See [`Error::WrongKind`].
pub const FC_ERR_WRONG_KIND: i32 = -19;
/// See [`Error::Oversized`].
pub const FC_ERR_OVERSIZED: i32 = -20;
/// See [`Error::NoPacketRing`].
pub const FC_ERR_NO_PACKET_RING: i32 = -21;
/// See [`Error::NoCodecParams`].
pub const FC_ERR_NO_CODEC_PARAMS: i32 = -22;
/// See [`Error::PacketOverrun`].
pub const FC_ERR_PACKET_OVERRUN: i32 = -23;
/// See [`Error::BadUrl`].
pub const FC_ERR_BAD_URL: i32 = -24;
/// See [`Error::Rejected`].
pub const FC_ERR_REJECTED: i32 = -25;
/// See [`Error::Protocol`].
pub const FC_ERR_PROTOCOL: i32 = -26;
/// See [`Error::NoLibrary`].
pub const FC_ERR_NO_LIBRARY: i32 = -27;
/// See [`Error::NoCuda`].
pub const FC_ERR_NO_CUDA: i32 = -28;
/// See [`Error::NoBuffer`].
pub const FC_ERR_NO_BUFFER: i32 = -29;

/// Human-readable text of every code, indexed by `-code`. Static so `fc_strerror` can hand out
/// pointers that live for the whole process.
pub(crate) const MESSAGES: [&str; 30] = [
    "success\0",
    "invalid argument\0",
    "slot not found\0",
    "slot is owned by a live writer\0",
    "timed out\0",
    "writer is gone and no frame remains to read\0",
    "frame was overwritten while it was read\0",
    "not a framecache slot (bad magic)\0",
    "unsupported protocol version\0",
    "corrupt slot header\0",
    "slot file is truncated\0",
    "bad slot id (use 1-64 characters of A-Z a-z 0-9 . _ -)\0",
    "permission denied\0",
    "no space left in shared memory\0",
    "i/o error\0",
    "buffer too small\0",
    "unsupported pixel format\0",
    "internal panic caught at the C boundary\0",
    "call not allowed in this state\0",
    "slot is of another kind\0",
    "packet is larger than the ring allows\0",
    "no packet ring for this slot\0",
    "no codec parameters for the stream\0",
    "packet was overwritten while it was read\0",
    "bad or unsupported URL\0",
    "rejected by the peer or the key registry\0",
    "protocol error\0",
    "a system library is missing (e.g. libsrt)\0",
    "CUDA is not available (no libcuda or no device)\0",
    "no free buffer (frame skipped)\0",
];

/// The static message for a code (`"unknown error"` for codes this version does not know).
pub fn strerror(code: i32) -> &'static str {
    let s = code
        .checked_neg()
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| MESSAGES.get(i))
        .copied()
        .unwrap_or("unknown error\0");
    s
}

impl Error {
    /// The stable `FC_ERR_*` code of this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::InvalidArg(_) => FC_ERR_INVALID_ARG,
            Error::NotFound(_) => FC_ERR_NOT_FOUND,
            Error::Busy { .. } => FC_ERR_BUSY,
            Error::Timeout => FC_ERR_TIMEOUT,
            Error::WriterGone => FC_ERR_WRITER_GONE,
            Error::Overwritten => FC_ERR_OVERWRITTEN,
            Error::BadMagic => FC_ERR_BAD_MAGIC,
            Error::Version { .. } => FC_ERR_VERSION,
            Error::Corrupt(_) => FC_ERR_CORRUPT,
            Error::Truncated(_) => FC_ERR_TRUNCATED,
            Error::BadSlotId(_) => FC_ERR_BAD_SLOT_ID,
            Error::Permission(_) => FC_ERR_PERMISSION,
            Error::NoSpace(_) => FC_ERR_NO_SPACE,
            Error::Io(_) => FC_ERR_IO,
            Error::BufferTooSmall { .. } => FC_ERR_BUFFER_TOO_SMALL,
            Error::UnsupportedFormat(_) => FC_ERR_UNSUPPORTED_FORMAT,
            Error::Panic => FC_ERR_PANIC,
            Error::State(_) => FC_ERR_STATE,
            Error::WrongKind(_) => FC_ERR_WRONG_KIND,
            Error::Oversized { .. } => FC_ERR_OVERSIZED,
            Error::NoPacketRing(_) => FC_ERR_NO_PACKET_RING,
            Error::NoCodecParams(_) => FC_ERR_NO_CODEC_PARAMS,
            Error::PacketOverrun => FC_ERR_PACKET_OVERRUN,
            Error::BadUrl(_) => FC_ERR_BAD_URL,
            Error::Rejected(_) => FC_ERR_REJECTED,
            Error::Protocol(_) => FC_ERR_PROTOCOL,
            Error::NoLibrary(_) => FC_ERR_NO_LIBRARY,
            Error::NoCuda(_) => FC_ERR_NO_CUDA,
            Error::NoBuffer => FC_ERR_NO_BUFFER,
        }
    }

    /// Wraps an OS error on a slot file or the root, sorting out the cases callers act on
    /// (permission, space, missing: a missing file is a missing slot, [`Error::NotFound`]).
    #[doc(hidden)]
    pub fn os(context: &str, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                Error::Permission(format!("{context}: {e}"))
            }
            Some(libc::ENOSPC) | Some(libc::ENOMEM) | Some(libc::EFBIG) => {
                Error::NoSpace(format!("{context}: {e}"))
            }
            Some(libc::ENOENT) => Error::NotFound(context.to_string()),
            _ => Error::file(context, e),
        }
    }

    /// Wraps an OS error on a file that is not a slot (a VOD file, a certificate): as
    /// [`Error::os`], except that a missing file stays an I/O error saying so with its path,
    /// never "slot not found".
    pub fn file(context: &str, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                Error::Permission(format!("{context}: {e}"))
            }
            Some(libc::ENOSPC) | Some(libc::ENOMEM) | Some(libc::EFBIG) => {
                Error::NoSpace(format!("{context}: {e}"))
            }
            _ => Error::Io(io::Error::new(e.kind(), format!("{context}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_message_and_round_trips() {
        for code in 0..MESSAGES.len() as i32 {
            assert!(strerror(-code).ends_with('\0'));
            assert!(strerror(-code).len() > 1);
        }
        assert_eq!(strerror(1), "unknown error\0");
        assert_eq!(strerror(i32::MIN), "unknown error\0");
        // The last code has the last message: no code was added without its text.
        assert_eq!(Error::NoBuffer.code(), -(MESSAGES.len() as i32 - 1));
    }
}

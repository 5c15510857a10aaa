//! The `struct_size` rule, in one place for every struct of the C ABI (the header's preamble
//! states it for C programmers):
//!
//! - **Input structs** (configs, requests): a `struct_size` smaller than today's struct is
//!   accepted when it covers the struct's required fields ([`AbiStruct::MIN_IN`]); the fields
//!   past it read as zero, which every field documents as its default. A larger one (a program
//!   built against a newer header) is accepted when the bytes this library does not know are
//!   all zero; otherwise `FC_ERR_INVALID_ARG` names the struct. The library reads a copy of
//!   exactly the caller's bytes, never past them.
//! - **Output structs** (frames, stats, status): written only up to the caller's `struct_size`
//!   (the caller's `struct_size` itself is left as it is), never past it; the size must cover
//!   the fields every version of the header had (the struct as first released: fields added
//!   later, such as the packet fields of `fc_cuframes_info`, are written only when the caller's
//!   struct has them).
//! - **Arrays** of such structs step by the caller's `struct_size` (the size its compiler laid
//!   them out with).

use std::mem::size_of;

use framecache_shm::error::{Error, Result};

/// A struct of the C ABI.
///
/// # Safety
/// Implementors are `#[repr(C)]`, begin with `struct_size: u32`, and hold only integers,
/// arrays of them, raw pointers and optional function pointers, so all-zero bytes are a valid
/// value (their documented default).
pub(crate) unsafe trait AbiStruct {
    /// The C name, for messages.
    const NAME: &'static str;
    /// Bytes an input of this struct must have: up to the end of its required fields.
    const MIN_IN: usize;
    /// Bytes an output of this struct must have: the struct as first released (its later
    /// fields are written only when the caller's struct has them).
    const MIN_OUT: usize;
}

fn declared<T>(p: *const T, what: &str) -> Result<usize> {
    if p.is_null() {
        return Err(Error::InvalidArg(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL; every ABI struct starts with a u32 struct_size the caller set.
    Ok(unsafe { std::ptr::read_unaligned(p.cast::<u32>()) } as usize)
}

/// A copy of the caller's input struct at `p`, by the rule above.
pub(crate) fn read_in<T: AbiStruct>(p: *const T, what: &str) -> Result<T> {
    let n = declared(p, what)?;
    let ours = size_of::<T>();
    if n < T::MIN_IN {
        return Err(Error::InvalidArg(format!(
            "{what}: {}.struct_size is {n}, but its required fields need at least {}",
            T::NAME,
            T::MIN_IN
        )));
    }
    if n > ours {
        // SAFETY: the caller's struct has `n` bytes.
        let tail = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), n - ours) };
        if tail.iter().any(|&b| b != 0) {
            return Err(Error::InvalidArg(format!(
                "{what}: {} has {} bytes past the {ours} this library knows, and they are not \
                 zero (fields of a newer header this library cannot honour)",
                T::NAME,
                n - ours
            )));
        }
    }
    // SAFETY: all-zero is a valid T (AbiStruct); the caller's struct has at least
    // min(n, ours) bytes, copied over the zeroes.
    unsafe {
        let mut v: T = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut v as *mut T).cast::<u8>(), n.min(ours));
        Ok(v)
    }
}

/// The caller's size of the output struct at `p`, checked before any work is done.
pub(crate) fn out_size<T: AbiStruct>(p: *const T, what: &str) -> Result<usize> {
    let n = declared(p, what)?;
    if n < T::MIN_OUT {
        return Err(Error::InvalidArg(format!(
            "{what}: {}.struct_size is {n}, expected at least {}",
            T::NAME,
            T::MIN_OUT
        )));
    }
    Ok(n)
}

/// Writes `v` into the caller's output struct at `p`: its bytes after `struct_size`, up to the
/// caller's `struct_size` (which stays as the caller set it).
pub(crate) fn write_out<T: AbiStruct>(p: *mut T, v: &T, what: &str) -> Result<()> {
    let n = out_size(p, what)?;
    let len = n.min(size_of::<T>());
    // SAFETY: the caller's struct has `n` writable bytes; the first 4 (struct_size) are kept.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (v as *const T).cast::<u8>().add(4),
            p.cast::<u8>().add(4),
            len - 4,
        )
    };
    Ok(())
}

/// An all-zero struct to fill before [`write_out`].
pub(crate) fn blank<T: AbiStruct>() -> T {
    // SAFETY: all-zero is a valid T (AbiStruct).
    unsafe { std::mem::zeroed() }
}

/// Element `i` of a caller's array whose elements are `stride` bytes apart.
pub(crate) fn element<T>(base: *const T, i: usize, stride: usize) -> *const T {
    base.cast::<u8>().wrapping_add(i * stride).cast()
}

/// As [`element`], writable.
pub(crate) fn element_mut<T>(base: *mut T, i: usize, stride: usize) -> *mut T {
    base.cast::<u8>().wrapping_add(i * stride).cast()
}

/// Declares the ABI structs: `T => (end of its required input fields, its size as first
/// released)`.
macro_rules! abi_structs {
    ($($t:ty => ($min_in:expr, $min_out:expr)),* $(,)?) => {
        $(
            // SAFETY: each is a #[repr(C)] plain-data struct starting with struct_size.
            unsafe impl crate::abi::AbiStruct for $t {
                const NAME: &'static str = stringify!($t);
                const MIN_IN: usize = $min_in;
                const MIN_OUT: usize = $min_out;
            }
        )*
    };
}
pub(crate) use abi_structs;

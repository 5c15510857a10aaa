//! Slots from C: `fc_slot_info` and `fc_slot_list`, for frame and packet slots alike.

use std::ffi::{c_char, c_int};

use framecache_shm::error::Error;
use framecache_shm::{ring, slot};

use crate::abi::{abi_structs, blank, element_mut, out_size, write_out};
use crate::*;

abi_structs! {
    fc_slot_status => (std::mem::size_of::<fc_slot_status>(), std::mem::offset_of!(fc_slot_status, stream_count)),
}

/// `fc_slot_status.kind`: a frame ring.
pub const FC_KIND_FRAMES: u32 = 1;

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
        out_size(out, "out")?;
        // A frame slot if the id has one, else its packet slot.
        let root = slot::root_dir();
        let mut s = blank();
        match ring::slot_info(&root, id) {
            Ok(info) => fill_status(&mut s, &info),
            Err(Error::NotFound(_)) => match framecache_shm::packet::slot_info(&root, id) {
                Ok(info) => fill_packet_status(&mut s, &info),
                Err(Error::NoPacketRing(_)) => return Err(Error::NotFound(id.to_string())),
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
        write_out(out, &s, "out")
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
        let packets: Vec<framecache_shm::packet::PacketSlotInfo> =
            framecache_shm::packet::list_slots(&root)?
                .into_iter()
                .filter_map(|(_, r)| r.ok())
                .collect();
        let total = frames.len() + packets.len();
        if cap > 0 {
            // The entries are out[0].struct_size bytes apart (the caller's sizeof).
            let stride = out_size(out, "out[0]")?;
            let statuses = frames
                .iter()
                .map(|i| {
                    let mut s = blank();
                    fill_status(&mut s, i);
                    s
                })
                .chain(packets.iter().map(|i| {
                    let mut s = blank();
                    fill_packet_status(&mut s, i);
                    s
                }));
            for (k, s) in statuses.take(cap).enumerate() {
                let o = element_mut(out, k, stride);
                // SAFETY: entry k of the caller's `cap` entries; its struct_size is set like out[0]'s.
                unsafe { std::ptr::write_unaligned(o.cast::<u32>(), stride as u32) };
                write_out(o, &s, "out[k]")?;
            }
        }
        *count = total;
        Ok(())
    })
}

// The symbol version of each function above (generated by build.rs, see docs/ABI.md).
include!(concat!(env!("OUT_DIR"), "/symver_slot.rs"));

//! Fuzzes packet-ring header and stream-table validation: whatever is accepted must describe
//! regions inside the file.
#![no_main]

use framecache_shm::packet::layout::{self, PACKET_DESC_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The claimed file length comes from the input too, so lying sizes are explored.
    let Some((len, bytes)) = data.split_first_chunk::<8>() else { return };
    let len = u64::from_le_bytes(*len);
    if let Ok(l) = layout::validate(bytes, len) {
        assert!(l.file_size <= len);
        assert!(l.desc_at(l.desc_count - 1) as u64 + PACKET_DESC_SIZE as u64 <= l.payload_offset);
        assert!(l.payload_offset + l.payload_size == l.file_size);
    }
});

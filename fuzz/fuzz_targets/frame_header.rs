//! Fuzzes frame-ring header validation: any bytes, any claimed file length. Whatever is accepted
//! must describe memory inside the file.
#![no_main]

use framecache_shm::ring::layout::{self, DESC_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(l) = layout::validate(data, len) {
        assert!(l.file_size <= len);
        assert!(l.desc_at(l.depth - 1) + DESC_SIZE <= l.data_offset as usize);
        assert!(l.data_at(l.depth - 1) as u64 + l.geometry.frame_size <= l.file_size);
    }
});

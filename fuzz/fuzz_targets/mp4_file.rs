//! Fuzzes MP4 files as `file://` inputs read them (progressive sample tables and fragments):
//! never a panic, no allocation beyond the input's own size, every parameter set and unit
//! refers to an announced track.
#![no_main]

use framecache_media::{mp4::read_bytes, Media};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tracks = 0usize;
    let _ = read_bytes(data, &mut |m: Media| {
        match &m {
            Media::Tracks(t) => tracks = t.len(),
            Media::AddTrack(_) => tracks += 1,
            Media::Params { track, .. } => assert!(*track < tracks),
            Media::Frame { track, data: d, .. } => {
                assert!(*track < tracks);
                assert!(d.len() <= data.len() * 2, "a unit larger than the file");
            }
        }
        Ok(())
    });
});

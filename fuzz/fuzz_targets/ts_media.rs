//! Fuzzes the path from MPEG-TS bytes to access units (demuxer + conversion to ingest media),
//! cut at fuzzer-chosen points: never a panic, and every unit refers to an announced track.
#![no_main]

use framecache_media::{ts::TsToMedia, Media};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let mut ts = TsToMedia::new();
    let mut tracks = 0usize;
    let mut check = |m: Media| {
        match &m {
            Media::Tracks(t) => tracks = t.len(),
            Media::AddTrack(_) => tracks += 1,
            Media::Params { track, .. } | Media::Frame { track, .. } => assert!(*track < tracks),
        }
        Ok(())
    };
    let step = usize::from(cut).max(1) * 7;
    for chunk in bytes.chunks(step) {
        ts.push(chunk, &mut check).unwrap();
    }
    ts.flush(&mut check).unwrap();
});

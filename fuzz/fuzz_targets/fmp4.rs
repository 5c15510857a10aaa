//! Fuzzes the fragmented-MP4 path of HLS (init segment, then a media segment, as the pull
//! feeds them): never a panic, every parameter set and unit refers to an announced track, and
//! every video unit is Annex-B.
#![no_main]

use framecache_media::{mp4::Fmp4ToMedia, Media};
use framecache_shm::packet::{FC_CODEC_H264, FC_CODEC_HEVC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the init segment ends.
    let Some((head, bytes)) = data.split_first_chunk::<2>() else { return };
    let cut = usize::from(u16::from_le_bytes(*head)).min(bytes.len());
    let mut demux = Fmp4ToMedia::new();
    let mut codecs = Vec::new();
    let mut check = |m: Media| {
        match &m {
            Media::Tracks(t) => codecs = t.iter().map(|t| t.codec).collect(),
            Media::AddTrack(t) => codecs.push(t.codec),
            Media::Params { track, .. } => assert!(*track < codecs.len()),
            Media::Frame { track, data, .. } => {
                assert!(*track < codecs.len());
                if matches!(codecs[*track], FC_CODEC_H264 | FC_CODEC_HEVC) {
                    assert!(data.starts_with(&[0, 0, 0, 1]), "video unit not Annex-B");
                }
            }
        }
        Ok(())
    };
    if demux.push(&bytes[..cut], &mut check).is_ok() {
        let _ = demux.push(&bytes[cut..], &mut check);
    }
});

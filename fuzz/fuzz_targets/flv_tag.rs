//! Fuzzes the FLV tag-body parser (RTMP media and FLV files): never a panic, and what comes
//! out is well formed (Annex-B units start with a start code).
#![no_main]

use framecache::ingest::flv::{FlvMedia, FlvParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut p = FlvParser::new();
    // Tags are split by a 2-byte length so one input exercises parser state across tags
    // (a sequence header followed by frames).
    let mut rest = data;
    while rest.len() >= 3 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let video = rest[2] & 1 == 1;
        let body = &rest[3..3 + n];
        let r = if video { p.video(body) } else { p.audio(body) };
        if let Ok(FlvMedia::Frame { data, codec, .. }) = r {
            assert!(!data.is_empty());
            if codec == 1 || codec == 2 {
                assert_eq!(&data[..4], &[0, 0, 0, 1]);
            }
        }
        rest = &rest[3 + n..];
    }
});

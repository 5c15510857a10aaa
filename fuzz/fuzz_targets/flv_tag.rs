//! Fuzzes the FLV tag-body parser (RTMP media and FLV files): never a panic, what comes out
//! is well formed (Annex-B units start with a start code), and the in-place parse of the RTMP
//! publish path gives exactly what the copying parse gives.
#![no_main]

use framecache_media::flv::{FlvMedia, FlvMediaRef, FlvParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut p = FlvParser::new();
    let mut q = FlvParser::new();
    // Tags are split by a 2-byte length so one input exercises parser state across tags
    // (a sequence header followed by frames).
    let mut rest = data;
    while rest.len() >= 3 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        let video = rest[2] & 1 == 1;
        let body = &rest[3..3 + n];
        let r = if video { p.video(body) } else { p.audio(body) };
        let mut copy = body.to_vec();
        let r2 = q.parse_in_place(video, &mut copy).map(FlvMediaRef::into_owned);
        assert_eq!(r, r2);
        if let Ok(FlvMedia::Frame { data, codec, .. }) = r {
            assert!(!data.is_empty());
            if codec == 1 || codec == 2 {
                assert_eq!(&data[..4], &[0, 0, 0, 1]);
            }
        }
        rest = &rest[3 + n..];
    }
});

//! Fuzzes the RTP depacketiser of WHIP publishers (H.264 single NAL/STAP-A/FU-A, Opus, the
//! reorder buffer and the timeline): records of kind, sequence number, timestamp, marker and
//! clock step, and a payload. Never a panic; frames name announced tracks and video starts at
//! a keyframe (checked inside `fuzz_packets`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    framecache_media::rtp::fuzz_packets(data);
});

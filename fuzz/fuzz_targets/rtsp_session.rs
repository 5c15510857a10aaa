//! Fuzzes an RTSP pull end to end against a fake camera on loopback: the input is split into
//! the SDP of the DESCRIBE answer and the interleaved bytes after PLAY, which go through
//! retina (SDP, RTP, depacketisers) and framecache's mapping to media. Never a panic or a hang;
//! every frame refers to an announced track (checked inside `fuzz_session`).
//! Seed: `framecache_ingest::rtsp::sample_session()` (fuzz/run.sh writes it).
//!
//! Panics in the parsers we do not own are caught by `rtsp::run`, which ends the session with
//! an error (found by this target: sdp-types 0.1.8 `parser.rs:374` asserts on a misplaced
//! line; retina 0.4.21 `client/parse.rs:249` unwraps an `m=` line without formats). libFuzzer's
//! panic hook aborts on every panic, caught or not; so this target lets panics in
//! dependencies through to that catch and aborts on any panic in framecache's own code.
#![no_main]

use framecache_ingest::rtsp::fuzz_session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| {
                let f = l.file();
                f.contains("/registry/src/") || f.contains("third_party/")
            }) {
                return;
            }
            fuzzer_hook(info)
        }));
    });
    // First two bytes: the SDP's length.
    let Some((len, rest)) = data.split_at_checked(2) else { return };
    let n = usize::from(u16::from_be_bytes([len[0], len[1]])).min(rest.len());
    let (sdp, media) = rest.split_at(n);
    let _ = fuzz_session(sdp, media);
});

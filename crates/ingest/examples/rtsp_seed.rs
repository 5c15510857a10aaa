//! Writes a seed of the `rtsp_session` fuzz target to stdout: the SDP's length (2 bytes),
//! the SDP, then the interleaved RTP of `rtsp::sample_session()` (H.264 + AAC), or with the
//! argument `opus` of `rtsp::sample_session_with(true)` (H.264 + Opus).
use std::io::Write;

fn main() {
    let opus = std::env::args().nth(1).as_deref() == Some("opus");
    let (sdp, media) = framecache_ingest::rtsp::sample_session_with(opus);
    let mut out = (sdp.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&sdp);
    out.extend_from_slice(&media);
    std::io::stdout().write_all(&out).expect("stdout");
}

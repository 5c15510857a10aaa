//! Writes the seed of the `rtsp_session` fuzz target to stdout: the SDP's length (2 bytes),
//! the SDP, then the interleaved RTP of `rtsp::sample_session()`.
use std::io::Write;

fn main() {
    let (sdp, media) = framecache_ingest::rtsp::sample_session();
    let mut out = (sdp.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&sdp);
    out.extend_from_slice(&media);
    std::io::stdout().write_all(&out).expect("stdout");
}

//! framecache-media: the media formats framecache reads and writes, sans-IO.
//!
//! **Owns**: the media model every source becomes ([`media`]: tracks, codec parameters, access
//! units), MPEG-TS demux and mux ([`ts`]), FLV tag bodies ([`flv`]), MP4 and fragmented MP4
//! ([`mp4`]), HLS playlists ([`hls`]), the inbound RTMP chunk stream ([`chunk`]), the codec
//! bitstream helpers the engines share ([`codec`]: Annex-B, SPS, AudioSpecificConfig, ADTS, CRC),
//! the one timestamp unwrapper ([`time`]), RTP depacketising of WebRTC publishers ([`rtp`]) and
//! the way pushers of any protocol reach a stream key
//! ([`push`]).
//!
//! **May import**: `framecache-shm` (codec ids, the error type), `thiserror`, `log`. No
//! sockets, clocks, threads or async runtime: bytes in, events out, so every parser is unit
//! tested and fuzzed without I/O. Every fuzz target of a container or protocol depends on this
//! crate. It never prints.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]
#![allow(clippy::needless_range_loop)]

pub mod chunk;
pub mod codec;
pub mod credential;
pub mod flv;
pub mod hls;
pub mod media;
pub mod mp4;
pub mod push;
pub mod rtp;
pub mod time;
pub mod ts;

pub use media::{FrameRef, Media, MediaOut, Track};
pub use push::{PushGate, PushRefusal, PushRequest, PushSink};

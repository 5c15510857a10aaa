//! A packet slot as MPEG-TS, packet by packet: what `framecache export`/`cat` write and what
//! SRT play sends. The slot is followed from a keyframe (re-attached when its writer
//! re-creates it, skipping to a keyframe after an overrun) and each packet comes out as the
//! TS bytes that carry it, parameter sets in-band on keyframes as the slot keeps them.

use std::path::Path;
use std::time::Duration;

use framecache_media::ts::{Codec, MuxStream, Muxer};
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::*;

/// A packet slot read as MPEG-TS.
pub struct SlotTs {
    follower: Follower,
    streams: Vec<StreamInfo>,
    mux: Muxer,
    buf: Vec<u8>,
}

impl SlotTs {
    /// Opens slot `id` under `root` at `start` (a keyframe, or the oldest one).
    pub fn open(root: &Path, id: &str, start: PacketStart) -> Result<SlotTs> {
        let r = PacketReader::open_in(root, id, PacketReaderConfig { start })?;
        let streams = r.streams();
        let mut mux_streams = Vec::new();
        for s in &streams {
            if s.codec == FC_CODEC_AAC {
                let (_, asc) = r
                    .codec_params(s.index, 0)
                    .map_err(|e| Error::NoCodecParams(format!("stream {}: {e}", s.index)))?;
                mux_streams.push(MuxStream::aac(&asc));
            } else if s.codec == FC_CODEC_OPUS {
                // Raw packets with an OpusHead (the ring's form) get the TS control header;
                // a TS-demuxed stream without one carries it already.
                let head = r.codec_params(s.index, 0).ok().map(|(_, h)| h);
                mux_streams.push(MuxStream {
                    codec: Codec::Opus,
                    asc: head,
                });
            } else {
                mux_streams.push(MuxStream::new(Codec::from_fc_codec(s.codec)));
            }
        }
        Ok(SlotTs {
            follower: Follower::new(r),
            streams,
            mux: Muxer::new(&mux_streams),
            buf: Vec::new(),
        })
    }

    /// The TS bytes of the next packet, waiting at most `timeout` ([`Error::Timeout`]);
    /// [`Error::WriterGone`] when the slot's writer left.
    pub fn next(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let info = self.follower.next(&mut self.buf, timeout)?.info;
        let s = self
            .streams
            .get(info.stream as usize)
            .ok_or_else(|| Error::Corrupt(format!("stream {} of a packet", info.stream)))?;
        // Timestamps to 90 kHz (the muxer's clock).
        let pts = rescale(info.pts, s.timebase, 90_000);
        let dts = if info.dts == FC_NOPTS {
            pts
        } else {
            rescale(info.dts, s.timebase, 90_000)
        };
        let keyframe = info.flags & FC_PACKET_KEYFRAME != 0;
        Ok(self.mux.mux(
            info.stream as usize,
            &self.buf[..info.size as usize],
            pts,
            dts,
            keyframe,
        ))
    }

    /// The reader's counters (packets skipped after overruns, ...).
    pub fn stats(&mut self) -> PacketReaderStats {
        self.follower.reader().stats()
    }
}

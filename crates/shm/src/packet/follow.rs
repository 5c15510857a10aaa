//! Following a packet slot: what copy://, RTMP play, the WHEP feed and `framecache export` do
//! with a packet slot, written once. A follower reads every packet in order from where its
//! reader started (normally the latest keyframe), steps over packets overwritten under it, and
//! hands out each stream's codec parameters again whenever their generation changes, with the
//! first packet that uses them. Timestamps stay in each stream's timebase ([`super::rescale`]
//! converts them).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{PacketInfo, PacketReader, PacketReaderConfig, PacketStart, StreamInfo};
use crate::error::{Error, Result};

/// A packet handed out by [`Follower::next`]; its bytes are in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    /// The packet.
    pub info: PacketInfo,
    /// New codec parameters of `info.stream`: the first packet of a stream with parameters
    /// brings them, and so does the first packet after the writer changed them.
    pub params: Option<Vec<u8>>,
}

/// Reads a packet slot in order, with its codec parameters.
#[derive(Debug)]
pub struct Follower {
    reader: PacketReader,
    streams: Vec<StreamInfo>,
    gens: Vec<u32>,
}

impl Follower {
    /// Follows `reader` from where it stands.
    pub fn new(reader: PacketReader) -> Follower {
        let streams = reader.streams();
        Follower {
            gens: vec![0; streams.len()],
            streams,
            reader,
        }
    }

    /// Follows packet slot `id` under `root` from `start`.
    pub fn open_in(root: &Path, id: &str, start: PacketStart) -> Result<Follower> {
        Ok(Follower::new(PacketReader::open_in(
            root,
            id,
            PacketReaderConfig { start },
        )?))
    }

    /// The slot's streams (as at open).
    pub fn streams(&self) -> &[StreamInfo] {
        &self.streams
    }

    /// The reader underneath (counters, codec parameters of any generation).
    pub fn reader(&mut self) -> &mut PacketReader {
        &mut self.reader
    }

    /// The next packet into `buf` (resized to fit), waiting at most `timeout`. Packets
    /// overwritten while they were copied are stepped over (the reader counts them). `Timeout`
    /// when nothing came; `WriterGone` when the writer left and nothing remains.
    pub fn next(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<Followed> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            match self.reader.next_vec(buf, left) {
                Ok(info) => {
                    let s = info.stream as usize;
                    let mut params = None;
                    if info.params_gen != 0 && self.gens.get(s) != Some(&info.params_gen) {
                        if let Ok((g, p)) = self.reader.codec_params(info.stream, info.params_gen) {
                            if let Some(seen) = self.gens.get_mut(s) {
                                *seen = g;
                            }
                            params = Some(p);
                        }
                    }
                    return Ok(Followed { info, params });
                }
                Err(Error::PacketOverrun) if !left.is_zero() => continue,
                Err(Error::PacketOverrun) => return Err(Error::Timeout),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{
        Packet, PacketSlotConfig, PacketWriter, StreamConfig, FC_CODEC_AAC, FC_CODEC_H264,
        FC_PACKET_KEYFRAME,
    };

    #[test]
    fn follows_from_a_keyframe_with_parameters_when_they_change() {
        let root = std::env::temp_dir().join(format!("fc-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut cfg = PacketSlotConfig::new(vec![
            StreamConfig::new(FC_CODEC_H264),
            StreamConfig::new(FC_CODEC_AAC),
        ]);
        cfg.payload_size = 1 << 20;
        let mut w = PacketWriter::create_in(&root, "f", &cfg).unwrap();
        let pkt = |stream, pts, key: bool, data: &'static [u8]| Packet {
            stream,
            pts,
            dts: pts,
            flags: if key { FC_PACKET_KEYFRAME } else { 0 },
            data,
        };
        w.set_codec_params(1, &[0x12, 0x10]).unwrap();
        w.set_codec_params(0, b"sps-1").unwrap();
        w.publish(&pkt(0, 0, false, b"before the keyframe"))
            .unwrap();
        w.publish(&pkt(0, 1, true, b"key-1")).unwrap();
        let mut f = Follower::open_in(&root, "f", PacketStart::Keyframe).unwrap();
        w.publish(&pkt(1, 1, true, b"aac")).unwrap();
        w.publish(&pkt(0, 2, false, b"p")).unwrap();
        w.set_codec_params(0, b"sps-2").unwrap();
        w.publish(&pkt(0, 3, true, b"key-2")).unwrap();
        w.publish(&pkt(0, 4, false, b"q")).unwrap();
        drop(w);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match f.next(&mut buf, Duration::from_millis(500)) {
                Ok(p) => got.push((
                    p.info.stream,
                    buf[..p.info.size as usize].to_vec(),
                    p.params,
                )),
                Err(Error::WriterGone) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let want: Vec<(u32, Vec<u8>, Option<Vec<u8>>)> = vec![
            (0, b"key-1".to_vec(), Some(b"sps-1".to_vec())),
            (1, b"aac".to_vec(), Some(vec![0x12, 0x10])),
            (0, b"p".to_vec(), None),
            (0, b"key-2".to_vec(), Some(b"sps-2".to_vec())),
            (0, b"q".to_vec(), None),
        ];
        assert_eq!(got, want);
        assert_eq!(f.streams().len(), 2);
        let _ = std::fs::remove_dir_all(&root);
    }
}

//! The RTMP chunk stream, inbound (sans-IO): bytes in, complete messages out.
//!
//! The publish hot path reads with this instead of rml_rtmp's deserializer, which copies every
//! payload byte several times (input buffer, per-chunk split, message buffer) and handles one
//! message at a time. Here a message that lies whole in the input is handed out where it lies:
//! as is when it fits one chunk, or with its chunks moved together over the chunk headers
//! between them (in the input, which the caller has just read, so it is in cache). Only a
//! message cut by the end of the input, or interleaved with another chunk stream's (as the
//! specification allows), is copied into the message buffer of its chunk stream. The message
//! is handed out mutable, so the caller can rewrite it in place (AVCC → Annex-B).
//!
//! Reference: Adobe's RTMP specification (2012), section 5.3.

/// Messages are at most 2^24 - 1 bytes (the length field has 3 bytes).
const MAX_MESSAGE: usize = (1 << 24) - 1;
/// More chunk streams than any encoder uses; bounds memory a hostile peer can pin.
const MAX_CHUNK_STREAMS: usize = 32;
/// Bytes of unfinished messages held at once, over all chunk streams.
const MAX_BUFFERED: usize = 32 << 20;
/// Chunk size before the peer's first Set Chunk Size.
const INITIAL_CHUNK_SIZE: usize = 128;

/// Protocol control message types the reader acts on itself.
const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;

/// Why the chunk stream cannot be read on: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A compressed header (type 1-3) on a chunk stream that never had a full one.
    #[error("chunk stream {0} continues a header it never sent")]
    NoPreviousHeader(u32),
    /// Set Chunk Size with 0 or a short payload.
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    /// More chunk streams or more unfinished bytes than the limits allow.
    #[error("too much unfinished data ({0})")]
    TooMuch(&'static str),
}

/// One complete message. The payload borrows the reader or the input until the next call.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message type id (8 audio, 9 video, 18 data, 20 command, 1-6 control, …).
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Timestamp in ms (32-bit, wraps).
    pub timestamp: u32,
    /// The payload.
    pub payload: &'a mut [u8],
}

#[derive(Debug, Default)]
struct ChunkStream {
    csid: u32,
    /// Timestamp of the message in progress or the last one.
    timestamp: u32,
    /// The last timestamp field, extended value included: a type-3 header that starts a
    /// message adds it again (as ffmpeg and librtmp do).
    delta: u32,
    /// The last timestamp field was 0xFFFFFF: type-3 chunks carry the 4-byte extension too.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Payload of the message in progress.
    buf: Vec<u8>,
    in_progress: bool,
}

/// A parsed chunk header, not yet applied.
struct Header {
    /// Bytes of basic + message header + extended timestamp.
    size: usize,
    fmt: u8,
    csid: u32,
    ts_field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    ext: Option<u32>,
}

/// Where the message handed out lives.
enum Ready {
    Input(usize, usize, usize),
    Stream(usize),
}

/// Reader of one connection's inbound chunk stream (after the handshake).
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    streams: Vec<ChunkStream>,
    /// The chunk being received: (stream index, payload bytes still to come).
    partial: Option<(usize, usize)>,
    buffered: usize,
    consumed: u64,
}

impl Default for ChunkReader {
    fn default() -> ChunkReader {
        ChunkReader::new()
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl ChunkReader {
    /// A reader at the start of a connection (chunk size 128).
    pub fn new() -> ChunkReader {
        ChunkReader {
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: Vec::new(),
            partial: None,
            buffered: 0,
            consumed: 0,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Bytes consumed since the start (what an RTMP Acknowledgement counts).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Reads from `input` up to the end of the next complete message. Returns the bytes
    /// consumed and that message, or `(n, None)` when `input` ended first: then the first `n`
    /// bytes are used up and the rest (less than one chunk header) must be passed again, with
    /// more bytes after it. Set Chunk Size and Abort take effect here and are handed out too.
    pub fn read<'a>(
        &'a mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Message<'a>>), ChunkError> {
        let mut pos = 0;
        let ready = loop {
            if let Some((si, left)) = self.partial {
                let take = left.min(input.len() - pos);
                let s = &mut self.streams[si];
                s.buf.extend_from_slice(&input[pos..pos + take]);
                self.buffered += take;
                pos += take;
                if take < left {
                    self.partial = Some((si, left - take));
                    break None;
                }
                self.partial = None;
                if s.buf.len() == s.length as usize {
                    break Some(Ready::Stream(si));
                }
                continue;
            }
            let Some(h) = self.header(&input[pos..])? else {
                break None;
            };
            let si = self.apply(&h)?;
            pos += h.size;
            let s = &self.streams[si];
            let left = s.length as usize - s.buf.len();
            let chunk = left.min(self.chunk_size);
            if s.buf.is_empty() && chunk == left && input.len() - pos >= left {
                // The whole message is in this chunk and in the input: no copy.
                let start = pos;
                pos += left;
                break Some(Ready::Input(si, start, pos));
            }
            if s.buf.is_empty() && chunk < left {
                if let Some((hsz, end)) = self.whole_in_input(s.csid, &input[pos..], left) {
                    // All its chunks are in the input, one after the other: joined where
                    // they lie (the buffer was just read, so it is in cache), not copied
                    // into the stream's message buffer.
                    let start = pos;
                    let cs = self.chunk_size;
                    let (mut dst, mut src, mut rest) = (start + cs, start + cs + hsz, left - cs);
                    while rest > 0 {
                        let take = rest.min(cs);
                        input.copy_within(src..src + take, dst);
                        dst += take;
                        src += take + hsz;
                        rest -= take;
                    }
                    pos += end;
                    break Some(Ready::Input(si, start, start + left));
                }
            }
            if self.buffered + chunk > MAX_BUFFERED {
                return Err(ChunkError::TooMuch("unfinished messages"));
            }
            self.partial = Some((si, chunk));
        };
        self.consumed += pos as u64;
        let Some(ready) = ready else {
            return Ok((pos, None));
        };
        let si = match ready {
            Ready::Input(si, ..) | Ready::Stream(si) => si,
        };
        let (type_id, stream_id, timestamp) = {
            let s = &mut self.streams[si];
            s.in_progress = false;
            (s.type_id, s.stream_id, s.timestamp)
        };
        let payload: &'a mut [u8] = match ready {
            Ready::Input(_, a, b) => &mut input[a..b],
            Ready::Stream(_) => {
                self.buffered -= self.streams[si].buf.len();
                self.control(type_id, si)?;
                let msg = Message {
                    type_id,
                    stream_id,
                    timestamp,
                    payload: &mut self.streams[si].buf[..],
                };
                return Ok((pos, Some(msg)));
            }
        };
        self.control_bytes(type_id, payload)?;
        Ok((
            pos,
            Some(Message {
                type_id,
                stream_id,
                timestamp,
                payload,
            }),
        ))
    }

    fn control(&mut self, type_id: u8, si: usize) -> Result<(), ChunkError> {
        if type_id == SET_CHUNK_SIZE || type_id == ABORT {
            let mut b = [0u8; 4];
            let p = &self.streams[si].buf;
            let n = p.len().min(4);
            b[..n].copy_from_slice(&p[..n]);
            return self.control_bytes(type_id, &b[..n]);
        }
        Ok(())
    }

    fn control_bytes(&mut self, type_id: u8, p: &[u8]) -> Result<(), ChunkError> {
        match type_id {
            SET_CHUNK_SIZE => {
                if p.len() < 4 {
                    return Err(ChunkError::BadChunkSize(0));
                }
                // The top bit is reserved (0); a size above the largest message means "no
                // splitting".
                let size = be32(p) & 0x7FFF_FFFF;
                if size == 0 {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = (size as usize).min(MAX_MESSAGE);
            }
            ABORT if p.len() >= 4 => {
                // Arrives in a chunk of its own, so no chunk is half received here.
                let csid = be32(p);
                if let Some(s) = self.streams.iter_mut().find(|s| s.csid == csid) {
                    if s.in_progress {
                        self.buffered -= s.buf.len();
                        s.buf.clear();
                        s.in_progress = false;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the message of `len` bytes whose first chunk's payload starts `b` lies whole
    /// in `b`, its continuation chunks next to each other with type-3 headers of its own chunk
    /// stream `csid` (what encoders send). Returns the continuation header size and where the
    /// message ends in `b`. Changes no state.
    fn whole_in_input(&self, csid: u32, b: &[u8], len: usize) -> Option<(usize, usize)> {
        let cs = self.chunk_size;
        let (mut at, mut rest, mut hsz) = (cs, len - cs, None);
        while rest > 0 {
            let h = self.header(b.get(at..)?).ok()??;
            if h.fmt != 3 || h.csid != csid || *hsz.get_or_insert(h.size) != h.size {
                return None;
            }
            let take = rest.min(cs);
            at += h.size + take;
            if at > b.len() {
                return None;
            }
            rest -= take;
        }
        Some((hsz?, at))
    }

    /// Parses the chunk header at the start of `b` without changing any state.
    fn header(&self, b: &[u8]) -> Result<Option<Header>, ChunkError> {
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3F {
            0 => match b.get(1) {
                Some(&x) => (u32::from(x) + 64, 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&lo), Some(&hi)) => (u32::from(hi) * 256 + u32::from(lo) + 64, 3),
                _ => return Ok(None),
            },
            x => (u32::from(x), 1),
        };
        let prev = self.streams.iter().find(|s| s.csid == csid);
        let need = [11, 7, 3, 0][fmt as usize];
        if b.len() < at + need {
            return Ok(None);
        }
        let mut h = Header {
            size: 0,
            fmt,
            csid,
            ts_field: 0,
            length: 0,
            type_id: 0,
            stream_id: 0,
            ext: None,
        };
        if fmt != 0 && prev.is_none() {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        if fmt <= 2 {
            h.ts_field = be24(&b[at..]);
        }
        if fmt <= 1 {
            h.length = be24(&b[at + 3..]);
            h.type_id = b[at + 6];
        }
        if fmt == 0 {
            h.stream_id = u32::from_le_bytes([b[at + 7], b[at + 8], b[at + 9], b[at + 10]]);
        }
        at += need;
        let extended = if fmt == 3 {
            prev.is_some_and(|s| s.extended)
        } else {
            h.ts_field == 0xFF_FFFF
        };
        if extended {
            if b.len() < at + 4 {
                return Ok(None);
            }
            h.ext = Some(be32(&b[at..]));
            at += 4;
        }
        h.size = at;
        Ok(Some(h))
    }

    /// Applies a parsed header to its chunk stream; returns the stream's index.
    fn apply(&mut self, h: &Header) -> Result<usize, ChunkError> {
        let si = match self.streams.iter().position(|s| s.csid == h.csid) {
            Some(i) => i,
            None => {
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(ChunkError::TooMuch("chunk streams"));
                }
                self.streams.push(ChunkStream {
                    csid: h.csid,
                    ..ChunkStream::default()
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[si];
        let field = h.ext.unwrap_or(h.ts_field);
        if h.fmt == 3 {
            if s.in_progress {
                return Ok(si); // continuation: the timestamp was set by the first chunk
            }
            s.timestamp = s.timestamp.wrapping_add(h.ext.unwrap_or(s.delta));
        } else {
            let length = if h.fmt <= 1 { h.length } else { s.length };
            if s.in_progress {
                if length == s.length {
                    // A full header on every chunk of a message (rml_rtmp does this when
                    // told not to compress): ffmpeg reads it as a continuation too.
                    s.extended = h.ts_field == 0xFF_FFFF;
                    return Ok(si);
                }
                // A different message starts in the middle of one: the first is abandoned.
                self.buffered -= s.buf.len();
            }
            s.extended = h.ts_field == 0xFF_FFFF;
            s.delta = field;
            if h.fmt == 0 {
                s.timestamp = field;
                s.stream_id = h.stream_id;
            } else {
                s.timestamp = s.timestamp.wrapping_add(field);
            }
            if h.fmt <= 1 {
                s.length = h.length;
                s.type_id = h.type_id;
            }
        }
        s.buf.clear();
        s.in_progress = true;
        Ok(si)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use framecache_testkit::rml_video_wire;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn payload(ts: u32, type_id: u8, sid: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id,
            message_stream_id: sid,
            data: Bytes::from(data),
        }
    }

    /// Reads all of `wire`, fed in pieces of `step` bytes, as a receiver would.
    fn read_all(wire: &[u8], step: usize) -> Vec<(u8, u32, u32, Vec<u8>)> {
        let mut r = ChunkReader::new();
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            let mut at = 0;
            loop {
                let (n, m) = r.read(&mut buf[at..]).unwrap();
                at += n;
                match m {
                    Some(m) => out.push((m.type_id, m.stream_id, m.timestamp, m.payload.to_vec())),
                    None => break,
                }
            }
            buf.drain(..at);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        assert_eq!(r.consumed(), wire.len() as u64);
        out
    }

    /// Messages serialized by rml_rtmp (an implementation we did not write), with its header
    /// compression, a chunk size change half way and timestamps past 2^24, come back equal
    /// however the bytes are cut.
    #[test]
    fn reads_what_rml_rtmp_writes() {
        let mut ser = ChunkSerializer::new();
        let mut wire = Vec::new();
        let mut want = Vec::new();
        let mut ts = 0u32;
        for i in 0..60u32 {
            if i == 20 {
                wire.extend(
                    ser.set_max_chunk_size(4096, RtmpTimestamp::new(ts))
                        .unwrap()
                        .bytes,
                );
                want.push((1, 0, ts, 4096u32.to_be_bytes().to_vec()));
            }
            if i == 40 {
                ts = 0xFF_FFF0; // extended timestamps from here on
            }
            let (t, len) = if i % 3 == 0 {
                (9, 9000 + i as usize * 7)
            } else {
                (8, 300)
            };
            let data: Vec<u8> = (0..len).map(|k| (k as u32 * 31 + i) as u8).collect();
            let p = payload(ts, t, 1, data.clone());
            wire.extend(ser.serialize(&p, i == 0, false).unwrap().bytes);
            want.push((t, 1, ts, data));
            ts += 21;
        }
        for step in [1, 7, 128, 1000, 4096, 100_000] {
            assert_eq!(read_all(&wire, step), want, "pieces of {step}");
        }
    }

    /// Messages of several chunks that lie whole in the input are joined where they lie:
    /// no message buffer is ever filled, with plain and extended timestamps.
    #[test]
    fn whole_messages_are_joined_in_the_input() {
        let want: Vec<(u32, Vec<u8>)> = [0u32, 33, 0xFF_FFFF, 0x100_0020]
            .into_iter()
            .enumerate()
            .map(|(i, ts)| (ts, (0..3500 + i).map(|k| (k * 7 + i) as u8).collect()))
            .collect();
        let mut wire = rml_video_wire(1000, &want);
        let mut r = ChunkReader::new();
        let mut at = 0;
        let mut got = Vec::new();
        while let (n, Some(m)) = r.read(&mut wire[at..]).unwrap() {
            at += n;
            if m.type_id == 9 {
                got.push((m.timestamp, m.payload.to_vec()));
            }
        }
        assert_eq!(at, wire.len());
        assert_eq!(got, want);
        let caps: Vec<_> = r
            .streams
            .iter()
            .map(|s| (s.csid, s.buf.capacity()))
            .collect();
        assert!(caps.iter().all(|c| c.1 == 0), "{caps:?}");
    }

    /// Chunks of two messages on different chunk streams interleave (allowed by the spec,
    /// not produced by rml_rtmp): both come out whole, the short one first.
    #[test]
    fn interleaved_chunk_streams() {
        let mut wire = Vec::new();
        // csid 6, type 9, 300 bytes in chunks of 128, with an audio message on csid 4 between.
        let video: Vec<u8> = (0..300).map(|k| k as u8).collect();
        wire.extend([0x06, 0, 0, 10, 0, 0x01, 0x2C, 9, 1, 0, 0, 0]);
        wire.extend(&video[..128]);
        wire.extend([0x04, 0, 0, 10, 0, 0, 3, 8, 1, 0, 0, 0, 0xAF, 1, 7]);
        wire.extend([0xC6]);
        wire.extend(&video[128..256]);
        wire.extend([0xC6]);
        wire.extend(&video[256..]);
        // In pieces, and whole (where the interleaved audio keeps the video off the path
        // that joins a message's chunks in the input).
        for step in [50, 10_000] {
            let got = read_all(&wire, step);
            assert_eq!(got[0], (8, 1, 10, vec![0xAF, 1, 7]));
            assert_eq!(got[1], (9, 1, 10, video.clone()));
        }
        // A type-3 header that starts a new message adds the last delta again.
        let mut r = ChunkReader::new();
        let mut w = vec![0x04, 0, 0, 40, 0, 0, 1, 8, 1, 0, 0, 0, 1, 0xC4, 2];
        let (n, m) = r.read(&mut w).unwrap();
        assert_eq!(m.unwrap().timestamp, 40);
        let (_, m) = r.read(&mut w[n..]).unwrap();
        let m = m.unwrap();
        assert_eq!((m.timestamp, &m.payload[..]), (80, &[2u8][..]));
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        let mut r = ChunkReader::new();
        assert_eq!(
            r.read(&mut [0x45, 0, 0, 0, 0, 0, 1, 8]),
            Err(ChunkError::NoPreviousHeader(5))
        );
        let mut r = ChunkReader::new();
        assert_eq!(
            r.read(&mut [0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ChunkError::BadChunkSize(0))
        );
        // Set Chunk Size with 3 payload bytes.
        let mut r = ChunkReader::new();
        assert!(r
            .read(&mut [0x02, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 1, 0, 0])
            .is_err());
        // Too many chunk streams.
        let mut r = ChunkReader::new();
        let mut w = Vec::new();
        for c in 3..40u8 {
            w.extend([c, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]);
        }
        let mut at = 0;
        let err = loop {
            match r.read(&mut w[at..]) {
                Ok((n, _)) if n > 0 => at += n,
                Ok(_) => panic!("ran out of input"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, ChunkError::TooMuch("chunk streams"));
    }

    /// A partial header consumes nothing; the caller passes it again with more bytes.
    #[test]
    fn partial_headers_wait() {
        let mut r = ChunkReader::new();
        let mut w = [0x03, 0, 0, 0, 0, 0];
        assert_eq!(r.read(&mut w), Ok((0, None)));
        let mut w = [0x03, 0, 0, 0, 0, 0, 2, 8, 0, 0, 0, 0, 9];
        assert_eq!(r.read(&mut w), Ok((13, None)));
        let mut w = [7];
        let (n, m) = r.read(&mut w).unwrap();
        assert_eq!((n, m.map(|m| m.payload.to_vec())), (1, Some(vec![9, 7])));
    }
}

//! Fuzzes the inbound RTMP chunk stream reader (the publish hot path), two ways:
//! - raw bytes from a hostile peer, cut where the input says: never a panic, the consumed
//!   count adds up, and an error is final;
//! - messages the input describes, written by rml_rtmp's serializer (an implementation we did
//!   not write) with chunk size changes: they come back equal, however the bytes are cut.
#![no_main]

use bytes::Bytes;
use framecache_media::chunk::ChunkReader;
use libfuzzer_sys::fuzz_target;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

/// Feeds `wire` in pieces of `step` bytes; returns the messages, or None on an error.
fn read(wire: &[u8], step: usize) -> Option<Vec<(u8, u32, u32, Vec<u8>)>> {
    let mut r = ChunkReader::new();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut total = 0u64;
    for piece in wire.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        let mut at = 0;
        loop {
            let (n, m) = r.read(&mut buf[at..]).ok()?;
            at += n;
            total += n as u64;
            match m {
                Some(m) => out.push((m.type_id, m.stream_id, m.timestamp, m.payload.to_vec())),
                None => break,
            }
        }
        buf.drain(..at);
        assert!(buf.len() < 18, "more than a chunk header left unparsed");
    }
    assert_eq!(r.consumed(), total);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let step = usize::from(data[1]) * 7 + 1;
    if data[0] & 1 == 0 {
        let _ = read(&data[2..], step);
        return;
    }
    // Messages: [type, len_lo, len_hi, ts_delta, chunk-size selector] per 5 bytes.
    let mut ser = ChunkSerializer::new();
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let mut ts = 0u32;
    for (i, m) in data[2..].chunks_exact(5).enumerate() {
        if m[4] & 0x80 != 0 {
            let size = [128u32, 1, 4096, 60000][usize::from(m[4] & 3)];
            let p = ser.set_max_chunk_size(size, RtmpTimestamp::new(ts)).unwrap();
            wire.extend(p.bytes);
            want.push((1, 0, ts, size.to_be_bytes().to_vec()));
        }
        let type_id = [8u8, 9, 18, 20, 4][usize::from(m[0]) % 5];
        let len = usize::from(u16::from_le_bytes([m[1], m[2]]));
        if len == 0 {
            continue; // rml_rtmp writes no chunk at all for an empty message
        }
        ts = ts.wrapping_add(u32::from(m[3]) << (m[4] & 0x18));
        let body: Vec<u8> = (0..len).map(|k| (k + i) as u8).collect();
        let p = MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id,
            message_stream_id: 1,
            data: Bytes::from(body.clone()),
        };
        wire.extend(ser.serialize(&p, m[4] & 0x40 != 0, false).unwrap().bytes);
        want.push((type_id, 1, ts, body));
    }
    assert_eq!(read(&wire, step).expect("rml_rtmp's bytes read"), want);
});

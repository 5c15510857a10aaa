//! cuframes' Unix-socket protocol, sans-IO: messages to bytes and bytes to messages
//! (`docs/CUFRAMES.md` §3). The publisher and subscriber feed it whatever their sockets read.

use framecache_shm::error::{Error, Result};

/// Bytes of a TLV header.
pub const TLV_HEADER: usize = 8;
/// Largest TLV value accepted.
pub const MAX_VALUE: usize = 65536;
/// `HELLO_REQ` magic, `"FCCF"` read as a little-endian u32.
pub const HELLO_MAGIC: u32 = 0x4643_4346;
/// Capability bit: send `REVOKED` notices.
pub const CAP_REVOKE_NOTICES: u64 = 1;
/// Capability bit (version 2): the publisher has a packet ring and announces it in
/// `PACKET_RING` (`docs/CUFRAMES.md` §10).
pub const CAP_PACKET_RING: u64 = 2;
/// Capabilities this library implements.
pub const CAPS: u64 = CAP_REVOKE_NOTICES | CAP_PACKET_RING;
/// Longest packet-slot name in `PACKET_RING`.
pub const MAX_RING_NAME: usize = 64;
/// Longest `ERROR` text.
pub const MAX_ERROR_TEXT: usize = 1024;

/// Message type numbers.
pub mod ty {
    /// Subscriber's hello.
    pub const HELLO_REQ: u16 = 0x0001;
    /// Publisher's answer.
    pub const HELLO_RESP: u16 = 0x0002;
    /// Buffer and ready-event handles.
    pub const BUFFERS: u16 = 0x0003;
    /// Subscriber's done-event handles.
    pub const SUBSCRIBE: u16 = 0x0004;
    /// Handshake complete.
    pub const READY: u16 = 0x0005;
    /// A hold was revoked.
    pub const REVOKED: u16 = 0x0006;
    /// Orderly close.
    pub const BYE: u16 = 0x0007;
    /// Error with an `FC_ERR_*` code.
    pub const ERROR: u16 = 0x0008;
    /// Version 2: the packet ring beside the frames.
    pub const PACKET_RING: u16 = 0x0009;
    /// Types with this bit may be ignored by receivers that do not know them.
    pub const OPTIONAL: u16 = 0x8000;
}

/// A 64-byte CUDA IPC handle (memory or event), or the host backend's equivalent.
pub type Handle = [u8; 64];

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Subscriber → publisher.
    HelloReq {
        /// Lowest protocol version the subscriber speaks.
        proto_min: u16,
        /// Highest protocol version the subscriber speaks.
        proto_max: u16,
        /// Offered capability bits.
        capabilities: u64,
        /// Subscriber's process id.
        pid: u32,
        /// `FC_CUFRAMES_BACKEND_*`.
        backend: u32,
        /// Subscriber's GPU.
        device_uuid: [u8; 16],
    },
    /// Publisher → subscriber.
    HelloResp {
        /// Agreed version.
        proto_version: u16,
        /// Subscriber slot assigned.
        sub_index: u32,
        /// Agreed capabilities.
        capabilities: u64,
        /// The publisher's epoch (also in the control block).
        epoch: u64,
        /// `FC_CUFRAMES_BACKEND_*`.
        backend: u32,
        /// Number of buffers.
        buffer_count: u32,
        /// Bytes of each buffer.
        buffer_size: u64,
    },
    /// Publisher → subscriber: per buffer, memory and ready-event handles.
    Buffers(Vec<(Handle, Handle)>),
    /// Subscriber → publisher: per buffer, its done-event handle.
    Subscribe(Vec<Handle>),
    /// Publisher → subscriber: handshake complete.
    Ready {
        /// `latest` at the time.
        latest: u64,
    },
    /// Publisher → subscriber: a hold was revoked.
    Revoked {
        /// Buffer index.
        buffer: u32,
        /// Frame seq that was held.
        seq: u64,
    },
    /// Either way: orderly close.
    Bye {
        /// 0 closing, 1 publisher shutting down.
        reason: u32,
    },
    /// Either way: failure with an `FC_ERR_*` code.
    Error {
        /// Negative error code.
        code: i32,
        /// Explanation.
        text: String,
    },
    /// Publisher → subscriber (version 2, after `HELLO_RESP` with `CAP_PACKET_RING`): the
    /// packet slot beside the frames.
    PacketRing {
        /// Seq of the newest keyframe of the primary stream when the publisher answered
        /// (`u64::MAX` = none yet).
        initial_packet_seq: u64,
        /// Streams of the packet slot.
        stream_count: u32,
        /// The packet slot id (`cuframes-KEY-packets`).
        name: String,
    },
}

fn put_tlv(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

impl Msg {
    /// Appends the message's TLV bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut v = Vec::new();
        let ty = match self {
            Msg::HelloReq {
                proto_min,
                proto_max,
                capabilities,
                pid,
                backend,
                device_uuid,
            } => {
                v.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
                v.extend_from_slice(&proto_min.to_le_bytes());
                v.extend_from_slice(&proto_max.to_le_bytes());
                v.extend_from_slice(&capabilities.to_le_bytes());
                v.extend_from_slice(&pid.to_le_bytes());
                v.extend_from_slice(&backend.to_le_bytes());
                v.extend_from_slice(device_uuid);
                ty::HELLO_REQ
            }
            Msg::HelloResp {
                proto_version,
                sub_index,
                capabilities,
                epoch,
                backend,
                buffer_count,
                buffer_size,
            } => {
                v.extend_from_slice(&proto_version.to_le_bytes());
                v.extend_from_slice(&0u16.to_le_bytes());
                v.extend_from_slice(&sub_index.to_le_bytes());
                v.extend_from_slice(&capabilities.to_le_bytes());
                v.extend_from_slice(&epoch.to_le_bytes());
                v.extend_from_slice(&backend.to_le_bytes());
                v.extend_from_slice(&buffer_count.to_le_bytes());
                v.extend_from_slice(&buffer_size.to_le_bytes());
                ty::HELLO_RESP
            }
            Msg::Buffers(list) => {
                v.extend_from_slice(&(list.len() as u32).to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                for (m, e) in list {
                    v.extend_from_slice(m);
                    v.extend_from_slice(e);
                }
                ty::BUFFERS
            }
            Msg::Subscribe(list) => {
                v.extend_from_slice(&(list.len() as u32).to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                for e in list {
                    v.extend_from_slice(e);
                }
                ty::SUBSCRIBE
            }
            Msg::Ready { latest } => {
                v.extend_from_slice(&latest.to_le_bytes());
                ty::READY
            }
            Msg::Revoked { buffer, seq } => {
                v.extend_from_slice(&buffer.to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                v.extend_from_slice(&seq.to_le_bytes());
                ty::REVOKED
            }
            Msg::Bye { reason } => {
                v.extend_from_slice(&reason.to_le_bytes());
                ty::BYE
            }
            Msg::Error { code, text } => {
                v.extend_from_slice(&code.to_le_bytes());
                let mut end = text.len().min(MAX_ERROR_TEXT);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                v.extend_from_slice(&text.as_bytes()[..end]);
                ty::ERROR
            }
            Msg::PacketRing {
                initial_packet_seq,
                stream_count,
                name,
            } => {
                v.extend_from_slice(&initial_packet_seq.to_le_bytes());
                v.extend_from_slice(&stream_count.to_le_bytes());
                v.extend_from_slice(&(name.len() as u32).to_le_bytes());
                v.extend_from_slice(name.as_bytes());
                ty::PACKET_RING
            }
        };
        put_tlv(out, ty, &v);
    }

    /// The message's name in `docs/CUFRAMES.md`.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::HelloReq { .. } => "HELLO_REQ",
            Msg::HelloResp { .. } => "HELLO_RESP",
            Msg::Buffers(_) => "BUFFERS",
            Msg::Subscribe(_) => "SUBSCRIBE",
            Msg::Ready { .. } => "READY",
            Msg::Revoked { .. } => "REVOKED",
            Msg::Bye { .. } => "BYE",
            Msg::Error { .. } => "ERROR",
            Msg::PacketRing { .. } => "PACKET_RING",
        }
    }

    /// The message as one TLV.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one value of type `ty`. `Ok(None)` = an optional type this version skips.
    pub fn decode(ty: u16, v: &[u8]) -> Result<Option<Msg>> {
        let need = |n: usize, what: &str| -> Result<()> {
            if v.len() < n {
                Err(Error::Protocol(format!(
                    "cuframes {what}: {} bytes, needs {n}",
                    v.len()
                )))
            } else {
                Ok(())
            }
        };
        let u16_at = |o: usize| u16::from_le_bytes([v[o], v[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(v[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(v[o..o + 8].try_into().unwrap());
        let handle_at = |o: usize| -> Handle { v[o..o + 64].try_into().unwrap() };
        let msg = match ty {
            ty::HELLO_REQ => {
                need(40, "HELLO_REQ")?;
                if u32_at(0) != HELLO_MAGIC {
                    return Err(Error::Protocol("cuframes HELLO_REQ: bad magic".into()));
                }
                Msg::HelloReq {
                    proto_min: u16_at(4),
                    proto_max: u16_at(6),
                    capabilities: u64_at(8),
                    pid: u32_at(16),
                    backend: u32_at(20),
                    device_uuid: v[24..40].try_into().unwrap(),
                }
            }
            ty::HELLO_RESP => {
                need(40, "HELLO_RESP")?;
                Msg::HelloResp {
                    proto_version: u16_at(0),
                    sub_index: u32_at(4),
                    capabilities: u64_at(8),
                    epoch: u64_at(16),
                    backend: u32_at(24),
                    buffer_count: u32_at(28),
                    buffer_size: u64_at(32),
                }
            }
            ty::BUFFERS | ty::SUBSCRIBE => {
                need(8, "handle list")?;
                let count = u32_at(0) as usize;
                let each = if ty == ty::BUFFERS { 128 } else { 64 };
                if count > 64 {
                    return Err(Error::Protocol(format!(
                        "cuframes handle list of {count} (at most 64)"
                    )));
                }
                need(8 + count * each, "handle list")?;
                if ty == ty::BUFFERS {
                    Msg::Buffers(
                        (0..count)
                            .map(|i| (handle_at(8 + i * 128), handle_at(8 + i * 128 + 64)))
                            .collect(),
                    )
                } else {
                    Msg::Subscribe((0..count).map(|i| handle_at(8 + i * 64)).collect())
                }
            }
            ty::READY => {
                need(8, "READY")?;
                Msg::Ready { latest: u64_at(0) }
            }
            ty::REVOKED => {
                need(16, "REVOKED")?;
                Msg::Revoked {
                    buffer: u32_at(0),
                    seq: u64_at(8),
                }
            }
            ty::BYE => {
                need(4, "BYE")?;
                Msg::Bye { reason: u32_at(0) }
            }
            ty::ERROR => {
                need(4, "ERROR")?;
                let text = &v[4..v.len().min(4 + MAX_ERROR_TEXT)];
                let mut text = String::from_utf8_lossy(text).into_owned();
                // Replacement characters may lengthen it; keep it within what we would send.
                let mut end = text.len().min(MAX_ERROR_TEXT);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                Msg::Error {
                    code: u32_at(0) as i32,
                    text,
                }
            }
            ty::PACKET_RING => {
                need(16, "PACKET_RING")?;
                let len = u32_at(12) as usize;
                if len == 0 || len > MAX_RING_NAME {
                    return Err(Error::Protocol(format!(
                        "cuframes PACKET_RING: name of {len} bytes (1..={MAX_RING_NAME})"
                    )));
                }
                need(16 + len, "PACKET_RING")?;
                let name = std::str::from_utf8(&v[16..16 + len])
                    .ok()
                    .filter(|n| framecache_shm::slot::validate_id(n).is_ok())
                    .ok_or_else(|| {
                        Error::Protocol("cuframes PACKET_RING: name is not a slot id".into())
                    })?;
                Msg::PacketRing {
                    initial_packet_seq: u64_at(0),
                    stream_count: u32_at(8),
                    name: name.to_string(),
                }
            }
            t if t & ty::OPTIONAL != 0 => return Ok(None),
            t => {
                return Err(Error::Protocol(format!(
                    "cuframes: unknown message type {t:#06x}"
                )))
            }
        };
        Ok(Some(msg))
    }
}

/// Reassembles messages from a byte stream: push what the socket gave, pop messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. Optional unknown types
    /// are skipped. An error leaves the stream unusable: close the connection.
    pub fn next_msg(&mut self) -> Result<Option<Msg>> {
        loop {
            if self.buf.len() < TLV_HEADER {
                return Ok(None);
            }
            let ty = u16::from_le_bytes([self.buf[0], self.buf[1]]);
            let len = u32::from_le_bytes(self.buf[4..8].try_into().unwrap()) as usize;
            if len > MAX_VALUE {
                return Err(Error::Protocol(format!(
                    "cuframes message of {len} bytes (at most {MAX_VALUE})"
                )));
            }
            if self.buf.len() < TLV_HEADER + len {
                return Ok(None);
            }
            let msg = Msg::decode(ty, &self.buf[TLV_HEADER..TLV_HEADER + len]);
            self.buf.drain(..TLV_HEADER + len);
            if let Some(m) = msg? {
                return Ok(Some(m));
            }
        }
    }
}

/// The version both sides speak: the highest in the subscriber's range and in ours
/// (`1..=ours_max`), `None` when they do not overlap.
pub fn negotiate(proto_min: u16, proto_max: u16, ours_max: u16) -> Option<u16> {
    let lo = proto_min.max(crate::layout::FC_CUFRAMES_PROTO_VERSION as u16);
    let hi = proto_max.min(ours_max);
    (lo <= hi).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Msg> {
        vec![
            Msg::HelloReq {
                proto_min: 1,
                proto_max: 2,
                capabilities: 3,
                pid: 77,
                backend: 2,
                device_uuid: [9; 16],
            },
            Msg::HelloResp {
                proto_version: 1,
                sub_index: 5,
                capabilities: 1,
                epoch: 0xdead_beef_0102_0304,
                backend: 1,
                buffer_count: 8,
                buffer_size: 4 << 20,
            },
            Msg::Buffers(vec![([1; 64], [2; 64]), ([3; 64], [4; 64])]),
            Msg::Subscribe(vec![[5; 64], [6; 64], [7; 64]]),
            Msg::Ready {
                latest: 42 << 6 | 3,
            },
            Msg::Revoked { buffer: 3, seq: 42 },
            Msg::Bye { reason: 1 },
            Msg::Error {
                code: -8,
                text: "version".into(),
            },
            Msg::PacketRing {
                initial_packet_seq: 17,
                stream_count: 2,
                name: "cuframes-cam-packets".into(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips_byte_by_byte() {
        let mut stream = Vec::new();
        for m in all() {
            m.encode(&mut stream);
        }
        // Fed one byte at a time, as a slow socket might deliver it.
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(m) = d.next_msg().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, all());
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn wire_bytes_match_the_document() {
        let b = Msg::Ready { latest: 0x0102 }.to_bytes();
        assert_eq!(b, [5, 0, 0, 0, 8, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        let h = all()[0].to_bytes();
        assert_eq!(&h[..8], &[1, 0, 0, 0, 40, 0, 0, 0]);
        assert_eq!(&h[8..12], b"FCCF");
        assert_eq!(&h[12..16], &[1, 0, 2, 0]);
        let r = all()[1].to_bytes();
        assert_eq!(r.len(), 8 + 40);
        assert_eq!(&r[8 + 32..8 + 40], &(4u64 << 20).to_le_bytes());
        assert_eq!(all()[2].to_bytes().len(), 8 + 8 + 2 * 128);
    }

    #[test]
    fn truncated_values_are_errors() {
        for m in all() {
            let b = m.to_bytes();
            let ty = u16::from_le_bytes([b[0], b[1]]);
            let v = &b[8..];
            let min = match ty {
                ty::ERROR | ty::BYE => 4,
                ty::PACKET_RING => 16 + 20,
                _ => v.len(),
            };
            for cut in 0..min {
                assert!(Msg::decode(ty, &v[..cut]).is_err(), "{m:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn longer_values_are_accepted_for_later_versions() {
        let m = all()[0].clone();
        let b = m.to_bytes();
        let mut v = b[8..].to_vec();
        v.extend_from_slice(&[0xAA; 24]);
        assert_eq!(Msg::decode(ty::HELLO_REQ, &v).unwrap(), Some(m));
    }

    #[test]
    fn unknown_types_optional_skipped_mandatory_refused() {
        let mut d = Decoder::new();
        let mut s = Vec::new();
        put_tlv(&mut s, 0x8123, &[1, 2, 3]);
        Msg::Bye { reason: 0 }.encode(&mut s);
        d.push(&s);
        assert_eq!(d.next_msg().unwrap(), Some(Msg::Bye { reason: 0 }));
        let mut d = Decoder::new();
        let mut s = Vec::new();
        put_tlv(&mut s, 0x0123, &[]);
        d.push(&s);
        assert!(matches!(d.next_msg(), Err(Error::Protocol(_))));
    }

    #[test]
    fn hostile_lengths_and_counts_are_refused() {
        let mut d = Decoder::new();
        d.push(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_msg().is_err(), "4 GiB length must not be waited for");
        let mut v = vec![0u8; 8];
        v[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Msg::decode(ty::BUFFERS, &v).is_err());
        v[..4].copy_from_slice(&2u32.to_le_bytes());
        assert!(
            Msg::decode(ty::BUFFERS, &v).is_err(),
            "claims 2 handles, has none"
        );
        let mut hello = all()[0].to_bytes()[8..].to_vec();
        hello[0] = b'X';
        assert!(Msg::decode(ty::HELLO_REQ, &hello).is_err());
    }

    #[test]
    fn version_ranges() {
        // A v2 publisher.
        assert_eq!(negotiate(1, 1, 2), Some(1), "a v1 subscriber gets v1");
        assert_eq!(negotiate(1, 2, 2), Some(2));
        assert_eq!(negotiate(2, 3, 2), Some(2));
        assert_eq!(negotiate(3, 4, 2), None);
        assert_eq!(negotiate(0, 0, 2), None);
        assert_eq!(negotiate(3, 1, 2), None);
        // A v1 publisher (or one told to act as one).
        assert_eq!(
            negotiate(1, 2, 1),
            Some(1),
            "a v2 subscriber that also speaks v1"
        );
        assert_eq!(negotiate(2, 3, 1), None);
    }

    #[test]
    fn packet_ring_names_are_checked() {
        let good = Msg::PacketRing {
            initial_packet_seq: 1,
            stream_count: 1,
            name: "cuframes-k-packets".into(),
        }
        .to_bytes();
        let v = &good[8..];
        assert!(Msg::decode(ty::PACKET_RING, v).is_ok());
        for (len, name) in [
            (0u32, &b""[..]),
            (65, &[b'a'; 65][..]),
            (4, b"../x"),
            (2, b"\xff\xfe"),
        ] {
            let mut b = v[..12].to_vec();
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(name);
            assert!(Msg::decode(ty::PACKET_RING, &b).is_err(), "{name:?}");
        }
        let mut short = v.to_vec();
        short.truncate(20);
        assert!(
            Msg::decode(ty::PACKET_RING, &short).is_err(),
            "name cut short"
        );
    }
}

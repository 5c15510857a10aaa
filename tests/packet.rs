//! The packet ring through the Rust API, in one process: property test over random sizes and
//! many wraps, codec parameters and their generations, keyframe join and resync, overruns,
//! bad arguments and damaged files.

mod common;

use std::time::Duration;

use common::TempRoot;
use framecache::packet::*;
use framecache::{testsrc, Error};

const T: Duration = Duration::from_millis(200);

fn av(payload: u64, descs: u32) -> PacketSlotConfig {
    let mut c = PacketSlotConfig::new(vec![
        StreamConfig::new(FC_CODEC_H264),
        StreamConfig::new(FC_CODEC_AAC),
    ]);
    c.payload_size = payload;
    c.desc_count = descs;
    c
}

/// Publishes synthetic packet `seq`: video keyframe every `gop`, audio every third packet.
fn publish(w: &mut PacketWriter, seq: u64, size: usize, gop: u64) {
    let mut data = vec![0u8; size];
    testsrc::fill_packet(seq, &mut data);
    let stream = if seq % 3 == 2 { 1 } else { 0 };
    let flags = if stream == 0 && seq.is_multiple_of(gop) {
        FC_PACKET_KEYFRAME
    } else {
        0
    };
    let got = w
        .publish(&Packet {
            stream,
            pts: seq as i64 * 10,
            dts: seq as i64 * 10 - 5,
            flags,
            data: &data,
        })
        .unwrap();
    assert_eq!(got, seq);
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn property_random_sizes_wrap_many_times_byte_identical_in_order() {
    let root = TempRoot::new("pkt-prop");
    let payload = 256 << 10;
    let mut w = PacketWriter::create_in(root.path(), "p", &av(payload, 64)).unwrap();
    let max = w.layout().max_packet as usize;
    let mut r = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    let mut rng = Rng(42);
    let (mut seq, mut total) = (0u64, 0u64);
    let mut buf = vec![0u8; max];
    for round in 0..400 {
        // Publish a burst that fits (bytes and descriptors) so nothing is lost, then read it all.
        let mut sizes = Vec::new();
        let mut bytes = 0;
        while sizes.len() < 20 {
            let size = match rng.next() % 8 {
                0 => max,
                1 => 1,
                _ => 1 + (rng.next() as usize % (max / 8)),
            };
            if bytes + 2 * size as u64 > payload / 2 {
                break;
            }
            bytes += size as u64;
            sizes.push(size);
        }
        for &size in &sizes {
            publish(&mut w, seq, size, 1);
            seq += 1;
        }
        for (k, &size) in sizes.iter().enumerate() {
            let want = seq - sizes.len() as u64 + k as u64;
            let info = if round % 2 == 0 {
                let v = r.next(T).unwrap();
                assert!(testsrc::packet_ok(want, v.data()), "seq {want}");
                assert!(v.is_intact());
                v.info
            } else {
                let info = r.next_copy(&mut buf, T).unwrap();
                assert!(testsrc::packet_ok(want, &buf[..info.size as usize]));
                info
            };
            assert_eq!(
                (info.seq, info.size as usize, info.skipped),
                (want, size, 0)
            );
            assert_eq!(info.pts, want as i64 * 10);
            assert_eq!(info.dts, want as i64 * 10 - 5);
            assert_eq!(info.stream, if want % 3 == 2 { 1 } else { 0 });
            assert!(
                info.flags & FC_PACKET_KEYFRAME != 0,
                "every packet of this test is a sync point"
            );
            total += size as u64;
        }
    }
    assert!(
        total > 20 * payload,
        "wrapped {} times only",
        total / payload
    );
    let s = r.stats();
    assert_eq!((s.packets_read, s.packets_skipped, s.overruns), (seq, 0, 0));
}

#[test]
fn late_reader_starts_at_the_last_keyframe_and_gets_audio_from_there() {
    let root = TempRoot::new("pkt-join");
    let mut w = PacketWriter::create_in(root.path(), "p", &av(1 << 20, 256)).unwrap();
    for seq in 0..47 {
        publish(&mut w, seq, 100, 10);
    }
    // Keyframes of stream 0 at 0, 10, 20, 30, 40 (40 % 3 != 2, so it is video).
    let mut r = PacketReader::open_in(root.path(), "p", PacketReaderConfig::default()).unwrap();
    let first = r.next(T).unwrap().info;
    assert_eq!((first.seq, first.stream), (40, 0));
    assert!(first.flags & FC_PACKET_KEYFRAME != 0);
    let rest: Vec<u64> = (0..6).map(|_| r.next(T).unwrap().info.seq).collect();
    assert_eq!(rest, vec![41, 42, 43, 44, 45, 46]);
    let mut old = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::OldestKeyframe,
        },
    )
    .unwrap();
    assert_eq!(old.next(T).unwrap().info.seq, 0);
}

#[test]
fn a_reader_with_no_keyframe_in_the_ring_waits_for_the_next_one() {
    let root = TempRoot::new("pkt-wait");
    let mut w = PacketWriter::create_in(root.path(), "p", &av(1 << 20, 256)).unwrap();
    for seq in 1..5 {
        publish(&mut w, seq - 1, 100, 1000); // seq 0 is a keyframe...
    }
    let mut r = PacketReader::open_in(root.path(), "p", PacketReaderConfig::default()).unwrap();
    assert_eq!(r.next(T).unwrap().info.seq, 0);
    // A reader opened with Next gets the raw next packet; none is a keyframe until 1000.
    let mut n = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    publish(&mut w, 4, 100, 1000);
    assert_eq!(n.next(T).unwrap().info.seq, 4);
}

#[test]
fn slow_reader_is_moved_to_the_next_keyframe_never_mid_gop() {
    let root = TempRoot::new("pkt-slow");
    // 64 descriptors: a reader 100 packets behind has lost its packets.
    let mut w = PacketWriter::create_in(root.path(), "p", &av(1 << 20, 64)).unwrap();
    let mut r = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    for seq in 0..3 {
        publish(&mut w, seq, 50, 12);
    }
    assert_eq!(r.next(T).unwrap().info.seq, 0);
    for seq in 3..120 {
        publish(&mut w, seq, 50, 12);
    }
    // Packets 1..=55 are gone (descriptors reused); keyframes are at multiples of 12 (video).
    let got = r.next(T).unwrap().info;
    assert_eq!(got.seq, 60, "first intact keyframe after the cursor");
    assert!(got.flags & FC_PACKET_KEYFRAME != 0 && got.stream == 0);
    assert_eq!(got.skipped, 59);
    for want in 61..120 {
        assert_eq!(r.next(T).unwrap().info.seq, want);
    }
    let s = r.stats();
    assert_eq!(s.packets_read + s.packets_skipped, 120);
}

#[test]
fn payload_overwritten_before_the_descriptor_is_detected() {
    let root = TempRoot::new("pkt-bytes");
    // Big payloads in a small byte ring with many descriptors: bytes run out first.
    let mut w = PacketWriter::create_in(root.path(), "p", &av(64 << 10, 256)).unwrap();
    let mut r = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    publish(&mut w, 0, 16 << 10, 1);
    let v = r.next(T).unwrap();
    assert!(v.is_intact());
    // 4 more 16 KiB packets fill the 64 KiB ring: packet 0's bytes are reclaimed while its
    // descriptor (slot 0 of 256) is still in place.
    for seq in 1..5 {
        publish(&mut w, seq, 16 << 10, 1);
    }
    assert!(!v.is_intact());
    // A copy read of a packet whose bytes are gone is never returned: the reader resyncs.
    let mut late = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::OldestKeyframe,
        },
    )
    .unwrap();
    assert_eq!(
        late.next(T).unwrap().info.seq,
        1,
        "packet 0 is no longer offered"
    );
}

#[test]
fn copy_read_reports_overrun_and_buffer_too_small_keeps_the_packet() {
    let root = TempRoot::new("pkt-copy");
    let mut w = PacketWriter::create_in(root.path(), "p", &av(1 << 20, 64)).unwrap();
    let mut r = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    publish(&mut w, 0, 1000, 1);
    let mut small = [0u8; 10];
    assert!(matches!(
        r.next_copy(&mut small, T),
        Err(Error::BufferTooSmall { need: 1000, .. })
    ));
    let mut buf = vec![0u8; 1000];
    assert_eq!(r.next_copy(&mut buf, T).unwrap().seq, 0);
    assert!(matches!(
        r.next_copy(&mut buf, Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
}

#[test]
fn codec_params_generations_and_config_change_flag() {
    let root = TempRoot::new("pkt-params");
    let mut w = PacketWriter::create_in(root.path(), "p", &av(1 << 20, 64)).unwrap();
    let mut r = PacketReader::open_in(
        root.path(),
        "p",
        PacketReaderConfig {
            start: PacketStart::Next,
        },
    )
    .unwrap();
    assert!(matches!(r.codec_params(0, 0), Err(Error::NoCodecParams(_))));
    let sps1 = b"\0\0\0\x01\x67sps-one\0\0\0\x01\x68pps";
    assert_eq!(w.set_codec_params(0, sps1).unwrap(), 1);
    assert_eq!(w.set_codec_params(1, &[0x11, 0x90]).unwrap(), 1);
    publish(&mut w, 0, 10, 1);
    publish(&mut w, 1, 10, 1);
    let p0 = r.next(T).unwrap().info;
    assert!(p0.flags & FC_PACKET_CONFIG_CHANGE != 0);
    assert_eq!(p0.params_gen, 1);
    let p1 = r.next(T).unwrap().info;
    assert_eq!(
        p1.flags & FC_PACKET_CONFIG_CHANGE,
        0,
        "only the first packet after a change"
    );
    assert_eq!(
        r.codec_params(0, p0.params_gen).unwrap(),
        (1, sps1.to_vec())
    );
    // A new SPS mid-stream: new generation, flag on the next packet, old one still readable.
    assert_eq!(w.set_codec_params(0, b"\0\0\0\x01\x67sps-two").unwrap(), 2);
    publish(&mut w, 2, 10, 1); // stream 1 (audio): its first packet since its parameters
    publish(&mut w, 3, 10, 1);
    publish(&mut w, 4, 10, 1);
    let a = r.next(T).unwrap().info;
    assert_eq!(
        (a.stream, a.flags & FC_PACKET_CONFIG_CHANGE, a.params_gen),
        (1, FC_PACKET_CONFIG_CHANGE, 1)
    );
    let v = r.next(T).unwrap().info;
    assert!(v.flags & FC_PACKET_CONFIG_CHANGE != 0);
    assert_eq!(r.next(T).unwrap().info.flags & FC_PACKET_CONFIG_CHANGE, 0);
    assert_eq!(
        r.codec_params(0, v.params_gen).unwrap().1,
        b"\0\0\0\x01\x67sps-two"
    );
    assert_eq!(
        r.codec_params(0, 1).unwrap().1,
        sps1.to_vec(),
        "the generation of older packets"
    );
    assert_eq!(r.codec_params(0, 0).unwrap().0, 2);
    for _ in 0..4 {
        w.set_codec_params(0, b"x").unwrap();
    }
    assert!(
        matches!(r.codec_params(0, 1), Err(Error::NoCodecParams(_))),
        "only 4 generations are kept"
    );
    assert_eq!(r.streams()[0].params_gen, 6);
    assert_eq!(r.streams()[1].codec_name, "aac");
}

#[test]
fn bad_arguments_are_errors() {
    let root = TempRoot::new("pkt-args");
    let mut w = PacketWriter::create_in(root.path(), "p", &av(64 << 10, 64)).unwrap();
    let max = w.layout().max_packet as usize;
    let big = vec![0u8; max + 1];
    let p = |stream, data| Packet {
        stream,
        pts: 0,
        dts: 0,
        flags: 0,
        data,
    };
    assert!(matches!(
        w.publish(&p(0, &big)),
        Err(Error::Oversized { .. })
    ));
    assert!(matches!(w.publish(&p(7, b"x")), Err(Error::InvalidArg(_))));
    assert!(matches!(w.publish(&p(0, b"")), Err(Error::InvalidArg(_))));
    assert!(matches!(
        w.set_codec_params(0, &vec![0u8; 4097]),
        Err(Error::Oversized { .. })
    ));
    assert!(matches!(
        w.set_codec_params(9, b"x"),
        Err(Error::InvalidArg(_))
    ));
    assert_eq!(
        w.publish(&p(0, &vec![1u8; max])).unwrap(),
        0,
        "exactly the maximum is fine"
    );
    let mut none = av(64 << 10, 64);
    none.streams.clear();
    assert!(PacketWriter::create_in(root.path(), "q", &none).is_err());
    let mut nine = av(64 << 10, 64);
    nine.streams = vec![StreamConfig::new(FC_CODEC_AAC); 9];
    assert!(PacketWriter::create_in(root.path(), "q", &nine).is_err());
    let mut bad_codec = av(64 << 10, 64);
    bad_codec.streams[0].codec = 99;
    assert!(PacketWriter::create_in(root.path(), "q", &bad_codec).is_err());
    assert!(matches!(
        PacketWriter::create_in(root.path(), "p", &av(64 << 10, 64)),
        Err(Error::Busy { .. })
    ));
    assert!(matches!(
        PacketReader::open_in(root.path(), "nope", PacketReaderConfig::default()),
        Err(Error::NoPacketRing(_))
    ));
}

#[test]
fn frame_and_packet_slots_share_an_id_and_kinds_are_checked() {
    let root = TempRoot::new("pkt-kinds");
    let _w = PacketWriter::create_in(root.path(), "cam", &av(64 << 10, 64)).unwrap();
    let _p = framecache::Producer::create_in(
        root.path(),
        "cam",
        &framecache::SlotConfig::new(framecache::PixelFormat::Nv12, 64, 64),
    )
    .unwrap();
    assert!(root.path().join("cam.frames").exists() && root.path().join("cam.packets").exists());
    // A frame file where a packet file should be: wrong kind, not garbage.
    std::fs::copy(
        root.path().join("cam.frames"),
        root.path().join("x.packets"),
    )
    .unwrap();
    assert!(matches!(
        PacketReader::open_in(root.path(), "x", PacketReaderConfig::default()),
        Err(Error::WrongKind(_))
    ));
    std::fs::copy(
        root.path().join("cam.packets"),
        root.path().join("y.frames"),
    )
    .unwrap();
    assert!(matches!(
        framecache::Consumer::open_in(root.path(), "y", Default::default()),
        Err(Error::WrongKind(_))
    ));
}

#[test]
fn damaged_packet_files_give_errors_and_mutations_never_panic() {
    let root = TempRoot::new("pkt-bad");
    let mut c = av(64 << 10, 64);
    c.keep_on_close = true;
    let mut w = PacketWriter::create_in(root.path(), "src", &c).unwrap();
    for seq in 0..20 {
        publish(&mut w, seq, 500, 5);
    }
    drop(w);
    let good = std::fs::read(root.path().join("src.packets")).unwrap();
    let open = |b: &[u8]| {
        std::fs::write(root.path().join("bad.packets"), b).unwrap();
        PacketReader::open_in(root.path(), "bad", PacketReaderConfig::default())
    };
    let field = |name: &str| HEADER_FIELDS.iter().find(|f| f.0 == name).unwrap().1;
    let with = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    assert_eq!(
        open(&good[..100]).unwrap_err().code(),
        framecache::error::FC_ERR_TRUNCATED
    );
    assert_eq!(
        open(&good[..good.len() - 1]).unwrap_err().code(),
        framecache::error::FC_ERR_TRUNCATED
    );
    assert_eq!(
        open(&with(0, b"NOTARING")).unwrap_err().code(),
        framecache::error::FC_ERR_BAD_MAGIC
    );
    assert_eq!(
        open(&with(8, &9u32.to_le_bytes())).unwrap_err().code(),
        framecache::error::FC_ERR_VERSION
    );
    for (name, v) in [
        ("stream_count", 0u64),
        ("stream_count", 9),
        ("desc_count", 1 << 30),
        ("payload_size", 4097),
        ("desc_offset", u64::MAX - 63),
        ("payload_offset", 0),
        ("max_packet", 1 << 40),
        ("primary_stream", 5),
    ] {
        let at = field(name);
        let size = HEADER_FIELDS.iter().find(|f| f.0 == name).unwrap().2;
        let b = with(at, &v.to_le_bytes()[..size]);
        assert_eq!(
            open(&b).unwrap_err().code(),
            framecache::error::FC_ERR_CORRUPT,
            "{name}={v}"
        );
    }
    // A stream entry with a codec that does not match its media kind.
    let b = with(1024, &99u32.to_le_bytes());
    assert_eq!(
        open(&b).unwrap_err().code(),
        framecache::error::FC_ERR_CORRUPT
    );
    // Scribbled descriptors: reads stay in bounds and end.
    let h = read_header(&good).unwrap();
    let mut b = good.clone();
    for k in 0..(64 * 64) {
        b[h.desc_offset as usize + k] = (k * 131 + 7) as u8;
    }
    let mut r = open(&b).unwrap();
    for _ in 0..5 {
        match r.next(Duration::from_millis(5)) {
            Ok(v) => assert!(v.data().len() as u64 <= h.max_packet),
            Err(Error::WriterGone) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // Mutation fuzzing of header validation.
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let mut b = good[..4096].to_vec();
        for _ in 0..1 + rng.next() % 6 {
            let at = (rng.next() % 2048) as usize;
            b[at] = rng.next() as u8;
        }
        if let Ok(l) = validate(&b, good.len() as u64) {
            assert!(l.file_size <= good.len() as u64);
            assert!(l.payload_offset + l.payload_size == l.file_size);
        }
    }
}

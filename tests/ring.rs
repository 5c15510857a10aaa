//! Behaviour of the frame ring through the Rust API, in one process.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::TempRoot;
use framecache::{
    testsrc, Consumer, ConsumerConfig, Error, FrameMeta, PixelFormat, Producer, ReadMode,
    SlotConfig, StartAt,
};

const T: Duration = Duration::from_millis(200);

fn small(depth: u32) -> SlotConfig {
    let mut c = SlotConfig::new(PixelFormat::Uyvy, 64, 16);
    c.depth = depth;
    c
}

fn publish(p: &mut Producer, n: u64) {
    let g = *p.geometry();
    for _ in 0..n {
        let seq = p.frames_written();
        let mut f = p.acquire().unwrap();
        testsrc::fill(&g, seq, f.data());
        f.commit(FrameMeta {
            pts: seq as i64 * 10,
            ..Default::default()
        })
        .unwrap();
    }
}

fn cfg(mode: ReadMode, start: StartAt) -> ConsumerConfig {
    ConsumerConfig { mode, start }
}

#[test]
fn sequential_reader_gets_every_frame_intact_and_in_order() {
    let root = TempRoot::new("seq");
    let mut p = Producer::create_in(root.path(), "cam", &small(8)).unwrap();
    let mut c =
        Consumer::open_in(root.path(), "cam", cfg(ReadMode::Sequential, StartAt::Next)).unwrap();
    let g = *c.geometry();
    for round in 0..5u64 {
        publish(&mut p, 5);
        for k in 0..5 {
            let f = c.read(T).unwrap();
            let seq = round * 5 + k;
            assert_eq!(f.info.seq, seq);
            assert_eq!(f.info.pts, seq as i64 * 10);
            assert_eq!(testsrc::count_mismatches(&g, seq, f.data()), 0);
            assert!(f.is_intact());
        }
    }
    assert!(matches!(c.read(Duration::ZERO), Err(Error::Timeout)));
    let s = c.stats();
    assert_eq!(
        (s.frames_read, s.frames_skipped, s.writer_frames),
        (25, 0, 25)
    );
    assert!(s.writer_alive);
}

#[test]
fn slow_sequential_reader_jumps_to_oldest_valid_and_counts_skips() {
    let root = TempRoot::new("slow");
    let mut p = Producer::create_in(root.path(), "cam", &small(8)).unwrap();
    let mut c =
        Consumer::open_in(root.path(), "cam", cfg(ReadMode::Sequential, StartAt::Next)).unwrap();
    publish(&mut p, 3);
    assert_eq!(c.read(T).unwrap().info.seq, 0);
    publish(&mut p, 20); // 23 written; ring holds 15..=22, the oldest safe is 23 - 8 + 1 = 16
    let f = c.read(T).unwrap();
    assert_eq!(f.info.seq, 16);
    assert_eq!(f.info.skipped, 15);
    for want in 17..23 {
        assert_eq!(c.read(T).unwrap().info.seq, want);
    }
    let s = c.stats();
    assert_eq!(s.frames_read + s.frames_skipped, 23, "{s:?}");
}

#[test]
fn latest_reader_gets_newest_and_counts_what_it_passed() {
    let root = TempRoot::new("latest");
    let mut p = Producer::create_in(root.path(), "cam", &small(8)).unwrap();
    let mut c =
        Consumer::open_in(root.path(), "cam", cfg(ReadMode::Latest, StartAt::Newest)).unwrap();
    publish(&mut p, 4);
    let f = c.read(T).unwrap();
    assert_eq!(
        (f.info.seq, f.info.skipped),
        (3, 3),
        "frames 0..=2 were passed over"
    );
    assert!(matches!(
        c.read(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    publish(&mut p, 5);
    let f = c.read(T).unwrap();
    assert_eq!((f.info.seq, f.info.skipped), (8, 4));
}

#[test]
fn start_positions() {
    let root = TempRoot::new("start");
    let mut p = Producer::create_in(root.path(), "cam", &small(4)).unwrap();
    publish(&mut p, 10);
    let first = |start| {
        let mut c =
            Consumer::open_in(root.path(), "cam", cfg(ReadMode::Sequential, start)).unwrap();
        c.read(Duration::from_millis(20)).map(|f| f.info.seq)
    };
    assert_eq!(first(StartAt::Newest).unwrap(), 9);
    assert_eq!(first(StartAt::Oldest).unwrap(), 7); // depth 4: 7, 8, 9 (6's slot is next to be rewritten)
    assert!(matches!(first(StartAt::Next), Err(Error::Timeout)));
}

#[test]
fn a_view_being_overwritten_is_detected() {
    let root = TempRoot::new("torn");
    let mut p = Producer::create_in(root.path(), "cam", &small(2)).unwrap();
    let mut c =
        Consumer::open_in(root.path(), "cam", cfg(ReadMode::Sequential, StartAt::Next)).unwrap();
    publish(&mut p, 1);
    let f = c.read(T).unwrap();
    assert_eq!(f.info.seq, 0);
    assert!(f.is_intact());
    publish(&mut p, 1); // frame 1 goes to slot 1: frame 0 still intact
    assert!(f.is_intact());
    // Frame 2 reuses slot 0: from the moment the writer acquires it, the old view is invalid,
    // before any byte was written.
    let w = p.acquire().unwrap();
    assert!(!f.is_intact());
    drop(w);
}

#[test]
fn copy_read_validates_and_checks_buffer_size() {
    let root = TempRoot::new("copy");
    let mut p = Producer::create_in(root.path(), "cam", &small(4)).unwrap();
    let mut c = Consumer::open_in(
        root.path(),
        "cam",
        cfg(ReadMode::Sequential, StartAt::Oldest),
    )
    .unwrap();
    let g = *c.geometry();
    publish(&mut p, 2);
    let mut small_buf = vec![0u8; 10];
    assert!(matches!(
        c.read_copy(&mut small_buf, T),
        Err(Error::BufferTooSmall { .. })
    ));
    let mut buf = vec![0u8; g.frame_size as usize];
    for seq in 0..2 {
        let info = c.read_copy(&mut buf, T).unwrap();
        assert_eq!(info.seq, seq);
        assert_eq!(testsrc::count_mismatches(&g, seq, &buf), 0);
    }
}

#[test]
fn write_checks_size_and_acquire_is_exclusive() {
    let root = TempRoot::new("write");
    let mut p = Producer::create_in(root.path(), "cam", &small(4)).unwrap();
    let size = p.geometry().frame_size as usize;
    assert!(matches!(
        p.write(&vec![0; size - 1], FrameMeta::default()),
        Err(Error::InvalidArg(_))
    ));
    assert_eq!(p.write(&vec![7; size], FrameMeta::default()).unwrap(), 0);
    let mut c = Consumer::open_in(root.path(), "cam", ConsumerConfig::default()).unwrap();
    let f = c.read(T).unwrap();
    assert!(f.data().iter().all(|&b| b == 7));
    assert_ne!(
        f.info.capture_ns, 0,
        "capture time defaults to the publish time"
    );
}

#[test]
fn second_writer_is_busy_and_stale_slot_is_reclaimed() {
    let root = TempRoot::new("busy");
    let p = Producer::create_in(root.path(), "cam", &small(4)).unwrap();
    match Producer::create_in(root.path(), "cam", &small(4)) {
        Err(Error::Busy { pid }) => assert_eq!(pid, std::process::id()),
        other => panic!("expected Busy, got {other:?}"),
    }
    let mut keep = small(4);
    keep.keep_on_close = true;
    drop(p);
    // Closed (unlinked): a new writer simply creates it.
    let p = Producer::create_in(root.path(), "cam", &keep).unwrap();
    drop(p);
    assert!(
        root.path().join("cam.frames").exists(),
        "keep_on_close keeps the file"
    );
    Producer::create_in(root.path(), "cam", &small(4))
        .expect("a closed writer's slot is reclaimed");
}

#[test]
fn reader_reports_writer_gone_then_reattaches_to_a_new_writer() {
    let root = TempRoot::new("reattach");
    let mut p = Producer::create_in(root.path(), "cam", &small(4)).unwrap();
    let mut c =
        Consumer::open_in(root.path(), "cam", cfg(ReadMode::Sequential, StartAt::Next)).unwrap();
    publish(&mut p, 2);
    drop(p);
    // Frames that remain are still delivered after the writer left.
    assert_eq!(c.read(T).unwrap().info.seq, 0);
    assert_eq!(c.read(T).unwrap().info.seq, 1);
    assert!(matches!(
        c.read(Duration::from_millis(50)),
        Err(Error::WriterGone)
    ));
    assert!(!c.stats().writer_alive);
    // A new writer with another geometry: the reader follows it on its own.
    let mut cfg2 = SlotConfig::new(PixelFormat::Nv12, 32, 32);
    cfg2.depth = 4;
    let mut p2 = Producer::create_in(root.path(), "cam", &cfg2).unwrap();
    publish(&mut p2, 3);
    let f = c.read(T).unwrap();
    assert_eq!(f.info.seq, 0, "starts at the new writer's first frame");
    assert_eq!(testsrc::count_mismatches(p2.geometry(), 0, f.data()), 0);
    assert_eq!(c.geometry().format, PixelFormat::Nv12);
    let s = c.stats();
    assert_eq!(s.reattached, 1);
    assert!(s.writer_alive);
}

#[test]
fn bad_ids_and_missing_slots() {
    let root = TempRoot::new("ids");
    for bad in ["../etc", "a/b", "", ".x", "..", &"y".repeat(65)] {
        assert!(
            matches!(
                Producer::create_in(root.path(), bad, &small(4)),
                Err(Error::BadSlotId(_))
            ),
            "{bad}"
        );
        assert!(matches!(
            Consumer::open_in(root.path(), bad, ConsumerConfig::default()),
            Err(Error::BadSlotId(_))
        ));
    }
    assert!(matches!(
        Consumer::open_in(root.path(), "nope", ConsumerConfig::default()),
        Err(Error::NotFound(_))
    ));
    assert!(std::fs::read_dir(root.path()).unwrap().all(|e| {
        let n = e.unwrap().file_name();
        n == ".create.lock"
    }));
}

#[test]
fn bad_configs_are_rejected() {
    let root = TempRoot::new("cfg");
    let mut c = small(1);
    assert!(matches!(
        Producer::create_in(root.path(), "a", &c),
        Err(Error::InvalidArg(_))
    ));
    c.depth = 4;
    c.fps_den = 0;
    assert!(matches!(
        Producer::create_in(root.path(), "a", &c),
        Err(Error::InvalidArg(_))
    ));
    let mut c = small(4);
    c.width = 0;
    assert!(matches!(
        Producer::create_in(root.path(), "a", &c),
        Err(Error::InvalidArg(_))
    ));
    let mut c = small(4);
    c.labels = vec![("k=".into(), "v".into())];
    assert!(matches!(
        Producer::create_in(root.path(), "a", &c),
        Err(Error::InvalidArg(_))
    ));
}

#[test]
fn files_are_0660_and_pages_aligned() {
    let root = TempRoot::new("perm");
    let mut c = small(4);
    c.labels = vec![
        ("room".into(), "studio 2".into()),
        ("cam".into(), "A".into()),
    ];
    c.source_type = "unit".into();
    let p = Producer::create_in(root.path(), "cam", &c).unwrap();
    let md = std::fs::metadata(p.path()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    let l = p.layout();
    assert_eq!(l.data_offset % 4096, 0);
    assert_eq!(l.frame_stride % 4096, 0);
    assert_eq!(md.len(), l.file_size);
    let info = framecache::ring::slot_info(root.path(), "cam").unwrap();
    assert_eq!(info.labels, "room=studio 2\ncam=A");
    assert_eq!(info.source_type, "unit");
    assert!(info.writer_alive);
}

#[test]
fn reader_without_write_permission_works() {
    // Root ignores file modes, so drop to another user for this check when we are root.
    let root = TempRoot::new("ro");
    let mut cfg = small(4);
    cfg.mode = 0o644;
    let mut p = Producer::create_in(root.path(), "cam", &cfg).unwrap();
    publish(&mut p, 1);
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o444)).unwrap();
    let mut c = Consumer::open_in(root.path(), "cam", ConsumerConfig::default()).unwrap();
    assert_eq!(c.read(T).unwrap().info.seq, 0);
}

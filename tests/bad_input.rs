//! Hostile and broken slot files: each gives its error code, never a crash or an out-of-bounds
//! access. Plus a deterministic mutation fuzzer of header validation that runs on stable Rust
//! (the coverage-guided cargo-fuzz target is `fuzz/fuzz_targets/frame_header.rs`).

mod common;

use std::mem::offset_of;
use std::time::Duration;

use common::TempRoot;
use framecache::ring::layout::{self, FrameRingHeader};
use framecache::{Consumer, ConsumerConfig, Error, FrameMeta, PixelFormat, Producer, SlotConfig};

/// Bytes of a real slot file (64x16 UYVY, depth 4, 3 frames published).
fn valid_slot(root: &TempRoot) -> Vec<u8> {
    let mut c = SlotConfig::new(PixelFormat::Uyvy, 64, 16);
    c.depth = 4;
    c.keep_on_close = true;
    let mut p = Producer::create_in(root.path(), "src", &c).unwrap();
    for i in 0..3 {
        p.write(
            &vec![i as u8; p.geometry().frame_size as usize],
            FrameMeta::default(),
        )
        .unwrap();
    }
    drop(p);
    std::fs::read(root.path().join("src.frames")).unwrap()
}

/// Writes `v` at `at`, or nothing where the (possibly truncated) bytes end earlier.
fn put(bytes: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = bytes.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

fn open(root: &TempRoot, bytes: &[u8]) -> Result<Consumer, Error> {
    std::fs::write(root.path().join("bad.frames"), bytes).unwrap();
    Consumer::open_in(root.path(), "bad", ConsumerConfig::default())
}

#[test]
fn each_kind_of_damage_gives_its_error() {
    let root = TempRoot::new("bad");
    let good = valid_slot(&root);
    assert!(open(&root, &good).is_ok());
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let field = |name: &str| {
        layout::HEADER_FIELDS
            .iter()
            .find(|f| f.0 == name)
            .unwrap()
            .1
    };
    let cases: Vec<(&str, Damage, i32)> = vec![
        (
            "empty file",
            Box::new(|b| b.clear()),
            framecache::error::FC_ERR_TRUNCATED,
        ),
        (
            "100 bytes",
            Box::new(|b| b.truncate(100)),
            framecache::error::FC_ERR_TRUNCATED,
        ),
        (
            "header only",
            Box::new(|b| b.truncate(1024)),
            framecache::error::FC_ERR_TRUNCATED,
        ),
        (
            "last byte cut",
            Box::new(|b| {
                b.pop();
            }),
            framecache::error::FC_ERR_TRUNCATED,
        ),
        (
            "wrong magic",
            Box::new(|b| put(b, 0, b"GIF89a\0\0")),
            framecache::error::FC_ERR_BAD_MAGIC,
        ),
        (
            "packet ring",
            Box::new(|b| put(b, 0, b"FCPACKET")),
            framecache::error::FC_ERR_WRONG_KIND,
        ),
        (
            "version 2",
            Box::new(move |b| put(b, 8, &2u32.to_le_bytes())),
            framecache::error::FC_ERR_VERSION,
        ),
        (
            "unknown fourcc",
            Box::new(move |b| put(b, 64, b"ZZZZ")),
            framecache::error::FC_ERR_UNSUPPORTED_FORMAT,
        ),
        (
            "frame_size lies",
            Box::new(move |b| {
                put(
                    b,
                    field("frame_size"),
                    &(64u64 * 16 * 2 + 4096).to_le_bytes(),
                )
            }),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "stride too short",
            Box::new(move |b| put(b, field("strides"), &1u32.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "depth huge",
            Box::new(move |b| put(b, field("depth"), &1_000_000u32.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "depth 0",
            Box::new(move |b| put(b, field("depth"), &0u32.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "desc_offset wraps",
            Box::new(move |b| put(b, field("desc_offset"), &(u64::MAX - 63).to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "data_offset inside descriptors",
            Box::new(move |b| put(b, field("data_offset"), &0u64.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "file_size beyond the file",
            Box::new(move |b| {
                let size = u64::from_le_bytes(b[16..24].try_into().unwrap());
                put(b, 16, &(size + 4096).to_le_bytes())
            }),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "fps_den 0",
            Box::new(move |b| put(b, field("fps_den"), &0u32.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "width 0",
            Box::new(move |b| put(b, field("width"), &0u32.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "header_size 8",
            Box::new(move |b| put(b, 12, &8u32.to_le_bytes())),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "source_type unterminated",
            Box::new(move |b| put(b, field("source_type"), &[b'x'; 16])),
            framecache::error::FC_ERR_CORRUPT,
        ),
        (
            "labels not UTF-8",
            Box::new(move |b| put(b, field("labels"), &[0xff, 0xfe, 0])),
            framecache::error::FC_ERR_CORRUPT,
        ),
    ];
    for (what, damage, code) in cases {
        let mut b = good.clone();
        damage(&mut b);
        match open(&root, &b) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert_eq!(e.code(), code, "{what}: {e}"),
        }
    }
}

#[test]
fn a_directory_or_unreadable_path_is_an_error() {
    let root = TempRoot::new("dir");
    std::fs::create_dir(root.path().join("d.frames")).unwrap();
    assert!(Consumer::open_in(root.path(), "d", ConsumerConfig::default()).is_err());
    // `ls` reports it as unreadable and goes on.
    let out = root.cli().arg("ls").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unreadable"));
}

#[test]
fn garbage_descriptors_never_deliver_out_of_bounds_or_hang() {
    let root = TempRoot::new("desc");
    let mut b = valid_slot(&root);
    let h = layout::read_header(&b).unwrap();
    // Scribble over every descriptor and claim far more frames than were written.
    for i in 0..h.depth as usize {
        let at = h.desc_offset as usize + i * layout::DESC_SIZE;
        for (k, byte) in b[at..at + layout::DESC_SIZE].iter_mut().enumerate() {
            *byte = (i * 31 + k * 7) as u8;
        }
    }
    put(
        &mut b,
        offset_of!(FrameRingHeader, write_seq),
        &1_000u64.to_le_bytes(),
    );
    let mut c = open(&root, &b).unwrap();
    // No writer: every read ends in WriterGone or returns an in-bounds frame, quickly.
    for _ in 0..10 {
        match c.read(Duration::from_millis(5)) {
            Ok(f) => assert_eq!(f.data().len(), 64 * 16 * 2),
            Err(Error::WriterGone) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn fuzz_header_validation_with_mutations() {
    let root = TempRoot::new("fuzz");
    let good = valid_slot(&root);
    let mut rng = Rng(0x5eed_f00d_dead_beef);
    let interesting: [u64; 8] = [
        0,
        1,
        7,
        4096,
        u32::MAX as u64,
        u64::MAX,
        u64::MAX - 63,
        1 << 40,
    ];
    let mut accepted = 0;
    for iter in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(6) {
            match rng.below(4) {
                0 => {
                    let at = rng.below(1024);
                    put(&mut b, at, &[rng.next() as u8]);
                }
                1 => {
                    // An interesting value into an 8-aligned field of the immutable header part.
                    let at = rng.below(160 / 8) * 8;
                    put(&mut b, at, &interesting[rng.below(8)].to_le_bytes());
                }
                2 => {
                    let at = rng.below(160 / 4) * 4;
                    put(
                        &mut b,
                        at,
                        &(interesting[rng.below(8)] as u32).to_le_bytes(),
                    );
                }
                _ => {
                    let len = rng.below(b.len() + 1);
                    b.truncate(len);
                }
            }
        }
        if let Ok(l) = layout::validate(&b, b.len() as u64) {
            accepted += 1;
            // Whatever is accepted must describe memory inside the file.
            assert!(l.file_size <= b.len() as u64, "iter {iter}");
            assert!(
                l.desc_at(l.depth - 1) + layout::DESC_SIZE <= l.data_offset as usize,
                "iter {iter}"
            );
            assert!(
                l.data_at(l.depth - 1) as u64 + l.geometry.frame_size <= l.file_size,
                "iter {iter}"
            );
        }
        // Now and then the whole reader path over the mutated file.
        if iter % 1000 == 0 {
            if let Ok(mut c) = open(&root, &b) {
                let _ = c.read(Duration::ZERO);
            }
        }
    }
    assert!(
        accepted > 0,
        "no mutation kept a valid header: the fuzzer is not reaching the checks"
    );
}

/// A slot that does not fit its filesystem (a small tmpfs, as Docker's 64 MiB /dev/shm):
/// FC_ERR_NO_SPACE with the bytes needed and free, from Rust and on the CLI's error line,
/// and nothing left behind; `ls` shows each slot's memory, the total and the free space.
#[test]
fn a_slot_that_does_not_fit_says_how_much_it_needs() {
    let root = TempRoot::new("nospace");
    let small = root.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        common::skip("cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&small);
    let cfg = SlotConfig::new(PixelFormat::Uyvy, 1920, 1080);
    let err = Producer::create_in(&small, "big", &cfg).unwrap_err();
    assert_eq!(err.code(), framecache::error::FC_ERR_NO_SPACE, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("needs 474.9 MiB") && text.contains("8.0 MiB (8388608 bytes) free"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&small)
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with(".create"))
            .count(),
        0,
        "nothing left behind"
    );
    let out = root
        .cli()
        .env("FC_SHM_DIR", &small)
        .args(["testsrc", "big", "--size", "1920x1080", "--frames", "1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("--shm-size"),
        "{said}"
    );
    // A slot that fits, and `ls` with its memory and the filesystem's free space.
    let mut small_cfg = SlotConfig::new(PixelFormat::Uyvy, 320, 240);
    small_cfg.depth = 8;
    let _p = Producer::create_in(&small, "fits", &small_cfg).unwrap();
    let out = root
        .cli()
        .env("FC_SHM_DIR", &small)
        .arg("ls")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("MEMORY") && table.contains("free of 8.0M"),
        "{table}"
    );
    assert!(table.contains("1 slots,"), "{table}");
}

//! The frame ring alone: builds with `default-features = false`, so a program that only moves
//! raw frames links libc, thiserror and log, not the engines.
//!
//! `cargo run -p framecache --no-default-features --example ring_only`

use std::time::Duration;

use framecache::{
    Consumer, ConsumerConfig, Error, FrameMeta, PixelFormat, Producer, ReadMode, SlotConfig,
    StartAt,
};

fn main() -> Result<(), Error> {
    let root = std::env::temp_dir().join(format!("fc-ring-only-{}", std::process::id()));
    let cfg = SlotConfig::new(PixelFormat::Uyvy, 64, 32);
    let mut p = Producer::create_in(&root, "ring-only", &cfg)?;
    let mut c = Consumer::open_in(
        &root,
        "ring-only",
        ConsumerConfig {
            mode: ReadMode::Sequential,
            start: StartAt::Oldest,
        },
    )?;
    for i in 0..3u8 {
        let mut f = p.acquire()?;
        f.data().fill(i);
        f.commit(FrameMeta {
            pts: i64::from(i),
            ..Default::default()
        })?;
    }
    for i in 0..3u8 {
        let f = c.read(Duration::from_millis(100))?;
        assert!(f.data().iter().all(|&b| b == i) && f.is_intact());
    }
    drop((c, p));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

//! Reads frames from a slot and prints one line per second.
//!
//! ```sh
//! cargo run --release -- testsrc cam1 &          # a writer
//! cargo run --release --example read_frames cam1  # this reader
//! ```

use std::time::{Duration, Instant};

use framecache::{Consumer, ConsumerConfig, Error, ReadMode, StartAt};

fn main() -> Result<(), Error> {
    let slot = std::env::args().nth(1).unwrap_or_else(|| "cam1".into());
    let config = ConsumerConfig {
        mode: ReadMode::Sequential,
        start: StartAt::Newest,
    };
    let mut reader = Consumer::open(&slot, config)?;
    let g = *reader.geometry();
    println!(
        "{slot}: {:?} {}x{}, {} bytes per frame",
        g.format, g.width, g.height, g.frame_size
    );
    let mut last = Instant::now();
    loop {
        let frame = match reader.read(Duration::from_secs(2)) {
            Ok(f) => f,
            Err(Error::WriterGone) => {
                println!("writer gone");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Use the zero-copy view, then make sure it was not overwritten meanwhile.
        let luma_sum: u64 = frame
            .data()
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&b| u64::from(b))
            .sum();
        let (info, intact) = (frame.info, frame.is_intact());
        if intact && last.elapsed() >= Duration::from_secs(1) {
            let s = reader.stats();
            println!(
                "frame {} pts {} mean luma {:.1}  read {} skipped {} latency avg {:.0} µs",
                info.seq,
                info.pts,
                luma_sum as f64 / (g.frame_size / 2) as f64,
                s.frames_read,
                s.frames_skipped,
                s.latency_avg_ns as f64 / 1e3
            );
            last = Instant::now();
        }
    }
}

//! `framecache cat` and `framecache write`: slots through pipes, for a stock ffmpeg (or any
//! program) that has no framecache device.
//!
//! - `cat SLOT`: a frame slot's frames as tightly packed rawvideo on stdout (row padding of the
//!   ring removed), or a packet slot as MPEG-TS (as `export`); the ffmpeg input options that
//!   read it are printed on stderr.
//! - `write SLOT --size WxH --format F --fps R`: rawvideo frames from stdin into a new frame
//!   slot, one frame per `frame size` bytes, until end of input.

use std::io::{ErrorKind, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use framecache::format::{FrameGeometry, PixelFormat, ALL_FORMATS};
use framecache::ring::{
    Consumer, ConsumerConfig, FrameMeta, Producer, ReadMode, SlotConfig, StartAt,
};
use framecache::Error;

use crate::{fps_text, parse_fps, parse_size, CliResult, STOP};

/// Options of `cat`.
pub struct CatOpts {
    /// Stop after this many frames (or packets).
    pub frames: Option<u64>,
    /// Stop after this long without a frame.
    pub timeout_ms: u64,
    /// Start at the oldest frame (packet slots: keyframe) in the ring instead of the newest.
    pub oldest: bool,
}

/// Options of `write`.
pub struct WriteOpts {
    /// WIDTHxHEIGHT.
    pub size: String,
    /// Pixel format name.
    pub format: String,
    /// Frame rate.
    pub fps: String,
    /// Ring depth.
    pub depth: u32,
    /// Keep the slot after the input ends.
    pub keep: bool,
}

/// Copies plane rows between the ring's layout (`from`) and another (`to`) of the same
/// format and size: rows are cut to the shorter stride, so padding is dropped or added.
fn repack(from: &FrameGeometry, src: &[u8], to: &FrameGeometry, dst: &mut [u8]) {
    for p in 0..from.plane_count as usize {
        let (fs, ts) = (from.strides[p] as usize, to.strides[p] as usize);
        let row = fs.min(ts);
        let next = if p + 1 < from.plane_count as usize {
            from.offsets[p + 1] as usize
        } else {
            from.frame_size as usize
        };
        let rows = (next - from.offsets[p] as usize)
            .checked_div(fs)
            .unwrap_or(0);
        for r in 0..rows {
            let a = from.offsets[p] as usize + r * fs;
            let b = to.offsets[p] as usize + r * ts;
            // A plane's last rows may be followed by alignment only: stop at either end.
            if a + row > src.len() || b + row > dst.len() {
                break;
            }
            dst[b..b + row].copy_from_slice(&src[a..a + row]);
        }
    }
}

fn ffmpeg_input(g: &FrameGeometry, fps: (u32, u32)) -> String {
    format!(
        "-f rawvideo -pix_fmt {} -video_size {}x{} -framerate {} -i -",
        g.format.ffmpeg_name(),
        g.width,
        g.height,
        fps_text(fps.0, fps.1)
    )
}

/// `framecache cat SLOT`.
pub fn cat(id: &str, o: &CatOpts) -> CliResult {
    let start = if o.oldest {
        StartAt::Oldest
    } else {
        StartAt::Newest
    };
    let mut c = match Consumer::open(
        id,
        ConsumerConfig {
            mode: ReadMode::Sequential,
            start,
        },
    ) {
        Ok(c) => c,
        // Not a frame slot: a packet slot goes out as MPEG-TS.
        Err(Error::NotFound(_)) | Err(Error::WrongKind(_)) => {
            eprintln!("framecache: cat {id}: packet slot, as MPEG-TS (ffmpeg: -f mpegts -i -)");
            return crate::packets::export(id, "/dev/stdout", o.frames, o.timeout_ms, o.oldest);
        }
        Err(e) => return Err(e.into()),
    };
    let ring = *c.geometry();
    let tight = FrameGeometry::new(ring.format, ring.width, ring.height, 1)?;
    eprintln!(
        "framecache: cat {id}: rawvideo, {} bytes a frame (ffmpeg: {})",
        tight.frame_size,
        ffmpeg_input(&tight, c.fps())
    );
    let mut buf = vec![0u8; ring.frame_size as usize];
    let mut packed = vec![0u8; tight.frame_size as usize];
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut n = 0u64;
    let timeout = Duration::from_millis(o.timeout_ms);
    let end = loop {
        if o.frames.is_some_and(|m| n >= m) || STOP.load(Ordering::Relaxed) {
            break "limit";
        }
        match c.read_copy(&mut buf, timeout) {
            Ok(_) => {}
            Err(Error::WriterGone) => break "writer gone",
            Err(Error::Timeout) => break "timeout",
            Err(Error::BufferTooSmall { .. }) => {
                break "the writer re-created the slot with another size";
            }
            Err(e) => return Err(e.into()),
        }
        let data: &[u8] = if ring.strides == tight.strides {
            &buf[..tight.frame_size as usize]
        } else {
            repack(&ring, &buf, &tight, &mut packed);
            &packed
        };
        match out.write_all(data) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => break "reader gone",
            Err(e) => return Err(e.into()),
        }
    };
    let _ = out.flush();
    let st = c.stats();
    eprintln!(
        "framecache: cat {id}: {n} frames ({} skipped: the reader fell a ring behind), ended by {end}",
        st.frames_skipped
    );
    Ok(ExitCode::SUCCESS)
}

/// `framecache write SLOT`.
pub fn write(id: &str, o: &WriteOpts) -> CliResult {
    let format = PixelFormat::parse(&o.format).map_err(|e| {
        let names: Vec<&str> = ALL_FORMATS.iter().map(|f| f.ffmpeg_name()).collect();
        format!("{e} (known: {})", names.join(", "))
    })?;
    let (w, h) = parse_size(&o.size)?;
    let (fps_num, fps_den) = parse_fps(&o.fps)?;
    let mut cfg = SlotConfig::new(format, w, h);
    cfg.fps_num = fps_num;
    cfg.fps_den = fps_den;
    cfg.depth = o.depth;
    cfg.source_type = "pipe".into();
    cfg.keep_on_close = o.keep;
    let tight = FrameGeometry::new(format, w, h, 1)?;
    let mut p = Producer::create(id, &cfg)?;
    let ring = *p.geometry();
    eprintln!(
        "framecache: write {id}: reading rawvideo {} {w}x{h} @ {} fps from stdin, {} bytes a frame \
         (ffmpeg: -f rawvideo -pix_fmt {} -)",
        format.ffmpeg_name(),
        fps_text(fps_num, fps_den),
        tight.frame_size,
        format.ffmpeg_name()
    );
    let mut frame = vec![0u8; tight.frame_size as usize];
    let input = std::io::stdin();
    let mut input = input.lock();
    let mut seq = 0u64;
    loop {
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        // One whole frame, or the end of the input at a frame boundary.
        let mut got = 0;
        while got < frame.len() {
            match input.read(&mut frame[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if got == 0 {
            break;
        }
        if got < frame.len() {
            return Err(format!(
                "write {id}: the input ended inside frame {seq} ({got} of {} bytes): is the \
                 size or the format wrong?",
                frame.len()
            )
            .into());
        }
        let mut f = p.acquire()?;
        if ring.strides == tight.strides {
            f.data()[..frame.len()].copy_from_slice(&frame);
        } else {
            repack(&tight, &frame, &ring, f.data());
        }
        f.commit(FrameMeta {
            pts: seq as i64,
            capture_ns: 0,
            flags: 0,
        })?;
        seq += 1;
    }
    eprintln!("framecache: write {id}: {seq} frames");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repack_round_trips_through_padded_rows() {
        for format in [
            PixelFormat::parse("yuv420p").unwrap(),
            PixelFormat::parse("nv12").unwrap(),
            PixelFormat::parse("uyvy422").unwrap(),
        ] {
            let tight = FrameGeometry::new(format, 322, 242, 1).unwrap();
            let padded = FrameGeometry::new(format, 322, 242, 64).unwrap();
            assert_ne!(tight.strides, padded.strides, "{format:?} must be padded");
            let src: Vec<u8> = (0..tight.frame_size)
                .map(|i| (i * 31 % 251) as u8)
                .collect();
            let mut ring = vec![0u8; padded.frame_size as usize];
            repack(&tight, &src, &padded, &mut ring);
            let mut back = vec![0u8; tight.frame_size as usize];
            repack(&padded, &ring, &tight, &mut back);
            assert_eq!(back, src, "{format:?}");
        }
    }
}

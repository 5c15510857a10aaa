//! The moving test pattern of `framecache testsrc`, defined so that any program can recompute
//! it from the sequence number alone and verify every byte it received.
//!
//! For frame `seq`, plane `p`, row `y` (of that plane) and byte `b` of the row (padding
//! included):
//!
//! ```text
//! value = (b + 2*y + 3*seq + 61*p) mod 256
//! ```
//!
//! On screen that is a diagonal colour gradient drifting left by 1.5 pixels (UYVY) per frame.

use crate::format::FrameGeometry;

/// Byte `b` of row `y` of plane `p` in frame `seq`.
pub fn pattern_byte(seq: u64, plane: u32, y: u32, b: u32) -> u8 {
    (u64::from(b) + 2 * u64::from(y) + 3 * (seq % 256) + 61 * u64::from(plane)) as u8
}

/// 512 bytes 0..=255, 0..=255: any 256-byte window is a rotated ramp.
fn ramp() -> [u8; 512] {
    std::array::from_fn(|i| i as u8)
}

/// Rows of each plane: derived from the offsets (the next plane starts where this one ends).
pub fn plane_rows(g: &FrameGeometry) -> [u32; 4] {
    let mut rows = [0u32; 4];
    for p in 0..g.plane_count as usize {
        let end = if p + 1 < g.plane_count as usize {
            u64::from(g.offsets[p + 1])
        } else {
            g.frame_size
        };
        rows[p] = ((end - u64::from(g.offsets[p])) / u64::from(g.strides[p].max(1))) as u32;
    }
    rows
}

/// Fills `frame` (at least `g.frame_size` bytes) with the pattern of frame `seq`.
pub fn fill(g: &FrameGeometry, seq: u64, frame: &mut [u8]) {
    let ramp = ramp();
    let rows = plane_rows(g);
    for p in 0..g.plane_count as usize {
        let stride = g.strides[p] as usize;
        for y in 0..rows[p] {
            let start = g.offsets[p] as usize + y as usize * stride;
            let row = &mut frame[start..start + stride];
            let base = pattern_byte(seq, p as u32, y, 0) as usize;
            // Every chunk starts at a multiple of 256 bytes, so the same ramp window applies.
            for chunk in row.chunks_mut(256) {
                chunk.copy_from_slice(&ramp[base..base + chunk.len()]);
            }
        }
    }
}

/// Number of bytes of `frame` that differ from the pattern of frame `seq` (0 = intact).
pub fn count_mismatches(g: &FrameGeometry, seq: u64, frame: &[u8]) -> u64 {
    let ramp = ramp();
    let rows = plane_rows(g);
    let mut bad = 0u64;
    for p in 0..g.plane_count as usize {
        let stride = g.strides[p] as usize;
        for y in 0..rows[p] {
            let start = g.offsets[p] as usize + y as usize * stride;
            let row = &frame[start..start + stride];
            let base = pattern_byte(seq, p as u32, y, 0) as usize;
            for chunk in row.chunks(256) {
                if chunk != &ramp[base..base + chunk.len()] {
                    bad += chunk
                        .iter()
                        .zip(&ramp[base..])
                        .filter(|(a, b)| a != b)
                        .count() as u64;
                }
            }
        }
    }
    bad
}

/// Size of synthetic packet `seq` (deterministic, 1..=max; mostly small, sometimes max-sized),
/// so tests and `framecache testsrc --packets` exercise every packet size and the ring's wrap.
pub fn packet_size(seq: u64, max: usize) -> usize {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    let max = max.max(1);
    match x % 16 {
        0 => max,
        1 => 1,
        2..=5 => 1 + (x >> 8) as usize % max,
        _ => 1 + (x >> 8) as usize % (max / 16).max(1),
    }
}

/// One 256-byte period of a synthetic packet's pattern at offset 0 (bytes 0..8 before the id).
fn packet_period(seq: u64) -> [u8; 256] {
    std::array::from_fn(|i| (i as u64 * 13 + seq * 7) as u8)
}

/// Fills a synthetic packet: the first 8 bytes are `seq` (little-endian, as much as fits), the
/// rest `(i*13 + seq*7) mod 256`, so a reader can check both content and identity. The pattern
/// repeats every 256 bytes, so it is filled (and checked) in 256-byte copies.
pub fn fill_packet(seq: u64, buf: &mut [u8]) {
    let period = packet_period(seq);
    for chunk in buf.chunks_mut(256) {
        chunk.copy_from_slice(&period[..chunk.len()]);
    }
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// Whether `data` is synthetic packet `seq` (see [`fill_packet`]).
pub fn packet_ok(seq: u64, data: &[u8]) -> bool {
    let n = data.len().min(8);
    if data[..n] != seq.to_le_bytes()[..n] {
        return false;
    }
    let period = packet_period(seq);
    data.chunks(256).enumerate().all(|(k, chunk)| {
        let skip = if k == 0 { n } else { 0 };
        chunk[skip..] == period[skip..chunk.len()]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ALL_FORMATS;

    #[test]
    fn packet_pattern_matches_its_definition() {
        for (seq, len) in [
            (0u64, 0usize),
            (1, 1),
            (5, 7),
            (300, 8),
            (1 << 40, 1000),
            (9, 4096),
        ] {
            let mut b = vec![0u8; len];
            fill_packet(seq, &mut b);
            for (i, &x) in b.iter().enumerate() {
                let want = if i < 8 {
                    seq.to_le_bytes()[i]
                } else {
                    (i as u64 * 13 + seq * 7) as u8
                };
                assert_eq!(x, want, "seq {seq} byte {i}");
            }
            assert!(packet_ok(seq, &b));
            if len > 0 {
                assert!(!packet_ok(seq + 1, &b) || len < 1);
                let last = b.len() - 1;
                b[last] ^= 0x40;
                assert!(!packet_ok(seq, &b));
            }
        }
    }

    #[test]
    fn fill_matches_the_formula_for_every_format() {
        for f in ALL_FORMATS {
            let g = FrameGeometry::new(f, 130, 34, 64).unwrap();
            let mut buf = vec![0u8; g.frame_size as usize];
            fill(&g, 77, &mut buf);
            let rows = plane_rows(&g);
            let mut covered = 0u64;
            for p in 0..g.plane_count {
                for y in 0..rows[p as usize] {
                    for b in 0..g.strides[p as usize] {
                        let at = (g.offsets[p as usize] + y * g.strides[p as usize] + b) as usize;
                        assert_eq!(buf[at], pattern_byte(77, p, y, b), "{f:?} p{p} y{y} b{b}");
                        covered += 1;
                    }
                }
            }
            assert_eq!(covered, g.frame_size, "{f:?}: rows must cover the frame");
            assert_eq!(count_mismatches(&g, 77, &buf), 0);
            assert!(count_mismatches(&g, 78, &buf) > 0);
            buf[5] ^= 1;
            assert_eq!(count_mismatches(&g, 77, &buf), 1);
        }
    }
}

//! Pixel formats (by FourCC) and the plane geometry of one frame.
//!
//! The geometry is computed here once, stored in the slot header, and re-computed by every reader
//! to validate what the header claims: a header whose strides or offsets disagree with its own
//! format and size is corrupt.

use crate::error::{Error, Result};

/// Builds a little-endian FourCC code (`a` is the lowest byte), as V4L2 and ffmpeg do.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// Packed 4:2:2, 8 bit, byte order U0 Y0 V0 Y1 (ffmpeg `uyvy422`).
pub const FC_FOURCC_UYVY: u32 = 0x5956_5955;
/// Packed 4:2:2, 8 bit, byte order Y0 U0 Y1 V0 (ffmpeg `yuyv422`).
pub const FC_FOURCC_YUY2: u32 = 0x3259_5559;
/// Planar Y + interleaved UV 4:2:0, 8 bit (ffmpeg `nv12`).
pub const FC_FOURCC_NV12: u32 = 0x3231_564E;
/// Planar Y, U, V 4:2:0, 8 bit (ffmpeg `yuv420p`).
pub const FC_FOURCC_I420: u32 = 0x3032_3449;
/// Planar Y + interleaved UV 4:2:0, 16-bit little-endian words, 10 significant high bits (ffmpeg `p010le`).
pub const FC_FOURCC_P010: u32 = 0x3031_3050;
/// Packed 4:2:2 10 bit, 6 pixels in 16 bytes, rows padded to 128 bytes per 48 pixels (ffmpeg `v210`).
pub const FC_FOURCC_V210: u32 = 0x3031_3276;
/// Packed B G R A, 8 bit each (ffmpeg `bgra`).
pub const FC_FOURCC_BGRA: u32 = 0x4152_4742;
/// Packed R G B, 8 bit each (ffmpeg `rgb24`; V4L2's `RGB3`).
pub const FC_FOURCC_RGB24: u32 = 0x3342_4752;

/// A pixel format framecache can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// See [`FC_FOURCC_UYVY`].
    Uyvy,
    /// See [`FC_FOURCC_YUY2`].
    Yuy2,
    /// See [`FC_FOURCC_NV12`].
    Nv12,
    /// See [`FC_FOURCC_I420`].
    I420,
    /// See [`FC_FOURCC_P010`].
    P010,
    /// See [`FC_FOURCC_V210`].
    V210,
    /// See [`FC_FOURCC_BGRA`].
    Bgra,
    /// See [`FC_FOURCC_RGB24`].
    Rgb24,
}

// The constants are literals so cbindgen can export them; they must equal their FourCC text.
const _: () = {
    assert!(FC_FOURCC_UYVY == fourcc(b"UYVY"));
    assert!(FC_FOURCC_YUY2 == fourcc(b"YUY2"));
    assert!(FC_FOURCC_NV12 == fourcc(b"NV12"));
    assert!(FC_FOURCC_I420 == fourcc(b"I420"));
    assert!(FC_FOURCC_P010 == fourcc(b"P010"));
    assert!(FC_FOURCC_V210 == fourcc(b"v210"));
    assert!(FC_FOURCC_BGRA == fourcc(b"BGRA"));
    assert!(FC_FOURCC_RGB24 == fourcc(b"RGB3"));
};

/// Every format, in the order the CLI lists them.
pub const ALL_FORMATS: [PixelFormat; 8] = [
    PixelFormat::Uyvy,
    PixelFormat::Yuy2,
    PixelFormat::Nv12,
    PixelFormat::I420,
    PixelFormat::P010,
    PixelFormat::V210,
    PixelFormat::Bgra,
    PixelFormat::Rgb24,
];

impl PixelFormat {
    /// The FourCC stored in slot headers.
    pub const fn fourcc(self) -> u32 {
        match self {
            PixelFormat::Uyvy => FC_FOURCC_UYVY,
            PixelFormat::Yuy2 => FC_FOURCC_YUY2,
            PixelFormat::Nv12 => FC_FOURCC_NV12,
            PixelFormat::I420 => FC_FOURCC_I420,
            PixelFormat::P010 => FC_FOURCC_P010,
            PixelFormat::V210 => FC_FOURCC_V210,
            PixelFormat::Bgra => FC_FOURCC_BGRA,
            PixelFormat::Rgb24 => FC_FOURCC_RGB24,
        }
    }

    /// The format of a FourCC, or `UnsupportedFormat`.
    pub fn from_fourcc(code: u32) -> Result<PixelFormat> {
        ALL_FORMATS
            .iter()
            .copied()
            .find(|f| f.fourcc() == code)
            .ok_or_else(|| Error::UnsupportedFormat(fourcc_str(code)))
    }

    /// The name ffmpeg uses for this format (`-pix_fmt`).
    pub const fn ffmpeg_name(self) -> &'static str {
        match self {
            PixelFormat::Uyvy => "uyvy422",
            PixelFormat::Yuy2 => "yuyv422",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::I420 => "yuv420p",
            PixelFormat::P010 => "p010le",
            PixelFormat::V210 => "v210",
            PixelFormat::Bgra => "bgra",
            PixelFormat::Rgb24 => "rgb24",
        }
    }

    /// Parses a FourCC (`UYVY`) or an ffmpeg name (`uyvy422`), case-insensitively.
    pub fn parse(name: &str) -> Result<PixelFormat> {
        ALL_FORMATS
            .iter()
            .copied()
            .find(|f| {
                name.eq_ignore_ascii_case(&fourcc_str(f.fourcc()))
                    || name.eq_ignore_ascii_case(f.ffmpeg_name())
            })
            .ok_or_else(|| Error::UnsupportedFormat(name.to_string()))
    }

    /// Minimal bytes per row of each plane (before alignment) and rows of each plane.
    pub fn planes(self, w: u64, h: u64) -> Vec<(u64, u64)> {
        let cw = w.div_ceil(2);
        let ch = h.div_ceil(2);
        match self {
            PixelFormat::Uyvy | PixelFormat::Yuy2 => vec![(cw * 4, h)],
            PixelFormat::Nv12 => vec![(w, h), (cw * 2, ch)],
            PixelFormat::I420 => vec![(w, h), (cw, ch), (cw, ch)],
            PixelFormat::P010 => vec![(w * 2, h), (cw * 4, ch)],
            // v210: 48 pixels per 128 bytes, rows a multiple of 128 bytes (SMPTE / Apple).
            PixelFormat::V210 => vec![(w.div_ceil(48) * 128, h)],
            PixelFormat::Bgra => vec![(w * 4, h)],
            PixelFormat::Rgb24 => vec![(w * 3, h)],
        }
    }
}

/// Renders a FourCC as text (`UYVY`), with non-printable bytes as `?`.
pub fn fourcc_str(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// The layout of one frame: up to 4 planes, each with a stride (bytes per row) and an offset from
/// the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameGeometry {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of planes in use (1..=4).
    pub plane_count: u32,
    /// Bytes per row of each plane (0 for unused planes).
    pub strides: [u32; 4],
    /// Offset of each plane from the start of the frame (0 for unused planes).
    pub offsets: [u32; 4],
    /// Bytes of one frame (all planes).
    pub frame_size: u64,
}

/// Largest width or height accepted (16K); keeps every size computation far from overflow.
pub const MAX_DIMENSION: u32 = 16384;

impl FrameGeometry {
    /// Computes the geometry; `row_align` (a power of two, 0 or 1 = tight) pads every row.
    pub fn new(format: PixelFormat, width: u32, height: u32, row_align: u32) -> Result<Self> {
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(Error::InvalidArg(format!(
                "frame size {width}x{height} (each side must be 1..={MAX_DIMENSION})"
            )));
        }
        let align = u64::from(row_align.max(1));
        if !align.is_power_of_two() || align > 4096 {
            return Err(Error::InvalidArg(format!(
                "row_align {row_align} (a power of two up to 4096)"
            )));
        }
        let mut g = FrameGeometry {
            format,
            width,
            height,
            plane_count: 0,
            strides: [0; 4],
            offsets: [0; 4],
            frame_size: 0,
        };
        let mut off = 0u64;
        for (i, (row, rows)) in format
            .planes(width.into(), height.into())
            .into_iter()
            .enumerate()
        {
            let stride = row.next_multiple_of(align);
            g.strides[i] = stride as u32;
            g.offsets[i] = off as u32;
            off += stride * rows;
            g.plane_count += 1;
        }
        g.frame_size = off;
        Ok(g)
    }

    /// Whether `self` is exactly the geometry its format, size and strides imply: used to
    /// reject headers that lie. Strides may be padded, but never shorter than a row.
    pub fn is_consistent(&self) -> bool {
        let planes = self.format.planes(self.width.into(), self.height.into());
        if self.plane_count as usize != planes.len() {
            return false;
        }
        let mut off = 0u64;
        for (i, (row, rows)) in planes.into_iter().enumerate() {
            let stride = u64::from(self.strides[i]);
            if stride < row || u64::from(self.offsets[i]) != off {
                return false;
            }
            off += stride * rows;
        }
        let unused_zero =
            (planes_len(self.plane_count)..4).all(|i| self.strides[i] == 0 && self.offsets[i] == 0);
        unused_zero && off == self.frame_size
    }
}

fn planes_len(n: u32) -> usize {
    (n as usize).min(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ffmpeg() {
        // Sizes from `av_image_get_buffer_size(fmt, w, h, 1)` for the same formats.
        let cases = [
            (PixelFormat::Uyvy, 1920, 1080, 4_147_200),
            (PixelFormat::Yuy2, 1920, 1080, 4_147_200),
            (PixelFormat::Nv12, 1920, 1080, 3_110_400),
            (PixelFormat::I420, 1920, 1080, 3_110_400),
            (PixelFormat::I420, 3, 3, 9 + 4 + 4),
            (PixelFormat::P010, 1920, 1080, 6_220_800),
            (PixelFormat::Bgra, 1920, 1080, 8_294_400),
            (PixelFormat::Rgb24, 1920, 1080, 6_220_800),
            (PixelFormat::V210, 1920, 1080, 5_529_600),
            (PixelFormat::Uyvy, 3840, 2160, 16_588_800),
        ];
        for (f, w, h, size) in cases {
            let g = FrameGeometry::new(f, w, h, 1).unwrap();
            assert_eq!(g.frame_size, size, "{f:?} {w}x{h}");
            assert!(g.is_consistent());
        }
    }

    #[test]
    fn fourcc_round_trip_and_names() {
        for f in ALL_FORMATS {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()).unwrap(), f);
            assert_eq!(PixelFormat::parse(f.ffmpeg_name()).unwrap(), f);
            assert_eq!(PixelFormat::parse(&fourcc_str(f.fourcc())).unwrap(), f);
        }
        assert!(PixelFormat::from_fourcc(0).is_err());
        assert_eq!(fourcc_str(FC_FOURCC_UYVY), "UYVY");
    }

    #[test]
    fn lying_geometry_is_inconsistent() {
        let g = FrameGeometry::new(PixelFormat::Nv12, 64, 64, 64).unwrap();
        let mut bad = g;
        bad.frame_size += 1;
        assert!(!bad.is_consistent());
        let mut bad = g;
        bad.strides[1] = 10;
        assert!(!bad.is_consistent());
        let mut bad = g;
        bad.plane_count = 4;
        assert!(!bad.is_consistent());
        assert!(FrameGeometry::new(PixelFormat::Nv12, 0, 64, 1).is_err());
        assert!(FrameGeometry::new(PixelFormat::Nv12, 64, 64, 3).is_err());
    }
}

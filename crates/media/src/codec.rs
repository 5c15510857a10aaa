//! Codec bitstream helpers the containers and engines share: Annex-B NAL units, the H.264
//! sequence parameter set, the AAC AudioSpecificConfig and ADTS headers, CRC-32/MPEG-2 and the
//! bit reader under them. Pure functions over bytes; hostile input gives `None`, never a panic.

/// AAC sampling frequencies by their 4-bit index (ISO/IEC 14496-3, 1.6.3.4).
pub(crate) const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Properties of an H.264 sequence parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct H264Info {
    /// Width in pixels, after cropping.
    pub width: u32,
    /// Height in pixels (of a frame, both fields for interlaced), after cropping.
    pub height: u32,
    /// `profile_idc` (66 baseline, 77 main, 100 high, ...).
    pub profile_idc: u8,
    /// The constraint_set flags byte.
    pub constraint_flags: u8,
    /// `level_idc` (e.g. 31 for level 3.1).
    pub level_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u8,
    /// Luma bit depth.
    pub bit_depth: u8,
    /// False when the stream may be interlaced (field or MBAFF coding).
    pub frame_mbs_only: bool,
    /// Sample aspect ratio from the VUI, if signalled.
    pub sar: Option<(u16, u16)>,
    /// `num_units_in_tick` and `time_scale` from the VUI timing info, if present.
    pub timing: Option<(u32, u32)>,
    /// Frame rate from the VUI timing info: `time_scale / (2 * num_units_in_tick)`.
    pub fps: Option<f64>,
    /// `max_num_reorder_frames` from the VUI bitstream restriction, if signalled: 0 = frames
    /// are output in decoding order (no B-frames to reorder).
    pub max_num_reorder_frames: Option<u32>,
}

impl H264Info {
    /// Whether frames may come out in another order than they are decoded (B-frames):
    /// `Some(false)` for Baseline (no B slices) or a VUI that says 0 reorder frames,
    /// `Some(true)` when the VUI says more, `None` when the SPS does not say.
    pub fn reorders(&self) -> Option<bool> {
        match self.max_num_reorder_frames {
            Some(n) => Some(n > 0),
            None if self.profile_idc == 66 => Some(false),
            None => None,
        }
    }
}

/// The NAL units of an Annex-B buffer, without start codes (trailing zero bytes, which belong
/// to the next 4-byte start code, removed).
pub fn nal_units(d: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < d.len() {
        if d[i + 2] > 1 {
            // No start code can begin at i, i+1 or i+2.
            i += 3;
        } else if d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(d.len(), |&n| n - 3);
        while e > s && d[e - 1] == 0 {
            e -= 1;
        }
        out.push(&d[s..e]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// CRC, bit reader, codec configuration
// ---------------------------------------------------------------------------------------------

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut j = 0;
        while j < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            j += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial value all ones, no reflection, no final xor),
/// the checksum of PSI sections. Over a whole section including its CRC it gives 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

/// Big-endian bit reader; every read checks the end and returns None past it.
struct Bits<'a> {
    d: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(d: &'a [u8]) -> Self {
        Bits { d, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.d.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    fn u(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Unsigned exp-Golomb; values above 2^31 (32+ leading zeros) are treated as garbage.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.u(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// RBSP of a NAL unit: payload with emulation-prevention bytes (00 00 03) removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Parses an H.264 SPS: width and height (cropping and field coding applied), profile, level,
/// and the frame rate from the VUI timing info when present.
///
/// Accepts Annex-B data (the first SPS in it is used, e.g. a whole [`Event::Params`] payload)
/// or a single NAL unit starting with its header byte. Returns None on anything malformed.
pub fn h264_sps_info(annexb_or_nal: &[u8]) -> Option<H264Info> {
    let nals = nal_units(annexb_or_nal);
    let nal = if nals.is_empty() {
        annexb_or_nal
    } else {
        nals.into_iter()
            .find(|n| n.first().is_some_and(|h| h & 0x1F == 7))?
    };
    if nal.first()? & 0x1F != 7 {
        return None;
    }
    let rb = rbsp(&nal[1..]);
    parse_sps(&rb)
}

fn parse_sps(rb: &[u8]) -> Option<H264Info> {
    let mut r = Bits::new(rb);
    let profile_idc = r.u(8)? as u8;
    let constraint_flags = r.u(8)? as u8;
    let level_idc = r.u(8)? as u8;
    if r.ue()? > 31 {
        return None; // seq_parameter_set_id
    }
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth = 8;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        let depth = r.ue()?;
        if depth > 6 {
            return None;
        }
        bit_depth = 8 + depth;
        if r.ue()? > 6 {
            return None; // bit_depth_chroma_minus8
        }
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            let delta = r.se()?;
                            next = (last + delta).rem_euclid(256);
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    if r.ue()? > 12 {
        return None; // log2_max_frame_num_minus4
    }
    match r.ue()? {
        0 => {
            if r.ue()? > 12 {
                return None;
            }
        }
        1 => {
            r.flag()?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    let fields: u64 = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs * 16;
    let mut height = height_units * 16 * fields;
    if r.flag()? {
        let (l, rt, t, b) = (
            u64::from(r.ue()?),
            u64::from(r.ue()?),
            u64::from(r.ue()?),
            u64::from(r.ue()?),
        );
        let array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match array_type {
            0 => (1, fields),
            1 => (2, 2 * fields),
            2 => (2, fields),
            _ => (1, fields),
        };
        let cx = (l + rt).checked_mul(unit_x)?;
        let cy = (t + b).checked_mul(unit_y)?;
        if cx >= width || cy >= height {
            return None;
        }
        width -= cx;
        height -= cy;
    }
    // The VUI is optional detail: a truncated one still leaves a usable size.
    let mut vui = Vui::default();
    if r.flag() == Some(true) {
        let _ = parse_vui(&mut r, &mut vui);
    }
    let Vui {
        sar,
        timing,
        reorder: max_num_reorder_frames,
    } = vui;
    let fps = timing
        .filter(|&(units, scale)| units > 0 && scale > 0)
        .map(|(units, scale)| f64::from(scale) / (2.0 * f64::from(units)));
    Some(H264Info {
        width: u32::try_from(width).ok()?,
        height: u32::try_from(height).ok()?,
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth: bit_depth as u8,
        frame_mbs_only,
        sar,
        timing,
        fps,
        max_num_reorder_frames,
    })
}

/// What the VUI says, as far as it could be read.
#[derive(Default)]
struct Vui {
    sar: Option<(u16, u16)>,
    timing: Option<(u32, u32)>,
    reorder: Option<u32>,
}

/// Skips `hrd_parameters()` (H.264 E.1.2).
fn skip_hrd(r: &mut Bits) -> Option<()> {
    let cpb_cnt = r.ue()? + 1;
    if cpb_cnt > 32 {
        return None;
    }
    r.u(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..cpb_cnt {
        r.ue()?;
        r.ue()?;
        r.flag()?;
    }
    r.u(20)?; // four delay/offset lengths of 5 bits
    Some(())
}

fn parse_vui(r: &mut Bits, out: &mut Vui) -> Option<()> {
    const SAR: [(u16, u16); 17] = [
        (0, 0),
        (1, 1),
        (12, 11),
        (10, 11),
        (16, 11),
        (40, 33),
        (24, 11),
        (20, 11),
        (32, 11),
        (80, 33),
        (18, 11),
        (15, 11),
        (64, 33),
        (160, 99),
        (4, 3),
        (3, 2),
        (2, 1),
    ];
    if r.flag()? {
        let idc = r.u(8)?;
        out.sar = if idc == 255 {
            Some((r.u(16)? as u16, r.u(16)? as u16))
        } else {
            SAR.get(idc as usize).copied().filter(|&(w, _)| w != 0)
        };
    }
    if r.flag()? {
        r.flag()?; // overscan_appropriate_flag
    }
    if r.flag()? {
        r.u(4)?; // video_format, video_full_range_flag
        if r.flag()? {
            r.u(24)?; // colour primaries, transfer, matrix
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?; // chroma sample locations
    }
    if r.flag()? {
        out.timing = Some((r.u(32)?, r.u(32)?));
        r.flag()?; // fixed_frame_rate_flag
    }
    let nal_hrd = r.flag()?;
    if nal_hrd {
        skip_hrd(r)?;
    }
    let vcl_hrd = r.flag()?;
    if vcl_hrd {
        skip_hrd(r)?;
    }
    if nal_hrd || vcl_hrd {
        r.flag()?; // low_delay_hrd_flag
    }
    r.flag()?; // pic_struct_present_flag
    if r.flag()? {
        // bitstream_restriction
        r.flag()?; // motion_vectors_over_pic_boundaries_flag
        for _ in 0..4 {
            r.ue()?; // max_bytes_per_pic_denom .. log2_max_mv_length_vertical
        }
        let reorder = r.ue()?;
        if reorder > 16 {
            return None;
        }
        out.reorder = Some(reorder);
    }
    Some(())
}

/// Sample rate and channel count of an AAC AudioSpecificConfig.
///
/// For explicit HE-AAC signalling (object type 5 or 29) the rate is the output (extension)
/// rate. Channels: the channel configuration mapped to a count (7 → 8, 11 → 7, 12 → 8,
/// 13 → 24); 0 means the layout is defined in-band by a program config element.
pub fn aac_config_info(asc: &[u8]) -> Option<(u32, u8)> {
    let mut r = Bits::new(asc);
    let mut object_type = r.u(5)?;
    if object_type == 31 {
        object_type = 32 + r.u(6)?;
    }
    let mut rate = aac_rate(&mut r)?;
    let channels = match r.u(4)? {
        c @ 0..=6 => c as u8,
        7 | 12 | 14 => 8,
        11 => 7,
        13 => 24,
        _ => return None,
    };
    if object_type == 5 || object_type == 29 {
        rate = aac_rate(&mut r)?;
    }
    Some((rate, channels))
}

fn aac_rate(r: &mut Bits) -> Option<u32> {
    match r.u(4)? {
        15 => r.u(24).filter(|&v| v > 0),
        i => AAC_RATES.get(i as usize).copied(),
    }
}

/// The 7-byte ADTS header (MPEG-4, no CRC) for one raw AAC frame of `frame_len` bytes described
/// by the AudioSpecificConfig `asc`. None when ADTS can't express it: object type not 1-4 (Main,
/// LC, SSR, LTP), a sample rate outside the ADTS table, channel configuration above 7, or a
/// frame of more than 8184 bytes.
pub fn adts_header(asc: &[u8], frame_len: usize) -> Option<[u8; 7]> {
    let mut r = Bits::new(asc);
    let object_type = r.u(5)?;
    if !(1..=4).contains(&object_type) {
        return None;
    }
    let rate_index = match r.u(4)? {
        15 => {
            let rate = r.u(24)?;
            AAC_RATES.iter().position(|&x| x == rate)? as u32
        }
        i if (i as usize) < AAC_RATES.len() => i,
        _ => return None,
    };
    let channels = r.u(4)?;
    if channels > 7 {
        return None;
    }
    let total = frame_len.checked_add(7)?;
    if total > 0x1FFF {
        return None;
    }
    let profile = (object_type - 1) as u8;
    let rate_index = rate_index as u8;
    let channels = channels as u8;
    Some([
        0xFF,
        0xF1, // MPEG-4, layer 0, no CRC
        (profile << 6) | (rate_index << 2) | (channels >> 2),
        ((channels & 3) << 6) | (total >> 11) as u8,
        (total >> 3) as u8,
        (((total & 7) as u8) << 5) | 0x1F, // buffer fullness 0x7FF: variable rate
        0xFC,                              // ... and one raw data block
    ])
}

#[cfg(test)]
mod tests {
    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SPSs of x264 (High, 320x240) with 3 B-frames and with none: the VUI's bitstream
    /// restriction says whether frames are reordered.
    #[test]
    fn the_sps_says_whether_frames_are_reordered() {
        let b = super::h264_sps_info(&hex("6764000dacd94141fb0110000003001000000303c0f142996000"))
            .unwrap();
        assert_eq!((b.width, b.height, b.profile_idc), (320, 240, 100));
        assert!(b.max_num_reorder_frames.unwrap() > 0);
        assert_eq!(b.reorders(), Some(true));
        let n =
            super::h264_sps_info(&hex("6764000dacb20283f60220000003002000000781e2854900")).unwrap();
        assert_eq!(n.max_num_reorder_frames, Some(0));
        assert_eq!(n.reorders(), Some(false));
        assert_eq!(n.fps, Some(30.0));
        // x264 ultrafast, Main, 3 B-frames, as an RTMP push stores it (Annex-B with the PPS).
        let m = super::h264_sps_info(&hex(
            "00000001674d401eeca05017fcb80880000003008000001e078b16cb0000000168ce0fc8",
        ))
        .unwrap();
        assert_eq!(m.reorders(), Some(true), "{m:?}");
    }
}

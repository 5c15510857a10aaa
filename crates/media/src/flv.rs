//! FLV tag bodies, as RTMP carries them and FLV files store them (sans-IO): parsing into access
//! units in the packet ring's format, and building tag bodies back for RTMP play.
//!
//! Video: legacy AVC (codec id 7), the common HEVC extension (codec id 12) and Enhanced RTMP
//! (`avc1`, `hvc1` FourCC). Audio: AAC (sound format 10), MP3 (2 and 14) and Enhanced RTMP
//! audio (`Opus`, `mp4a`, `.mp3`). Video leaves as Annex-B, AAC as raw frames with the
//! AudioSpecificConfig as codec parameters, Opus as raw packets with `OpusHead`.

use framecache_shm::packet::{
    FC_CODEC_AAC, FC_CODEC_H264, FC_CODEC_HEVC, FC_CODEC_MP3, FC_CODEC_OPUS,
};
use std::borrow::Cow;

use crate::codec::nal_units;
use crate::media::{FrameRef, Media, Track};
use crate::time::Unwrapper;

/// Why a tag body was refused. The stream goes on: the caller logs and drops the tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The body is shorter than its headers say.
    #[error("truncated {0} tag")]
    Truncated(&'static str),
    /// A codec or packet type we do not carry (named).
    #[error("unsupported {0}")]
    Unsupported(String),
    /// A NAL length runs past the end of the tag, or the configuration record is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Coded frames arrived before the sequence header that says how to read them.
    #[error("{0} frame before its sequence header")]
    NoConfig(&'static str),
}

/// What one tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvMedia {
    /// Codec configuration: Annex-B parameter sets (video), AudioSpecificConfig (AAC) or
    /// `OpusHead` (Opus).
    Config {
        /// `FC_CODEC_*`.
        codec: u32,
        /// The parameters.
        data: Vec<u8>,
    },
    /// One access unit.
    Frame {
        /// `FC_CODEC_*`.
        codec: u32,
        /// Composition offset in ms (pts = tag timestamp + cts).
        cts: i32,
        /// Key frame (video frame type 1); always true for audio.
        keyframe: bool,
        /// Annex-B access unit, raw AAC frame, MP3 frame(s) or Opus packet.
        data: Vec<u8>,
    },
    /// Nothing to carry (end of sequence, metadata, command frame, empty body).
    Nothing,
}

/// What one tag body holds, parsed by [`FlvParser::parse_in_place`]: the frame borrows the
/// body unless it had to be copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvMediaRef<'a> {
    /// As [`FlvMedia::Config`].
    Config {
        /// `FC_CODEC_*`.
        codec: u32,
        /// The parameters.
        data: Vec<u8>,
    },
    /// As [`FlvMedia::Frame`].
    Frame {
        /// `FC_CODEC_*`.
        codec: u32,
        /// Composition offset in ms.
        cts: i32,
        /// Key frame.
        keyframe: bool,
        /// The access unit.
        data: Cow<'a, [u8]>,
    },
    /// Nothing to carry.
    Nothing,
}

impl FlvMediaRef<'_> {
    /// The same media, owned.
    pub fn into_owned(self) -> FlvMedia {
        match self {
            FlvMediaRef::Config { codec, data } => FlvMedia::Config { codec, data },
            FlvMediaRef::Frame {
                codec,
                cts,
                keyframe,
                data,
            } => FlvMedia::Frame {
                codec,
                cts,
                keyframe,
                data: data.into_owned(),
            },
            FlvMediaRef::Nothing => FlvMedia::Nothing,
        }
    }
}

/// Per-connection parser state: the NAL length size comes from the decoder configuration.
#[derive(Debug, Clone, Default)]
pub struct FlvParser {
    nal_len: Option<usize>,
}

/// A FourCC for messages: printable ASCII kept, anything else as `?`.
pub(crate) fn fourcc(b: &[u8]) -> String {
    b.iter()
        .map(|&c| if c.is_ascii_graphic() { c as char } else { '?' })
        .collect()
}

fn need(b: &[u8], n: usize, what: &'static str) -> Result<(), FlvError> {
    if b.len() < n {
        Err(FlvError::Truncated(what))
    } else {
        Ok(())
    }
}

fn si24(b: &[u8]) -> i32 {
    (((b[0] as i32) << 24) | ((b[1] as i32) << 16) | ((b[2] as i32) << 8)) >> 8
}

impl FlvParser {
    /// A parser with no configuration seen yet.
    pub fn new() -> FlvParser {
        FlvParser::default()
    }

    /// Parses a video tag body.
    pub fn video(&mut self, b: &[u8]) -> Result<FlvMedia, FlvError> {
        match self.parse_video(b)? {
            Parsed::Frame {
                codec,
                cts,
                keyframe,
                at,
            } => self.frame(codec, cts, keyframe, &b[at..]),
            p => Ok(p.owned(b)),
        }
    }

    /// Parses a tag body (video or audio) and hands the frame out without copying it: video
    /// with 4-byte NAL lengths (what encoders send) is rewritten to Annex-B in place, in
    /// `b`. The RTMP publish path uses this; [`FlvParser::video`] and [`FlvParser::audio`]
    /// give the same media, owned.
    pub fn parse_in_place<'a>(
        &mut self,
        video: bool,
        b: &'a mut [u8],
    ) -> Result<FlvMediaRef<'a>, FlvError> {
        let parsed = if video {
            self.parse_video(b)?
        } else {
            parse_audio(b)?
        };
        Ok(match parsed {
            Parsed::Config { codec, data } => FlvMediaRef::Config { codec, data },
            Parsed::Nothing => FlvMediaRef::Nothing,
            Parsed::Frame { at, .. } if at >= b.len() => FlvMediaRef::Nothing,
            Parsed::Frame {
                codec,
                cts,
                keyframe,
                at,
            } if video => {
                if annexb_in_place(self.nal_len, &mut b[at..])? {
                    FlvMediaRef::Frame {
                        codec,
                        cts,
                        keyframe,
                        data: Cow::Borrowed(&b[at..]),
                    }
                } else {
                    match self.frame(codec, cts, keyframe, &b[at..])? {
                        FlvMedia::Frame { data, .. } => FlvMediaRef::Frame {
                            codec,
                            cts,
                            keyframe,
                            data: Cow::Owned(data),
                        },
                        _ => FlvMediaRef::Nothing,
                    }
                }
            }
            Parsed::Frame {
                codec,
                cts,
                keyframe,
                at,
            } => FlvMediaRef::Frame {
                codec,
                cts,
                keyframe,
                data: Cow::Borrowed(&b[at..]),
            },
        })
    }

    fn parse_video(&mut self, b: &[u8]) -> Result<Parsed, FlvError> {
        if b.is_empty() {
            return Ok(Parsed::Nothing);
        }
        if b[0] & 0x80 != 0 {
            return self.enhanced_video(b);
        }
        let frame_type = b[0] >> 4;
        let codec = match b[0] & 0x0F {
            7 => FC_CODEC_H264,
            12 => FC_CODEC_HEVC,
            c => return Err(FlvError::Unsupported(format!("FLV video codec id {c}"))),
        };
        if frame_type == 5 {
            return Ok(Parsed::Nothing); // video info / command frame
        }
        need(b, 5, "video")?;
        match b[1] {
            0 => self.config(codec, &b[5..]),
            1 => self.coded(codec, si24(&b[2..5]), frame_type == 1, 5),
            2 => Ok(Parsed::Nothing),
            t => Err(FlvError::Unsupported(format!("AVC packet type {t}"))),
        }
    }

    /// A coded video frame at `at`: it needs the sequence header first.
    fn coded(&self, codec: u32, cts: i32, keyframe: bool, at: usize) -> Result<Parsed, FlvError> {
        self.nal_len.ok_or(FlvError::NoConfig("video"))?;
        Ok(Parsed::Frame {
            codec,
            cts,
            keyframe,
            at,
        })
    }

    fn enhanced_video(&mut self, b: &[u8]) -> Result<Parsed, FlvError> {
        need(b, 5, "enhanced video")?;
        let frame_type = (b[0] >> 4) & 7;
        let packet_type = b[0] & 0x0F;
        let codec = match &b[1..5] {
            b"avc1" => FC_CODEC_H264,
            b"hvc1" => FC_CODEC_HEVC,
            other => {
                return Err(FlvError::Unsupported(format!(
                    "video FourCC {}",
                    fourcc(other)
                )))
            }
        };
        if frame_type == 5 {
            return Ok(Parsed::Nothing);
        }
        let body = &b[5..];
        match packet_type {
            0 => self.config(codec, body),
            1 => {
                need(body, 3, "enhanced video")?;
                self.coded(codec, si24(body), frame_type == 1, 8)
            }
            2 | 4 => Ok(Parsed::Nothing), // sequence end, metadata
            3 => self.coded(codec, 0, frame_type == 1, 5),
            t => Err(FlvError::Unsupported(format!(
                "enhanced video packet type {t}"
            ))),
        }
    }

    fn config(&mut self, codec: u32, rec: &[u8]) -> Result<Parsed, FlvError> {
        let (nal_len, data) = decoder_config(codec, rec)?;
        self.nal_len = Some(nal_len);
        Ok(Parsed::Config { codec, data })
    }

    fn frame(
        &mut self,
        codec: u32,
        cts: i32,
        keyframe: bool,
        body: &[u8],
    ) -> Result<FlvMedia, FlvError> {
        let nal_len = self.nal_len.ok_or(FlvError::NoConfig("video"))?;
        let data = to_annexb(nal_len, body)?;
        if data.is_empty() {
            return Ok(FlvMedia::Nothing);
        }
        Ok(FlvMedia::Frame {
            codec,
            cts,
            keyframe,
            data,
        })
    }

    /// Parses an audio tag body.
    pub fn audio(&mut self, b: &[u8]) -> Result<FlvMedia, FlvError> {
        Ok(parse_audio(b)?.owned(b))
    }
}

fn parse_audio(b: &[u8]) -> Result<Parsed, FlvError> {
    if b.is_empty() {
        return Ok(Parsed::Nothing);
    }
    let frame = |codec, at| Parsed::Frame {
        codec,
        cts: 0,
        keyframe: true,
        at,
    };
    match b[0] >> 4 {
        10 => {
            need(b, 2, "AAC")?;
            match b[1] {
                0 => aac_config(&b[2..]),
                1 => Ok(frame(FC_CODEC_AAC, 2)),
                t => Err(FlvError::Unsupported(format!("AAC packet type {t}"))),
            }
        }
        2 | 14 => Ok(frame(FC_CODEC_MP3, 1)),
        9 => {
            need(b, 5, "enhanced audio")?;
            let codec = match &b[1..5] {
                b"Opus" => FC_CODEC_OPUS,
                b"mp4a" => FC_CODEC_AAC,
                b".mp3" => FC_CODEC_MP3,
                other => {
                    return Err(FlvError::Unsupported(format!(
                        "audio FourCC {}",
                        fourcc(other)
                    )))
                }
            };
            let body = &b[5..];
            match b[0] & 0x0F {
                0 if codec == FC_CODEC_AAC => aac_config(body),
                0 => Ok(Parsed::Config {
                    codec,
                    data: body.to_vec(),
                }),
                1 => Ok(frame(codec, 5)),
                2 | 4 => Ok(Parsed::Nothing),
                t => Err(FlvError::Unsupported(format!(
                    "enhanced audio packet type {t}"
                ))),
            }
        }
        f => Err(FlvError::Unsupported(format!("FLV sound format {f}"))),
    }
}

/// What a tag body holds, with the frame as a position in the body.
enum Parsed {
    Config {
        codec: u32,
        data: Vec<u8>,
    },
    Frame {
        codec: u32,
        cts: i32,
        keyframe: bool,
        /// Offset of the frame data (NAL units with length prefixes for video).
        at: usize,
    },
    Nothing,
}

impl Parsed {
    /// The media of an audio body, or of a video body without a frame.
    fn owned(self, b: &[u8]) -> FlvMedia {
        match self {
            Parsed::Config { codec, data } => FlvMedia::Config { codec, data },
            Parsed::Frame { at, .. } if at >= b.len() => FlvMedia::Nothing,
            Parsed::Frame {
                codec,
                cts,
                keyframe,
                at,
            } => FlvMedia::Frame {
                codec,
                cts,
                keyframe,
                data: b[at..].to_vec(),
            },
            Parsed::Nothing => FlvMedia::Nothing,
        }
    }
}

/// Rewrites a frame's 4-byte NAL lengths as Annex-B start codes, in place. Returns false
/// (nothing changed) when the frame needs a copy instead: other length sizes, or empty NAL
/// units (which the copy leaves out).
fn annexb_in_place(nal_len: Option<usize>, b: &mut [u8]) -> Result<bool, FlvError> {
    if nal_len != Some(4) {
        return Ok(false);
    }
    let mut i = 0;
    while i < b.len() {
        need(&b[i..], 4, "video")?;
        let n = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        if n == 0 {
            return Ok(false);
        }
        if n > b.len() - i - 4 {
            return Err(FlvError::Malformed("NAL unit length"));
        }
        i += 4 + n;
    }
    let mut i = 0;
    while i < b.len() {
        let n = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        b[i..i + 4].copy_from_slice(&[0, 0, 0, 1]);
        i += 4 + n;
    }
    Ok(true)
}

fn aac_config(asc: &[u8]) -> Result<Parsed, FlvError> {
    if crate::codec::aac_config_info(asc).is_none() {
        return Err(FlvError::Malformed("AudioSpecificConfig"));
    }
    Ok(Parsed::Config {
        codec: FC_CODEC_AAC,
        data: asc.to_vec(),
    })
}

/// An AVC or HEVC decoder configuration record (FLV sequence header, MP4 `avcC`/`hvcC`) →
/// (NAL length size, the parameter sets as Annex-B).
pub(crate) fn decoder_config(codec: u32, rec: &[u8]) -> Result<(usize, Vec<u8>), FlvError> {
    let (nal_len, nals) = if codec == FC_CODEC_H264 {
        avcc_record(rec)?
    } else {
        hvcc_record(rec)?
    };
    let mut data = Vec::new();
    for n in nals {
        data.extend_from_slice(&[0, 0, 0, 1]);
        data.extend_from_slice(n);
    }
    Ok((nal_len, data))
}

/// NAL units with `nal_len`-byte big-endian length prefixes → Annex-B (a copy; empty units
/// are left out, so the result may be empty).
pub(crate) fn to_annexb(nal_len: usize, body: &[u8]) -> Result<Vec<u8>, FlvError> {
    let mut data = Vec::with_capacity(body.len() + 16);
    let mut rest = body;
    while !rest.is_empty() {
        need(rest, nal_len, "video")?;
        let n = rest[..nal_len]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | x as usize);
        rest = &rest[nal_len..];
        if n > rest.len() {
            return Err(FlvError::Malformed("NAL unit length"));
        }
        if n > 0 {
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(&rest[..n]);
        }
        rest = &rest[n..];
    }
    Ok(data)
}

/// AVCDecoderConfigurationRecord → (NAL length size, SPS and PPS units).
fn avcc_record(r: &[u8]) -> Result<(usize, Vec<&[u8]>), FlvError> {
    need(r, 6, "AVC sequence header")?;
    if r[0] != 1 {
        return Err(FlvError::Malformed("AVCDecoderConfigurationRecord version"));
    }
    let nal_len = usize::from(r[4] & 3) + 1;
    if nal_len == 3 {
        return Err(FlvError::Malformed("NAL length size"));
    }
    let mut nals = Vec::new();
    let mut p = &r[5..];
    for mask in [0x1F, 0xFF] {
        need(p, 1, "AVC sequence header")?;
        let count = usize::from(p[0] & mask);
        p = &p[1..];
        for _ in 0..count {
            need(p, 2, "AVC sequence header")?;
            let n = usize::from(u16::from_be_bytes([p[0], p[1]]));
            need(p, 2 + n, "AVC sequence header")?;
            if n > 0 {
                nals.push(&p[2..2 + n]);
            }
            p = &p[2 + n..];
        }
    }
    if !nals.iter().any(|n| n[0] & 0x1F == 7) {
        return Err(FlvError::Malformed("AVC sequence header without SPS"));
    }
    Ok((nal_len, nals))
}

/// HEVCDecoderConfigurationRecord → (NAL length size, VPS/SPS/PPS/SEI units).
fn hvcc_record(r: &[u8]) -> Result<(usize, Vec<&[u8]>), FlvError> {
    need(r, 23, "HEVC sequence header")?;
    if r[0] != 1 {
        return Err(FlvError::Malformed(
            "HEVCDecoderConfigurationRecord version",
        ));
    }
    let nal_len = usize::from(r[21] & 3) + 1;
    if nal_len == 3 {
        return Err(FlvError::Malformed("NAL length size"));
    }
    let arrays = r[22];
    let mut p = &r[23..];
    let mut nals = Vec::new();
    for _ in 0..arrays {
        need(p, 3, "HEVC sequence header")?;
        let count = u16::from_be_bytes([p[1], p[2]]);
        p = &p[3..];
        for _ in 0..count {
            need(p, 2, "HEVC sequence header")?;
            let n = usize::from(u16::from_be_bytes([p[0], p[1]]));
            need(p, 2 + n, "HEVC sequence header")?;
            if n > 0 {
                nals.push(&p[2..2 + n]);
            }
            p = &p[2 + n..];
        }
    }
    if !nals.iter().any(|n| (n[0] >> 1) & 0x3F == 33) {
        return Err(FlvError::Malformed("HEVC sequence header without SPS"));
    }
    Ok((nal_len, nals))
}

// ---------------------------------------------------------------------------------------------
// FLV files
// ---------------------------------------------------------------------------------------------

/// One audio or video tag of an FLV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTag<'a> {
    /// Video (tag type 9) rather than audio (8).
    pub video: bool,
    /// Timestamp in ms (with its extension byte).
    pub ts: u32,
    /// The tag body, as [`FlvParser`] takes it.
    pub body: &'a [u8],
}

/// The audio and video tags of a whole FLV file, in order (script and other tags skipped).
/// A bad file header is an error up front; a tag cut short ends the iteration with an error.
pub fn file_tags(
    d: &[u8],
) -> Result<impl Iterator<Item = Result<FileTag<'_>, FlvError>>, FlvError> {
    if d.len() < 13 || &d[..3] != b"FLV" {
        return Err(FlvError::Malformed("FLV file header"));
    }
    let off = u32::from_be_bytes([d[5], d[6], d[7], d[8]]) as usize;
    if off < 9 || off + 4 > d.len() {
        return Err(FlvError::Malformed("FLV header size"));
    }
    let mut p = off + 4; // header, then the first PreviousTagSize
    Ok(std::iter::from_fn(move || loop {
        if p + 11 > d.len() {
            return None;
        }
        let kind = d[p] & 0x1F;
        let size = u32::from_be_bytes([0, d[p + 1], d[p + 2], d[p + 3]]) as usize;
        let ts = u32::from_be_bytes([d[p + 7], d[p + 4], d[p + 5], d[p + 6]]);
        let Some(body) = d.get(p + 11..p + 11 + size) else {
            p = d.len();
            return Some(Err(FlvError::Truncated("FLV file")));
        };
        p += 11 + size + 4;
        if kind == 8 || kind == 9 {
            return Some(Ok(FileTag {
                video: kind == 9,
                ts,
                body,
            }));
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// Building tag bodies (RTMP play)
// ---------------------------------------------------------------------------------------------

/// The legacy AVC sequence-header tag body for Annex-B `params` (SPS and PPS), or `None`
/// when they hold no SPS.
pub fn avc_sequence_header(params: &[u8]) -> Option<Vec<u8>> {
    let nals = nal_units(params);
    let sps: Vec<&[u8]> = nals
        .iter()
        .copied()
        .filter(|n| !n.is_empty() && n[0] & 0x1F == 7)
        .collect();
    let pps: Vec<&[u8]> = nals
        .iter()
        .copied()
        .filter(|n| !n.is_empty() && n[0] & 0x1F == 8)
        .collect();
    let first = sps.first()?;
    if first.len() < 4 || sps.len() > 31 || pps.len() > 255 {
        return None;
    }
    let mut b = vec![0x17, 0, 0, 0, 0, 1, first[1], first[2], first[3], 0xFF];
    b.push(0xE0 | sps.len() as u8);
    for s in &sps {
        b.extend_from_slice(&(s.len() as u16).to_be_bytes());
        b.extend_from_slice(s);
    }
    b.push(pps.len() as u8);
    for p in &pps {
        b.extend_from_slice(&(p.len() as u16).to_be_bytes());
        b.extend_from_slice(p);
    }
    Some(b)
}

/// A legacy AVC coded-frame tag body from an Annex-B access unit (4-byte NAL lengths; access
/// unit delimiters and in-band parameter sets left out, the sequence header carries them).
pub fn avc_frame(annexb: &[u8], keyframe: bool, cts_ms: i32) -> Vec<u8> {
    let cts = cts_ms.clamp(-(1 << 23), (1 << 23) - 1);
    let mut b = Vec::with_capacity(annexb.len() + 16);
    b.push(if keyframe { 0x17 } else { 0x27 });
    b.push(1);
    b.extend_from_slice(&cts.to_be_bytes()[1..]);
    for n in nal_units(annexb) {
        if n.is_empty() || matches!(n[0] & 0x1F, 7..=9) {
            continue;
        }
        b.extend_from_slice(&(n.len() as u32).to_be_bytes());
        b.extend_from_slice(n);
    }
    b
}

/// The AAC sequence-header tag body (sound format 10, 44 kHz/16-bit/stereo flags as the FLV
/// specification requires for AAC).
pub fn aac_sequence_header(asc: &[u8]) -> Vec<u8> {
    let mut b = vec![0xAF, 0];
    b.extend_from_slice(asc);
    b
}

/// An AAC raw-frame tag body.
pub fn aac_frame(frame: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(frame.len() + 2);
    b.extend_from_slice(&[0xAF, 1]);
    b.extend_from_slice(frame);
    b
}

/// An MP3 tag body (the decoder reads rate and channels from the frame header).
pub fn mp3_frame(frame: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(frame.len() + 1);
    b.push(0x2F);
    b.extend_from_slice(frame);
    b
}

/// A value of an `onMetaData` property.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// AMF0 number.
    Number(f64),
    /// AMF0 boolean.
    Bool(bool),
    /// AMF0 string (shorter than 64 KiB).
    Str(String),
}

/// The body of an `onMetaData` script data message (AMF0: the name, then an ECMA array of the
/// properties), as FLV files and RTMP play carry it.
pub fn on_metadata(props: &[(&str, MetaValue)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut out = vec![0x02];
    string(&mut out, "onMetaData");
    out.push(0x08);
    out.extend_from_slice(&(props.len() as u32).to_be_bytes());
    for (k, v) in props {
        string(&mut out, k);
        match v {
            MetaValue::Number(n) => {
                out.push(0x00);
                out.extend_from_slice(&n.to_be_bytes());
            }
            MetaValue::Bool(b) => out.extend_from_slice(&[0x01, *b as u8]),
            MetaValue::Str(s) => {
                out.push(0x02);
                string(&mut out, s);
            }
        }
    }
    out.extend_from_slice(&[0, 0, 9]);
    out
}

/// FLV tag bodies of one RTMP (or FLV file) source → [`Media`]: one video and one audio track,
/// declared as they first appear, timestamps in ms unwrapped across the 32-bit wrap.
#[derive(Debug)]
pub struct FlvToMedia {
    parser: FlvParser,
    video: Option<(usize, u32)>,
    audio: Option<(usize, u32)>,
    tracks: usize,
    clock: Unwrapper,
    /// Tags refused (bad or unsupported), for logs.
    pub errors: u64,
    /// Last error text.
    pub last_error: Option<String>,
}

impl Default for FlvToMedia {
    fn default() -> Self {
        FlvToMedia {
            parser: FlvParser::default(),
            video: None,
            audio: None,
            tracks: 0,
            clock: Unwrapper::new(32),
            errors: 0,
            last_error: None,
        }
    }
}

impl FlvToMedia {
    /// A converter with nothing seen yet.
    pub fn new() -> FlvToMedia {
        FlvToMedia::default()
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        self.clock.unwrap(i64::from(ts))
    }

    fn refuse(&mut self, why: String) {
        self.errors += 1;
        self.last_error = Some(why);
    }

    /// The track of `codec` (declared in `out` on first sight); None when the codec switched
    /// mid-stream, which is not supported (the first one is kept).
    fn track_for(&mut self, video: bool, codec: u32, out: &mut Vec<Media>) -> Option<usize> {
        let slot = if video {
            &mut self.video
        } else {
            &mut self.audio
        };
        match *slot {
            Some((t, c)) if c == codec => Some(t),
            Some(_) => {
                self.refuse("codec changed mid-stream".into());
                None
            }
            None => {
                let t = self.tracks;
                self.tracks += 1;
                *slot = Some((t, codec));
                out.push(Media::AddTrack(Track {
                    codec,
                    timebase: (1, 1000),
                }));
                Some(t)
            }
        }
    }

    /// Converts one tag body (`video` or audio) with its timestamp into media events.
    pub fn tag(&mut self, video: bool, body: &[u8], ts: u32, out: &mut Vec<Media>) {
        let parsed = if video {
            self.parser.video(body)
        } else {
            self.parser.audio(body)
        };
        let m = match parsed {
            Ok(m) => m,
            Err(e) => return self.refuse(e.to_string()),
        };
        let codec = match &m {
            FlvMedia::Config { codec, .. } | FlvMedia::Frame { codec, .. } => *codec,
            FlvMedia::Nothing => return,
        };
        let Some(track) = self.track_for(video, codec, out) else {
            return;
        };
        let dts = self.unwrap_ts(ts);
        match m {
            FlvMedia::Config { data, .. } => out.push(Media::Params { track, data }),
            FlvMedia::Frame {
                cts,
                keyframe,
                data,
                ..
            } => out.push(Media::Frame {
                track,
                pts: dts + i64::from(cts),
                dts,
                keyframe,
                discontinuity: false,
                data,
            }),
            FlvMedia::Nothing => {}
        }
    }

    /// [`FlvToMedia::tag`] of a body the caller owns and lets go of: the frame comes back
    /// borrowed (video rewritten to Annex-B in place) instead of going to `out`. Track and
    /// parameter events still go to `out`, which the caller must push first.
    pub fn tag_in_place<'a>(
        &mut self,
        video: bool,
        body: &'a mut [u8],
        ts: u32,
        out: &mut Vec<Media>,
    ) -> Option<FrameRef<'a>> {
        let m = match self.parser.parse_in_place(video, body) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(e.to_string());
                return None;
            }
        };
        let codec = match &m {
            FlvMediaRef::Config { codec, .. } | FlvMediaRef::Frame { codec, .. } => *codec,
            FlvMediaRef::Nothing => return None,
        };
        let track = self.track_for(video, codec, out)?;
        let dts = self.unwrap_ts(ts);
        match m {
            FlvMediaRef::Config { data, .. } => out.push(Media::Params { track, data }),
            FlvMediaRef::Frame {
                cts,
                keyframe,
                data,
                ..
            } => {
                let pts = dts + i64::from(cts);
                match data {
                    Cow::Borrowed(data) => {
                        return Some(FrameRef {
                            track,
                            pts,
                            dts,
                            keyframe,
                            discontinuity: false,
                            data,
                        })
                    }
                    // Copied by the parser (rare NAL length sizes): hand the copy over.
                    Cow::Owned(data) => out.push(Media::Frame {
                        track,
                        pts,
                        dts,
                        keyframe,
                        discontinuity: false,
                        data,
                    }),
                }
            }
            FlvMediaRef::Nothing => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_metadata_is_amf0_name_then_ecma_array() {
        let b = super::on_metadata(&[
            ("width", super::MetaValue::Number(640.0)),
            ("stereo", super::MetaValue::Bool(false)),
            ("encoder", super::MetaValue::Str("fc".into())),
        ]);
        let mut want = vec![0x02, 0, 10];
        want.extend_from_slice(b"onMetaData");
        want.extend_from_slice(&[0x08, 0, 0, 0, 3, 0, 5]);
        want.extend_from_slice(b"width");
        want.push(0);
        want.extend_from_slice(&640f64.to_be_bytes());
        want.extend_from_slice(&[0, 6]);
        want.extend_from_slice(b"stereo");
        want.extend_from_slice(&[1, 0, 0, 7]);
        want.extend_from_slice(b"encoder");
        want.extend_from_slice(&[2, 0, 2, b'f', b'c', 0, 0, 9]);
        assert_eq!(b, want);
    }

    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01, 0x40, 0x16, 0xE8];
    const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect()
    }

    #[test]
    fn avc_round_trip() {
        let params = annexb(&[SPS, PPS]);
        let seq = avc_sequence_header(&params).unwrap();
        let mut p = FlvParser::new();
        assert_eq!(
            p.video(&seq).unwrap(),
            FlvMedia::Config {
                codec: FC_CODEC_H264,
                data: params.clone()
            }
        );
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
        let au = annexb(&[&[0x09, 0xF0], SPS, PPS, idr]);
        let tag = avc_frame(&au, true, -40);
        assert_eq!(
            p.video(&tag).unwrap(),
            FlvMedia::Frame {
                codec: FC_CODEC_H264,
                cts: -40,
                keyframe: true,
                data: annexb(&[idr]),
            }
        );
    }

    /// The in-place parse gives what the copying parse gives, for every kind of tag.
    fn same_both_ways(p: &mut FlvParser, video: bool, tag: &[u8]) {
        let mut q = p.clone();
        let owned = if video { p.video(tag) } else { p.audio(tag) };
        let mut copy = tag.to_vec();
        let in_place = q
            .parse_in_place(video, &mut copy)
            .map(FlvMediaRef::into_owned);
        assert_eq!(in_place, owned, "tag {tag:02x?}");
    }

    #[test]
    fn in_place_parse_matches_the_copying_one() {
        let mut p = FlvParser::new();
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
        let p_frame: &[u8] = &[0x41, 0x9A, 0x02];
        let frame = avc_frame(&annexb(&[p_frame]), false, 0);
        same_both_ways(&mut p, true, &frame); // before the sequence header: an error
        let seq = avc_sequence_header(&annexb(&[SPS, PPS])).unwrap();
        same_both_ways(&mut p, true, &seq);
        same_both_ways(&mut p, true, &avc_frame(&annexb(&[idr, p_frame]), true, 80));
        same_both_ways(&mut p, true, &frame);
        // An empty NAL unit in the middle, a truncated length, a length past the end.
        same_both_ways(
            &mut p,
            true,
            &[0x27, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x41],
        );
        same_both_ways(&mut p, true, &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41, 0, 0]);
        same_both_ways(&mut p, true, &[0x27, 1, 0, 0, 0, 0, 0, 0, 9, 0x41]);
        same_both_ways(&mut p, true, &[0x27, 1, 0, 0, 0]);
        same_both_ways(&mut p, true, &[0x17, 2, 0, 0, 0]);
        // 2-byte NAL lengths: copied, not rewritten in place.
        let mut seq2 = seq.clone();
        seq2[9] = 0xFD;
        same_both_ways(&mut p, true, &seq2);
        same_both_ways(&mut p, true, &[0x27, 1, 0, 0, 0, 0, 2, 0x41, 7, 0, 1, 0x41]);
        // Audio: AAC config and frame, MP3, Opus, an empty frame.
        same_both_ways(&mut p, false, &[0xAF, 0, 0x12, 0x10]);
        same_both_ways(&mut p, false, &[0xAF, 1, 0x21, 0x10, 0x04]);
        same_both_ways(&mut p, false, &[0xAF, 1]);
        same_both_ways(&mut p, false, &[0x2F, 0xFF, 0xFB, 0x90]);
        same_both_ways(&mut p, false, &[0x91, b'O', b'p', b'u', b's', 0xFC, 1]);
        same_both_ways(&mut p, false, &[0x30]);
    }

    #[test]
    fn frame_before_config_and_bad_lengths() {
        let mut p = FlvParser::new();
        let tag = avc_frame(&annexb(&[&[0x41, 1, 2]]), false, 0);
        assert_eq!(p.video(&tag), Err(FlvError::NoConfig("video")));
        p.video(&avc_sequence_header(&annexb(&[SPS, PPS])).unwrap())
            .unwrap();
        // Length field says 255 bytes, 3 present.
        assert_eq!(
            p.video(&[0x27, 1, 0, 0, 0, 0, 0, 0, 0xFF, 1, 2, 3]),
            Err(FlvError::Malformed("NAL unit length"))
        );
        assert_eq!(p.video(&[0x27, 1, 0]), Err(FlvError::Truncated("video")));
        assert!(matches!(p.video(&[0x22, 0]), Err(FlvError::Unsupported(_))));
        // A truncated sequence header.
        assert!(p
            .video(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1F, 0xFF, 0xE1, 0, 9])
            .is_err());
    }

    #[test]
    fn enhanced_hevc() {
        let vps: &[u8] = &[0x40, 0x01, 0x0C];
        let sps: &[u8] = &[0x42, 0x01, 0x01, 0x01];
        let pps: &[u8] = &[0x44, 0x01, 0xC1];
        let mut rec = vec![1u8; 23];
        rec[21] = 0x0F; // 4-byte lengths
        rec[22] = 3;
        for n in [vps, sps, pps] {
            rec.push((n[0] >> 1) & 0x3F);
            rec.extend_from_slice(&1u16.to_be_bytes());
            rec.extend_from_slice(&(n.len() as u16).to_be_bytes());
            rec.extend_from_slice(n);
        }
        let mut tag = vec![0x90]; // ex header, key frame, sequence start
        tag.extend_from_slice(b"hvc1");
        tag.extend_from_slice(&rec);
        let mut p = FlvParser::new();
        assert_eq!(
            p.video(&tag).unwrap(),
            FlvMedia::Config {
                codec: FC_CODEC_HEVC,
                data: annexb(&[vps, sps, pps])
            }
        );
        // CodedFramesX: no composition time.
        let idr: &[u8] = &[0x26, 0x01, 0xAF];
        let mut f = vec![0x93];
        f.extend_from_slice(b"hvc1");
        f.extend_from_slice(&(idr.len() as u32).to_be_bytes());
        f.extend_from_slice(idr);
        assert_eq!(
            p.video(&f).unwrap(),
            FlvMedia::Frame {
                codec: FC_CODEC_HEVC,
                cts: 0,
                keyframe: true,
                data: annexb(&[idr])
            }
        );
        let mut av1 = vec![0x90];
        av1.extend_from_slice(b"av01");
        assert!(matches!(p.video(&av1), Err(FlvError::Unsupported(_))));
    }

    #[test]
    fn audio() {
        let mut p = FlvParser::new();
        let asc = [0x12, 0x10];
        assert_eq!(
            p.audio(&aac_sequence_header(&asc)).unwrap(),
            FlvMedia::Config {
                codec: FC_CODEC_AAC,
                data: asc.to_vec()
            }
        );
        assert!(p.audio(&[0xAF, 0, 0xFF]).is_err()); // not an ASC
        assert_eq!(
            p.audio(&aac_frame(&[1, 2, 3])).unwrap(),
            FlvMedia::Frame {
                codec: FC_CODEC_AAC,
                cts: 0,
                keyframe: true,
                data: vec![1, 2, 3]
            }
        );
        assert!(matches!(
            p.audio(&mp3_frame(&[0xFF, 0xFB, 0x90])).unwrap(),
            FlvMedia::Frame {
                codec: FC_CODEC_MP3,
                ..
            }
        ));
        let mut opus = vec![0x90];
        opus.extend_from_slice(b"Opus");
        opus.extend_from_slice(b"OpusHead");
        assert!(matches!(
            p.audio(&opus).unwrap(),
            FlvMedia::Config {
                codec: FC_CODEC_OPUS,
                ..
            }
        ));
        assert!(matches!(p.audio(&[0x6F, 1]), Err(FlvError::Unsupported(_))));
        assert!(p.audio(&[0x9F]).is_err());
    }

    /// A deterministic mutation fuzzer on stable: valid tags with bytes flipped, cut short or
    /// extended never panic, and frames that come out are Annex-B.
    #[test]
    fn mutated_tags_never_panic() {
        let params = annexb(&[SPS, PPS]);
        let seeds: Vec<Vec<u8>> = vec![
            avc_sequence_header(&params).unwrap(),
            avc_frame(&annexb(&[&[0x65, 1, 2, 3, 4, 5, 6, 7]]), true, 33),
            aac_sequence_header(&[0x12, 0x10]),
            aac_frame(&[9; 20]),
            [&[0x90u8][..], b"hvc1", &[1u8; 30]].concat(),
            [&[0x91u8][..], b"Opus", &[7u8; 10]].concat(),
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut frames = 0;
        for _ in 0..50_000 {
            let mut t = seeds[(rnd() % seeds.len() as u64) as usize].clone();
            for _ in 0..(rnd() % 4 + 1) {
                match rnd() % 3 {
                    0 if !t.is_empty() => {
                        let i = (rnd() % t.len() as u64) as usize;
                        t[i] = rnd() as u8;
                    }
                    1 => t.truncate((rnd() % (t.len() as u64 + 1)) as usize),
                    _ => t.push(rnd() as u8),
                }
            }
            let mut p = FlvParser::new();
            p.video(&avc_sequence_header(&params).unwrap()).unwrap();
            for r in [p.video(&t), p.audio(&t)] {
                if let Ok(FlvMedia::Frame { codec, data, .. }) = r {
                    frames += 1;
                    if codec == FC_CODEC_H264 || codec == FC_CODEC_HEVC {
                        assert_eq!(&data[..4], &[0, 0, 0, 1]);
                    }
                }
            }
        }
        assert!(
            frames > 1000,
            "mutations never produced a frame: the parser is not reached"
        );
    }

    #[test]
    fn file_tags_skip_script_tags_and_stop_at_a_cut() {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09".to_vec();
        f.extend_from_slice(&[0; 4]);
        for (kind, ts, body) in [
            (18u8, 0u32, &b"meta"[..]),
            (9, 40, b"vid"),
            (8, 0x0100_0000, b"au"),
        ] {
            f.push(kind);
            f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(&ts.to_be_bytes()[1..]);
            f.push((ts >> 24) as u8);
            f.extend_from_slice(&[0; 3]);
            f.extend_from_slice(body);
            f.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        let tags: Vec<_> = file_tags(&f).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            tags,
            vec![
                FileTag {
                    video: true,
                    ts: 40,
                    body: b"vid"
                },
                FileTag {
                    video: false,
                    ts: 0x0100_0000,
                    body: b"au"
                },
            ]
        );
        let cut = &f[..f.len() - 6];
        let last = file_tags(cut).unwrap().last().unwrap();
        assert_eq!(last, Err(FlvError::Truncated("FLV file")));
        assert!(file_tags(b"FLX\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00").is_err());
    }
}

//! MP4 (ISO BMFF) → [`Media`]: fragmented (the CMAF / HLS fMP4 layout), sans-IO, and whole
//! files.
//!
//! The init segment's `moov` gives the tracks and their codec parameters; each `moof` and the
//! `mdat` after it give samples. HLS playlists with `#EXT-X-MAP` feed the init segment and then
//! every media segment through [`Fmp4ToMedia::push`]. `file://` inputs read `.mp4` files with
//! [`read`]: progressive files through their sample tables, fragmented ones fragment by
//! fragment.
//!
//! - Codecs: H.264 (`avc1`/`avc3` with `avcC`), HEVC (`hvc1`/`hev1` with `hvcC`), AAC and MP3
//!   (`mp4a` by its object type, `.mp3`), Opus (`Opus` with `dOps`, handed on as `OpusHead`),
//!   AC-3 (`ac-3`). Other tracks (subtitles, timecode, other codecs) are left out.
//! - Video leaves as Annex-B (the parameter sets as codec parameters), audio as raw frames, like
//!   every other source. Timestamps stay in each track's media timescale: the timebase of the
//!   track is `1/timescale`.
//! - Samples of one segment are handed out in decoding-time order across tracks (a fragment
//!   stores each track's samples together, often a second or more of them).
//! - Not handled: encrypted entries (`encv`/`enca`), edit lists (ignored: timestamps are the
//!   decode times), compact sample sizes (`stz2`).
//!
//! Hostile input: box sizes and sample ranges are checked against the bytes present. A broken
//! `moov` is an error (nothing can be read without it); a broken fragment is skipped and counted
//! ([`Fmp4ToMedia::errors`]), and the next one is read.

use crate::flv::{decoder_config, fourcc, to_annexb};
use crate::media::MediaOut;
use crate::media::{Media, Track};
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::FC_CODEC_OPUS;
use framecache_shm::packet::{
    FC_CODEC_AAC, FC_CODEC_AC3, FC_CODEC_H264, FC_CODEC_HEVC, FC_CODEC_MP3,
};

/// `tfhd` flags.
const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_DURATION: u32 = 0x08;
const TFHD_DEFAULT_SIZE: u32 = 0x10;
const TFHD_DEFAULT_FLAGS: u32 = 0x20;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x2_0000;
/// `trun` flags.
const TRUN_DATA_OFFSET: u32 = 0x01;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x04;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_CTO: u32 = 0x800;
/// `sample_is_non_sync_sample` in sample flags.
const SAMPLE_NON_SYNC: u32 = 0x1_0000;

fn bad(what: &str) -> Error {
    Error::Protocol(format!("fMP4: {what}"))
}

fn be32(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        .ok_or_else(|| bad("box shorter than its fields"))
}

fn be16(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .map(|x| u16::from_be_bytes([x[0], x[1]]))
        .ok_or_else(|| bad("box shorter than its fields"))
}

fn be64(b: &[u8], at: usize) -> Result<u64> {
    Ok((u64::from(be32(b, at)?) << 32) | u64::from(be32(b, at + 4)?))
}

/// The boxes in `b` (which starts at offset `base` of the buffer being parsed): (type, offset
/// of the box in that buffer, payload). A box that runs past the end is an error and ends
/// the walk.
struct Boxes<'a> {
    b: &'a [u8],
    at: usize,
    base: usize,
}

fn boxes(b: &[u8], base: usize) -> Boxes<'_> {
    Boxes { b, at: 0, base }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<([u8; 4], usize, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.b[self.at..];
        if rest.is_empty() {
            return None;
        }
        let start = self.at;
        let parsed = (|| {
            if rest.len() < 8 {
                return Err(bad("box header cut short"));
            }
            let ty = [rest[4], rest[5], rest[6], rest[7]];
            let (size, header) = match be32(rest, 0)? {
                0 => (rest.len() as u64, 8),
                1 => (be64(rest, 8)?, 16),
                n => (u64::from(n), 8),
            };
            if size < header as u64 {
                return Err(bad("box size smaller than its header"));
            }
            if size > rest.len() as u64 {
                return Err(Error::Truncated(format!(
                    "fMP4 box {} of {size} bytes, {} present",
                    fourcc(&ty),
                    rest.len()
                )));
            }
            Ok((ty, header, size as usize))
        })();
        match parsed {
            Ok((ty, header, size)) => {
                self.at += size;
                Some(Ok((ty, self.base + start, &rest[header..size])))
            }
            Err(e) => {
                self.at = self.b.len();
                Some(Err(e))
            }
        }
    }
}

/// The payload of the first child box of type `ty`.
fn child<'a>(b: &'a [u8], ty: &[u8; 4]) -> Result<Option<&'a [u8]>> {
    for bx in boxes(b, 0) {
        let (t, _, body) = bx?;
        if &t == ty {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

fn need_child<'a>(b: &'a [u8], ty: &[u8; 4]) -> Result<&'a [u8]> {
    child(b, ty)?.ok_or_else(|| bad(&format!("no {} box", fourcc(ty))))
}

/// Sample defaults of a track (`trex`, overridden per fragment by `tfhd`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Defaults {
    duration: u32,
    size: u32,
    flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mp4Track {
    id: u32,
    codec: u32,
    timescale: u32,
    /// NAL length size (video); 0 for audio.
    nal_len: usize,
    params: Option<Vec<u8>>,
    defaults: Defaults,
}

/// Fragmented MP4 bytes → [`Media`]. Feed whole top-level boxes: the init segment, then each
/// media segment (one call per segment, as HLS fetches them).
#[derive(Debug, Default)]
pub struct Fmp4ToMedia {
    tracks: Vec<Mp4Track>,
    /// Decode time after the last sample of each track (for fragments without `tfdt`).
    next_dts: Vec<u64>,
    /// Fragments skipped as malformed.
    pub errors: u64,
    /// Why the last one was skipped.
    pub last_error: Option<String>,
}

/// One sample, before it is handed out.
struct Sample {
    track: usize,
    dts: u64,
    cto: i64,
    keyframe: bool,
    at: usize,
    size: usize,
}

impl Fmp4ToMedia {
    /// A demuxer that has seen no init segment yet.
    pub fn new() -> Fmp4ToMedia {
        Fmp4ToMedia::default()
    }

    /// Reads an init or media segment (or both, concatenated). A `moov` (re)defines the
    /// tracks: [`Media::Tracks`] when they differ from the ones before, [`Media::Params`]
    /// when parameters changed. Each `moof` with its data gives [`Media::Frame`]s.
    pub fn push(&mut self, data: &[u8], out: MediaOut) -> Result<()> {
        let mut samples = Vec::new();
        // A segment cut short fails its last fragment and the box walk: one error.
        let mut failed = false;
        for bx in boxes(data, 0) {
            let (ty, start, body) = match bx {
                Ok(b) => b,
                Err(e) if self.tracks.is_empty() => return Err(e),
                Err(e) => {
                    if !failed {
                        self.skip(e);
                    }
                    break;
                }
            };
            match &ty {
                b"moov" => {
                    self.flush(data, &mut samples, out)?;
                    self.moov(body, out)?;
                }
                b"moof" if self.tracks.is_empty() => {
                    return Err(bad("a fragment before the init segment (moov)"));
                }
                b"moof" => {
                    let before = samples.len();
                    failed = false;
                    if let Err(e) = self.moof(data, start, body, &mut samples) {
                        samples.truncate(before);
                        self.skip(e);
                        failed = true;
                    }
                }
                _ => {}
            }
        }
        self.flush(data, &mut samples, out)
    }

    fn skip(&mut self, e: Error) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
    }

    /// Hands out `samples` (which point into `data`) in decoding-time order across tracks.
    fn flush(&mut self, data: &[u8], samples: &mut Vec<Sample>, out: MediaOut) -> Result<()> {
        let key =
            |s: &Sample| i128::from(s.dts) * 1_000_000 / i128::from(self.tracks[s.track].timescale);
        samples.sort_by_key(key);
        for s in samples.drain(..) {
            self.emit(&s, &data[s.at..s.at + s.size], out)?;
        }
        Ok(())
    }

    /// Hands out one sample with its bytes `raw`: video to Annex-B (a sample whose NAL lengths
    /// do not add up is dropped and counted).
    fn emit(&mut self, s: &Sample, raw: &[u8], out: MediaOut) -> Result<()> {
        let t = &self.tracks[s.track];
        let frame = if t.nal_len > 0 {
            match to_annexb(t.nal_len, raw) {
                Ok(f) if !f.is_empty() => f,
                Ok(_) => return Ok(()),
                Err(e) => {
                    self.errors += 1;
                    self.last_error = Some(format!("MP4 sample: {e}"));
                    return Ok(());
                }
            }
        } else {
            raw.to_vec()
        };
        let dts = i64::try_from(s.dts).unwrap_or(i64::MAX);
        out(Media::Frame {
            track: s.track,
            pts: dts.saturating_add(s.cto),
            dts,
            keyframe: s.keyframe,
            discontinuity: false,
            data: frame,
        })
    }

    fn moov(&mut self, moov: &[u8], out: MediaOut) -> Result<()> {
        let mut tracks = Vec::new();
        let mut skipped = Vec::new();
        let mut trex = Vec::new();
        for bx in boxes(moov, 0) {
            let (ty, _, body) = bx?;
            match &ty {
                b"trak" => match trak(body)? {
                    Ok(t) => tracks.push(t),
                    Err(why) => skipped.push(why),
                },
                b"mvex" => {
                    for bx in boxes(body, 0) {
                        let (ty, _, b) = bx?;
                        if &ty == b"trex" {
                            // version/flags, track_ID, description index, duration, size, flags
                            let d = Defaults {
                                duration: be32(b, 12)?,
                                size: be32(b, 16)?,
                                flags: be32(b, 20)?,
                            };
                            trex.push((be32(b, 4)?, d));
                        }
                    }
                }
                _ => {}
            }
        }
        if tracks.is_empty() {
            return Err(bad(&format!(
                "no track framecache can carry ({})",
                if skipped.is_empty() {
                    "no tracks".to_string()
                } else {
                    skipped.join("; ")
                }
            )));
        }
        for t in &mut tracks {
            if let Some((_, d)) = trex.iter().find(|(id, _)| *id == t.id) {
                t.defaults = *d;
            }
        }
        let same_tracks = tracks.len() == self.tracks.len()
            && tracks
                .iter()
                .zip(&self.tracks)
                .all(|(a, b)| (a.id, a.codec, a.timescale) == (b.id, b.codec, b.timescale));
        if !same_tracks {
            out(Media::Tracks(
                tracks
                    .iter()
                    .map(|t| Track {
                        codec: t.codec,
                        timebase: (1, t.timescale),
                    })
                    .collect(),
            ))?;
            self.next_dts = vec![0; tracks.len()];
        }
        for (i, t) in tracks.iter().enumerate() {
            let changed = !same_tracks || self.tracks[i].params != t.params;
            if let (true, Some(p)) = (changed, &t.params) {
                out(Media::Params {
                    track: i,
                    data: p.clone(),
                })?;
            }
        }
        self.tracks = tracks;
        Ok(())
    }

    /// One `moof`: its samples, checked against `data` (the whole segment; the moof starts at
    /// `moof_at`), appended to `samples`.
    fn moof(
        &mut self,
        data: &[u8],
        moof_at: usize,
        moof: &[u8],
        samples: &mut Vec<Sample>,
    ) -> Result<()> {
        // Where a traf's data starts when nothing says: after the previous traf's data.
        let mut prev_end = moof_at as u64;
        for bx in boxes(moof, 0) {
            let (ty, _, traf) = bx?;
            if &ty != b"traf" {
                continue;
            }
            let tfhd = need_child(traf, b"tfhd")?;
            let flags = be32(tfhd, 0)? & 0xFF_FFFF;
            let id = be32(tfhd, 4)?;
            let Some(ti) = self.tracks.iter().position(|t| t.id == id) else {
                continue; // a track we left out
            };
            let mut d = self.tracks[ti].defaults;
            let mut at = 8;
            let base = if flags & TFHD_BASE_DATA_OFFSET != 0 {
                at += 8;
                be64(tfhd, 8)?
            } else if flags & TFHD_DEFAULT_BASE_IS_MOOF != 0 {
                moof_at as u64
            } else {
                prev_end
            };
            if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
                at += 4;
            }
            for (bit, field) in [
                (TFHD_DEFAULT_DURATION, &mut d.duration),
                (TFHD_DEFAULT_SIZE, &mut d.size),
                (TFHD_DEFAULT_FLAGS, &mut d.flags),
            ] {
                if flags & bit != 0 {
                    *field = be32(tfhd, at)?;
                    at += 4;
                }
            }
            let mut dts = match child(traf, b"tfdt")? {
                Some(b) if b.first() == Some(&1) => be64(b, 4)?,
                Some(b) => u64::from(be32(b, 4)?),
                None => self.next_dts[ti],
            };
            let video = self.tracks[ti].nal_len > 0;
            // A trun without a data offset continues where the previous one ended.
            let mut pos = base;
            for bx in boxes(traf, 0) {
                let (ty, _, trun) = bx?;
                if &ty != b"trun" {
                    continue;
                }
                let vf = be32(trun, 0)?;
                let (version, tf) = (vf >> 24, vf & 0xFF_FFFF);
                let count = be32(trun, 4)? as usize;
                let mut at = 8;
                if tf & TRUN_DATA_OFFSET != 0 {
                    let off = be32(trun, at)? as i32;
                    at += 4;
                    pos = base
                        .checked_add_signed(i64::from(off))
                        .ok_or_else(|| bad("data offset before the file"))?;
                }
                let first_flags = if tf & TRUN_FIRST_SAMPLE_FLAGS != 0 {
                    at += 4;
                    Some(be32(trun, at - 4)?)
                } else {
                    None
                };
                let per_sample = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO]
                    .iter()
                    .filter(|&&b| tf & b != 0)
                    .count()
                    * 4;
                // Every sample needs its fields here, or at least one byte of data there.
                let fits = match trun.len().saturating_sub(at).checked_div(per_sample) {
                    Some(room) => count <= room,
                    None => count <= data.len(),
                };
                if !fits {
                    return Err(bad("trun sample count larger than the fragment"));
                }
                for i in 0..count {
                    let mut field = |bit: u32, default: u32| -> Result<u32> {
                        if tf & bit != 0 {
                            at += 4;
                            be32(trun, at - 4)
                        } else {
                            Ok(default)
                        }
                    };
                    let duration = field(TRUN_DURATION, d.duration)?;
                    let size = field(TRUN_SIZE, d.size)?;
                    let sflags = field(
                        TRUN_FLAGS,
                        first_flags.filter(|_| i == 0).unwrap_or(d.flags),
                    )?;
                    let cto = field(TRUN_CTO, 0)?;
                    let cto = if version == 0 {
                        i64::from(cto)
                    } else {
                        i64::from(cto as i32)
                    };
                    let end = pos
                        .checked_add(u64::from(size))
                        .filter(|&e| e <= data.len() as u64)
                        .ok_or_else(|| {
                            Error::Truncated(format!(
                                "fMP4 sample of {size} bytes at {pos}, past the segment's {} bytes",
                                data.len()
                            ))
                        })?;
                    if size > 0 {
                        samples.push(Sample {
                            track: ti,
                            dts,
                            cto,
                            keyframe: !video || sflags & SAMPLE_NON_SYNC == 0,
                            at: pos as usize,
                            size: size as usize,
                        });
                    }
                    pos = end;
                    dts = dts.wrapping_add(u64::from(duration));
                }
            }
            self.next_dts[ti] = dts;
            prev_end = pos;
        }
        Ok(())
    }
}

/// One `trak`: `Ok(Err(why))` for a track framecache does not carry.
fn trak(trak: &[u8]) -> Result<std::result::Result<Mp4Track, String>> {
    let id = track_id(trak)?;
    let mdia = need_child(trak, b"mdia")?;
    let mdhd = need_child(mdia, b"mdhd")?;
    let timescale = if mdhd.first() == Some(&1) {
        be32(mdhd, 20)?
    } else {
        be32(mdhd, 12)?
    };
    if timescale == 0 {
        return Err(bad("media timescale 0"));
    }
    let handler = need_child(mdia, b"hdlr")?;
    let handler = handler.get(8..12).ok_or_else(|| bad("short hdlr"))?;
    if handler != b"vide" && handler != b"soun" {
        return Ok(Err(format!("track {id}: {} track", fourcc(handler))));
    }
    let stbl = need_child(need_child(mdia, b"minf")?, b"stbl")?;
    let stsd = need_child(stbl, b"stsd")?;
    let entries = stsd.get(8..).ok_or_else(|| bad("short stsd"))?;
    let Some(entry) = boxes(entries, 0).next() else {
        return Err(bad("stsd without a sample entry"));
    };
    let (ty, _, e) = entry?;
    let mut t = Mp4Track {
        id,
        codec: 0,
        timescale,
        nal_len: 0,
        params: None,
        defaults: Defaults::default(),
    };
    let unsupported = |what: String| Ok(Err(format!("track {id}: {what}")));
    match &ty {
        b"avc1" | b"avc3" | b"hvc1" | b"hev1" => {
            let (codec, cfg) = if ty.starts_with(b"avc") {
                (FC_CODEC_H264, b"avcC")
            } else {
                (FC_CODEC_HEVC, b"hvcC")
            };
            // VisualSampleEntry: 78 bytes of fields before its child boxes.
            let kids = e
                .get(78..)
                .ok_or_else(|| bad("short visual sample entry"))?;
            let rec = need_child(kids, cfg)?;
            let (nal_len, params) =
                decoder_config(codec, rec).map_err(|e| bad(&format!("{}: {e}", fourcc(cfg))))?;
            t.codec = codec;
            t.nal_len = nal_len;
            t.params = Some(params);
        }
        b"mp4a" | b"Opus" | b".mp3" | b"ac-3" => {
            // AudioSampleEntry: 28 bytes of fields; QuickTime sound description versions 1
            // and 2 add 16 and 36.
            let extra = match be16(e, 8)? {
                1 => 16,
                2 => 36,
                _ => 0,
            };
            let kids = e
                .get(28 + extra..)
                .ok_or_else(|| bad("short audio sample entry"))?;
            match &ty {
                b"mp4a" => {
                    let (oti, dsi) = esds(need_child(kids, b"esds")?)?;
                    match oti {
                        0x40 | 0x66..=0x68 => {
                            let asc = dsi.ok_or_else(|| bad("AAC without AudioSpecificConfig"))?;
                            if crate::codec::aac_config_info(asc).is_none() {
                                return Err(bad("bad AudioSpecificConfig"));
                            }
                            t.codec = FC_CODEC_AAC;
                            t.params = Some(asc.to_vec());
                        }
                        0x69 | 0x6B => t.codec = FC_CODEC_MP3,
                        o => return unsupported(format!("mp4a object type 0x{o:02x}")),
                    }
                }
                b"Opus" => {
                    t.codec = FC_CODEC_OPUS;
                    t.params = Some(opus_head(need_child(kids, b"dOps")?)?);
                }
                b".mp3" => t.codec = FC_CODEC_MP3,
                _ => t.codec = FC_CODEC_AC3,
            }
        }
        b"encv" | b"enca" => return unsupported("encrypted".into()),
        other => return unsupported(format!("codec {}", fourcc(other))),
    }
    Ok(Ok(t))
}

/// An MPEG-4 descriptor at the start of `b`: (tag, body, the rest after it).
fn descriptor(b: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let tag = *b.first().ok_or_else(|| bad("esds cut short"))?;
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let c = *b.get(i).ok_or_else(|| bad("esds cut short"))?;
        len = (len << 7) | usize::from(c & 0x7F);
        i += 1;
        if c & 0x80 == 0 || i == 5 {
            break;
        }
    }
    let body = b
        .get(i..i + len)
        .ok_or_else(|| bad("esds descriptor runs past its box"))?;
    Ok((tag, body, &b[i + len..]))
}

/// `esds` → (objectTypeIndication, DecoderSpecificInfo).
fn esds(b: &[u8]) -> Result<(u8, Option<&[u8]>)> {
    let (tag, es, _) = descriptor(b.get(4..).ok_or_else(|| bad("short esds"))?)?;
    if tag != 3 {
        return Err(bad("esds without an ES descriptor"));
    }
    let flags = *es.get(2).ok_or_else(|| bad("short ES descriptor"))?;
    let mut at = 3;
    if flags & 0x80 != 0 {
        at += 2;
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*es.get(at).ok_or_else(|| bad("short ES descriptor"))?);
    }
    if flags & 0x20 != 0 {
        at += 2;
    }
    let mut rest = es.get(at..).ok_or_else(|| bad("short ES descriptor"))?;
    while !rest.is_empty() {
        let (tag, dc, r) = descriptor(rest)?;
        rest = r;
        if tag != 4 {
            continue;
        }
        let oti = *dc
            .first()
            .ok_or_else(|| bad("short DecoderConfigDescriptor"))?;
        let mut inner = dc.get(13..).unwrap_or(&[]);
        while !inner.is_empty() {
            let (tag, dsi, r) = descriptor(inner)?;
            if tag == 5 {
                return Ok((oti, Some(dsi)));
            }
            inner = r;
        }
        return Ok((oti, None));
    }
    Err(bad("esds without a DecoderConfigDescriptor"))
}

/// `dOps` (big-endian, version 0) → `OpusHead` (RFC 7845: little-endian, version 1).
fn opus_head(d: &[u8]) -> Result<Vec<u8>> {
    if d.len() < 11 || d[0] != 0 {
        return Err(bad("bad dOps"));
    }
    let channels = d[1];
    let family = d[10];
    let table = if family != 0 {
        let n = 2 + usize::from(channels);
        d.get(11..11 + n)
            .ok_or_else(|| bad("dOps channel mapping cut short"))?
    } else {
        &[]
    };
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&be16(d, 2)?.to_le_bytes());
    h.extend_from_slice(&be32(d, 4)?.to_le_bytes());
    h.extend_from_slice(&be16(d, 8)?.to_le_bytes());
    h.push(family);
    h.extend_from_slice(table);
    Ok(h)
}

// ---------------------------------------------------------------------------------------------
// MP4 files
// ---------------------------------------------------------------------------------------------

/// Largest `moov` (or fragment) read into memory from a file.
const FILE_BOX_MAX: u64 = 64 << 20;

/// [`read`] of a file already in memory (tests, fuzzing).
pub fn read_bytes(data: &[u8], out: MediaOut) -> Result<()> {
    let read_at = |at: u64, n: u64| -> Result<Vec<u8>> {
        at.checked_add(n)
            .and_then(|end| data.get(at as usize..end as usize))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Truncated(format!("MP4 cut short at {} bytes", data.len())))
    };
    read("MP4", data.len() as u64, &read_at, &|| false, out)
}

/// Reads an MP4 file (progressive with sample tables, or fragmented) of `len` bytes through
/// `read_at(offset, n)` and hands out its media: tracks and parameters, then every sample in
/// decoding order across tracks, then the samples of any fragments. Only the `moov` and one
/// sample (or fragment) at a time are asked for. `stop` is asked between samples. A file cut
/// short gives the samples before the cut, then an error (`read_at` reports the cut as
/// [`Error::Truncated`]). `name` names the file in errors.
pub fn read(
    name: &str,
    len: u64,
    read_at: &dyn Fn(u64, u64) -> Result<Vec<u8>>,
    stop: &dyn Fn() -> bool,
    out: MediaOut,
) -> Result<()> {
    // The top-level boxes: (type, offset, header size, size).
    let mut top = Vec::new();
    let mut at = 0u64;
    while at <= len && len - at >= 8 {
        let h = read_at(at, (len - at).min(16))?;
        let (size, header) = match be32(&h, 0)? {
            0 => (len - at, 8),
            1 => (be64(&h, 8)?, 16),
            n => (u64::from(n), 8),
        };
        if size < header {
            return Err(bad(&format!(
                "{name}: box size smaller than its header at {at}"
            )));
        }
        top.push(([h[4], h[5], h[6], h[7]], at, header, size));
        at = at.saturating_add(size);
    }
    let (_, moov_at, moov_header, moov_size) = *top
        .iter()
        .find(|b| &b.0 == b"moov")
        .ok_or_else(|| bad(&format!("{name}: no moov box (not MP4, or cut short)")))?;
    if moov_size > FILE_BOX_MAX {
        return Err(bad(&format!("{name}: moov of {moov_size} bytes")));
    }
    let moov = read_at(moov_at + moov_header, moov_size - moov_header)?;
    let mut demux = Fmp4ToMedia::new();
    demux.moov(&moov, out)?;
    let mut samples = Vec::new();
    for bx in boxes(&moov, 0) {
        let (ty, _, trak) = bx?;
        if &ty != b"trak" {
            continue;
        }
        let id = track_id(trak)?;
        if let Some(ti) = demux.tracks.iter().position(|t| t.id == id) {
            sample_table(trak, ti, &demux.tracks[ti], len, &mut samples)?;
        }
    }
    let tracks = &demux.tracks;
    samples.sort_by_key(|s: &FileSample| {
        let t = i128::from(s.s.dts) * 1_000_000 / i128::from(tracks[s.s.track].timescale);
        (t, s.offset)
    });
    for s in &samples {
        if stop() {
            return Ok(());
        }
        if s.offset.saturating_add(s.s.size as u64) > len {
            return Err(Error::Truncated(format!(
                "{name}: a sample at {} runs past the end ({len} bytes)",
                s.offset
            )));
        }
        let raw = read_at(s.offset, s.s.size as u64)?;
        demux.emit(&s.s, &raw, out)?;
    }
    // Fragments: each moof with the boxes up to the next moof (its mdat).
    let moofs: Vec<usize> = (0..top.len()).filter(|&i| &top[i].0 == b"moof").collect();
    for (k, &i) in moofs.iter().enumerate() {
        if stop() {
            return Ok(());
        }
        let start = top[i].1;
        let end = moofs.get(k + 1).map_or(len, |&j| top[j].1).min(len);
        if end - start > FILE_BOX_MAX {
            return Err(bad(&format!("{name}: fragment of {} bytes", end - start)));
        }
        demux.push(&read_at(start, end - start)?, out)?;
    }
    Ok(())
}

/// One sample of a progressive file: where it lies.
struct FileSample {
    s: Sample,
    offset: u64,
}

fn track_id(trak: &[u8]) -> Result<u32> {
    let tkhd = need_child(trak, b"tkhd")?;
    if tkhd.first() == Some(&1) {
        be32(tkhd, 20)
    } else {
        be32(tkhd, 12)
    }
}

/// A full box's entries: (entry count, the entries), checked to hold `count` entries of
/// `size` bytes.
fn table(b: &[u8], size: usize) -> Result<(usize, &[u8])> {
    let count = be32(b, 4)? as usize;
    let rest = b.get(8..).unwrap_or(&[]);
    if count > rest.len() / size {
        return Err(bad("sample table shorter than its entry count"));
    }
    Ok((count, rest))
}

/// The samples of track `ti` from its sample tables (`stsz`, `stsc`, `stco`/`co64`, `stts`,
/// `ctts`, `stss`), appended to `out`.
fn sample_table(
    trak: &[u8],
    ti: usize,
    t: &Mp4Track,
    file_len: u64,
    out: &mut Vec<FileSample>,
) -> Result<()> {
    let stbl = need_child(need_child(need_child(trak, b"mdia")?, b"minf")?, b"stbl")?;
    let Some(stsz) = child(stbl, b"stsz")? else {
        // No size table at all: no samples here (some fragmented files leave it out).
        return match child(stbl, b"stz2")? {
            Some(_) => Err(bad("compact sample sizes (stz2) are not supported")),
            None => Ok(()),
        };
    };
    let fixed = be32(stsz, 4)?;
    let count = be32(stsz, 8)? as usize;
    if count == 0 {
        return Ok(()); // a fragmented file: samples are in the fragments
    }
    let sizes = stsz.get(12..).unwrap_or(&[]);
    // Bounded by the table, or for fixed sizes by the file: no expansion beyond the bytes.
    let plausible = if fixed == 0 {
        count <= sizes.len() / 4
    } else {
        count as u64 <= file_len / u64::from(fixed)
    };
    if !plausible {
        return Err(bad("sample count larger than the file"));
    }
    let size_of = |i: usize| -> Result<u32> {
        if fixed != 0 {
            Ok(fixed)
        } else {
            be32(sizes, i * 4)
        }
    };
    let offsets: Vec<u64> = match (child(stbl, b"stco")?, child(stbl, b"co64")?) {
        (Some(b), _) => {
            let (n, e) = table(b, 4)?;
            (0..n)
                .map(|i| be32(e, i * 4).map(u64::from))
                .collect::<Result<_>>()?
        }
        (None, Some(b)) => {
            let (n, e) = table(b, 8)?;
            (0..n).map(|i| be64(e, i * 8)).collect::<Result<_>>()?
        }
        (None, None) => return Err(bad("no chunk offset table")),
    };
    let (nsc, stsc) = table(need_child(stbl, b"stsc")?, 12)?;
    let (ntts, stts) = table(need_child(stbl, b"stts")?, 8)?;
    let ctts = match child(stbl, b"ctts")? {
        Some(b) => Some((b.first() == Some(&1), table(b, 8)?)),
        None => None,
    };
    let sync = match child(stbl, b"stss")? {
        Some(b) => {
            let (n, e) = table(b, 4)?;
            let mut v = (0..n)
                .map(|i| be32(e, i * 4))
                .collect::<Result<Vec<u32>>>()?;
            v.sort_unstable();
            Some(v)
        }
        None => None,
    };
    // Decode times, composition offsets: run-length tables walked along with the samples.
    let (mut tts_i, mut tts_left, mut dts) = (0usize, 0u32, 0u64);
    let (mut cts_i, mut cts_left) = (0usize, 0u32);
    let mut sample = 0usize;
    let video = t.nal_len > 0;
    // The stsc entry in force (entries are in rising first_chunk order, 1-based).
    let mut sc = 0usize;
    'chunks: for (c, &chunk_at) in offsets.iter().enumerate() {
        while sc + 1 < nsc && be32(stsc, (sc + 1) * 12)? as usize <= c + 1 {
            sc += 1;
        }
        let per_chunk = if nsc > 0 && be32(stsc, sc * 12)? as usize <= c + 1 {
            be32(stsc, sc * 12 + 4)?
        } else {
            0
        };
        let mut at = chunk_at;
        for _ in 0..per_chunk {
            if sample >= count {
                break 'chunks;
            }
            let size = size_of(sample)?;
            while tts_left == 0 && tts_i < ntts {
                tts_left = be32(stts, tts_i * 8)?;
                tts_i += 1;
            }
            let delta = if tts_left > 0 {
                tts_left -= 1;
                be32(stts, (tts_i - 1) * 8 + 4)?
            } else {
                0
            };
            let mut cto = 0i64;
            if let Some((signed, (n, e))) = &ctts {
                while cts_left == 0 && cts_i < *n {
                    cts_left = be32(e, cts_i * 8)?;
                    cts_i += 1;
                }
                if cts_left > 0 {
                    cts_left -= 1;
                    let v = be32(e, (cts_i - 1) * 8 + 4)?;
                    cto = if *signed {
                        i64::from(v as i32)
                    } else {
                        i64::from(v)
                    };
                }
            }
            let keyframe = !video
                || sync
                    .as_ref()
                    .is_none_or(|v| v.binary_search(&(sample as u32 + 1)).is_ok());
            if size > 0 {
                out.push(FileSample {
                    s: Sample {
                        track: ti,
                        dts,
                        cto,
                        keyframe,
                        at: 0,
                        size: size as usize,
                    },
                    offset: at,
                });
            }
            at = at.saturating_add(u64::from(size));
            dts = dts.wrapping_add(u64::from(delta));
            sample += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9];
    const PPS: &[u8] = &[0x68, 0xEB, 0xE3];
    const ASC: &[u8] = &[0x12, 0x10];

    fn bx(ty: &[u8; 4], parts: &[&[u8]]) -> Vec<u8> {
        let body = parts.concat();
        [&((body.len() + 8) as u32).to_be_bytes()[..], ty, &body].concat()
    }

    fn full(ty: &[u8; 4], version: u8, flags: u32, parts: &[&[u8]]) -> Vec<u8> {
        let vf = (u32::from(version) << 24) | flags;
        bx(ty, &[&[&vf.to_be_bytes()[..]], parts].concat())
    }

    fn avcc(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        bx(b"avcC", &[&r])
    }

    fn esds(oti: u8, asc: &[u8]) -> Vec<u8> {
        let dsi = [&[5u8, asc.len() as u8][..], asc].concat();
        let dc = [
            &[4u8, (13 + dsi.len()) as u8, oti, 0x15][..],
            &[0; 11],
            &dsi,
        ]
        .concat();
        let es = [
            &[3u8, (3 + dc.len() + 3) as u8, 0, 1, 0][..],
            &dc,
            &[6, 1, 2],
        ]
        .concat();
        full(b"esds", 0, 0, &[&es])
    }

    fn trak(id: u32, handler: &[u8; 4], timescale: u32, entry: Vec<u8>) -> Vec<u8> {
        let tkhd = full(b"tkhd", 0, 3, &[&[0; 8], &id.to_be_bytes(), &[0; 68]]);
        let mdhd = full(b"mdhd", 0, 0, &[&[0; 8], &timescale.to_be_bytes(), &[0; 8]]);
        let hdlr = full(b"hdlr", 0, 0, &[&[0; 4], handler, &[0; 13]]);
        let stsd = full(b"stsd", 0, 0, &[&1u32.to_be_bytes(), &entry]);
        let stbl = bx(b"stbl", &[&stsd]);
        let minf = bx(b"minf", &[&stbl]);
        let mdia = bx(b"mdia", &[&mdhd, &hdlr, &minf]);
        bx(b"trak", &[&tkhd, &mdia])
    }

    fn video_entry(cfg: Vec<u8>) -> Vec<u8> {
        bx(b"avc1", &[&[0; 78], &cfg])
    }

    fn audio_entry(ty: &[u8; 4], cfg: Vec<u8>) -> Vec<u8> {
        bx(ty, &[&[0; 28], &cfg])
    }

    /// ftyp + moov: video track 1 (1/90000), AAC track 2 (1/48000), trex defaults per track.
    fn init(sps: &[u8]) -> Vec<u8> {
        let trex = |id: u32, duration: u32| {
            full(
                b"trex",
                0,
                0,
                &[
                    &id.to_be_bytes(),
                    &1u32.to_be_bytes(),
                    &duration.to_be_bytes(),
                    &[0; 8],
                ],
            )
        };
        let moov = bx(
            b"moov",
            &[
                &trak(1, b"vide", 90_000, video_entry(avcc(sps, PPS))),
                &trak(2, b"soun", 48_000, audio_entry(b"mp4a", esds(0x40, ASC))),
                &trak(3, b"text", 1000, bx(b"tx3g", &[&[0; 8]])),
                &bx(b"mvex", &[&trex(1, 3000), &trex(2, 1024)]),
            ],
        );
        [bx(b"ftyp", &[b"iso6", &[0; 4]]), moov].concat()
    }

    /// One sample of a fragment: (data, flags, composition offset).
    type S<'a> = (&'a [u8], u32, i32);

    /// moof + mdat: a traf per (track id, base decode time, samples), each with a trun that
    /// has sizes, flags and composition offsets, default-base-is-moof and explicit offsets.
    fn fragment(trafs: &[(u32, u64, Vec<S>)]) -> Vec<u8> {
        let build = |offsets: &[u32]| {
            let mut out = Vec::new();
            for ((id, t0, samples), off) in trafs.iter().zip(offsets) {
                let tfhd = full(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, &[&id.to_be_bytes()]);
                let tfdt = full(b"tfdt", 1, 0, &[&t0.to_be_bytes()]);
                let mut fields = Vec::new();
                for (d, f, c) in samples {
                    fields.extend_from_slice(&(d.len() as u32).to_be_bytes());
                    fields.extend_from_slice(&f.to_be_bytes());
                    fields.extend_from_slice(&c.to_be_bytes());
                }
                let tf = TRUN_DATA_OFFSET | TRUN_SIZE | TRUN_FLAGS | TRUN_CTO;
                let trun = full(
                    b"trun",
                    1,
                    tf,
                    &[
                        &(samples.len() as u32).to_be_bytes(),
                        &off.to_be_bytes(),
                        &fields,
                    ],
                );
                out.push(bx(b"traf", &[&tfhd, &tfdt, &trun]));
            }
            bx(b"moof", &[&out.concat()])
        };
        let moof_len = build(&vec![0; trafs.len()]).len() as u32;
        let mut offsets = Vec::new();
        let mut at = moof_len + 8;
        let mut mdat = Vec::new();
        for (_, _, samples) in trafs {
            offsets.push(at);
            for (d, _, _) in samples {
                mdat.extend_from_slice(d);
                at += d.len() as u32;
            }
        }
        [build(&offsets), bx(b"mdat", &[&mdat])].concat()
    }

    fn avcc_sample(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
            .collect()
    }

    fn run(d: &mut Fmp4ToMedia, data: &[u8]) -> Result<Vec<Media>> {
        let mut got = Vec::new();
        d.push(data, &mut |m| {
            got.push(m);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn init_and_fragments_become_media() {
        let mut d = Fmp4ToMedia::new();
        let got = run(&mut d, &init(SPS)).unwrap();
        assert_eq!(
            got,
            vec![
                Media::Tracks(vec![
                    Track {
                        codec: FC_CODEC_H264,
                        timebase: (1, 90_000)
                    },
                    Track {
                        codec: FC_CODEC_AAC,
                        timebase: (1, 48_000)
                    },
                ]),
                Media::Params {
                    track: 0,
                    data: [&[0, 0, 0, 1][..], SPS, &[0, 0, 0, 1], PPS].concat()
                },
                Media::Params {
                    track: 1,
                    data: ASC.to_vec()
                },
            ]
        );
        // The same init again (HLS re-sends it): nothing new. Other SPS: parameters only.
        assert!(run(&mut d, &init(SPS)).unwrap().is_empty());
        let sps2 = [SPS, &[0x77]].concat();
        assert!(matches!(
            &run(&mut d, &init(&sps2)).unwrap()[..],
            [Media::Params { track: 0, .. }]
        ));

        let idr = avcc_sample(&[&[0x65, 1, 2], &[0x06, 9]]);
        let p = avcc_sample(&[&[0x41, 3]]);
        // Video 0..0.1 s (3000 ticks per frame from trex), audio 0..0.064 s (1024 per frame).
        let seg = fragment(&[
            (
                1,
                90_000,
                vec![(&idr, 0x0200_0000, 6000), (&p, SAMPLE_NON_SYNC, -3000)],
            ),
            (2, 48_000, vec![(&[0xA1; 7], 0, 0), (&[0xA2; 5], 0, 0)]),
        ]);
        let got = run(&mut d, &seg).unwrap();
        let frames: Vec<(usize, i64, i64, bool, Vec<u8>)> = got
            .into_iter()
            .map(|m| match m {
                Media::Frame {
                    track,
                    pts,
                    dts,
                    keyframe,
                    data,
                    ..
                } => (track, pts, dts, keyframe, data),
                m => panic!("{m:?}"),
            })
            .collect();
        assert_eq!(
            frames,
            vec![
                // Decoding-time order across tracks: 1.0 s video, 1.0 s audio, 1.021 s audio, 1.033 s video.
                (
                    0,
                    96_000,
                    90_000,
                    true,
                    vec![0, 0, 0, 1, 0x65, 1, 2, 0, 0, 0, 1, 0x06, 9]
                ),
                (1, 48_000, 48_000, true, vec![0xA1; 7]),
                (1, 49_024, 49_024, true, vec![0xA2; 5]),
                (0, 90_000, 93_000, false, vec![0, 0, 0, 1, 0x41, 3]),
            ]
        );
        assert_eq!(d.errors, 0);
    }

    #[test]
    fn broken_fragments_are_skipped_and_the_next_one_read() {
        let mut d = Fmp4ToMedia::new();
        let seg = fragment(&[(1, 0, vec![(&avcc_sample(&[&[0x65, 1]]), 0, 0)])]);
        // Before any init segment: an error, not a guess.
        assert!(matches!(run(&mut d, &seg), Err(Error::Protocol(_))));
        run(&mut d, &init(SPS)).unwrap();
        // A sample size pointing past the mdat, then a good fragment in the same segment.
        let mut bad = seg.clone();
        let at = bad.windows(4).position(|w| w == b"trun").unwrap() + 16;
        bad[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        let got = run(&mut d, &[bad, seg.clone()].concat()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(d.errors, 1);
        assert!(
            d.last_error
                .as_deref()
                .unwrap()
                .contains("past the segment"),
            "{:?}",
            d.last_error
        );
        // A NAL length running past its sample: that sample is dropped and counted.
        let torn = fragment(&[(1, 0, vec![(&[0, 0, 0, 9, 0x65][..], 0, 0)])]);
        assert!(run(&mut d, &torn).unwrap().is_empty());
        assert_eq!(d.errors, 2);
        // A segment cut in the middle of its mdat: the cut fragment is skipped.
        assert!(run(&mut d, &seg[..seg.len() - 2]).unwrap().is_empty());
        assert_eq!(d.errors, 3);
        // A moov with nothing we carry is an error that says what was there.
        let moov = bx(b"moov", &[&trak(1, b"text", 1000, bx(b"tx3g", &[&[0; 8]]))]);
        let e = run(&mut Fmp4ToMedia::new(), &moov).unwrap_err().to_string();
        assert!(e.contains("text track"), "{e}");
    }

    #[test]
    fn defaults_offsets_and_missing_tfdt() {
        let mut d = Fmp4ToMedia::new();
        run(&mut d, &init(SPS)).unwrap();
        // Audio only, no tfdt, no data offset, sizes from tfhd's default, two truns: the
        // first starts at the moof (first traf), the second continues after it.
        let tfhd = full(
            b"tfhd",
            0,
            TFHD_DEFAULT_SIZE,
            &[&2u32.to_be_bytes(), &4u32.to_be_bytes()],
        );
        let trun = full(b"trun", 0, 0, &[&2u32.to_be_bytes()]);
        let traf = bx(b"traf", &[&tfhd, &trun, &trun]);
        let moof = bx(b"moof", &[&traf]);
        // Data starts at the moof: these samples are the moof's own first bytes.
        let got = run(&mut d, &moof).unwrap();
        let dts: Vec<i64> = got
            .iter()
            .map(|m| match m {
                Media::Frame { dts, .. } => *dts,
                _ => -1,
            })
            .collect();
        assert_eq!(dts, vec![0, 1024, 2048, 3072]);
        let Media::Frame { data, .. } = &got[0] else {
            panic!()
        };
        assert_eq!(data[..], moof[..4]);
        // The next fragment without tfdt goes on from there.
        let got = run(&mut d, &moof).unwrap();
        assert!(matches!(got[0], Media::Frame { dts: 4096, .. }));
        // tfhd's base data offset counts from the start of the segment.
        let tfhd = full(
            b"tfhd",
            0,
            TFHD_BASE_DATA_OFFSET | TFHD_DEFAULT_SIZE,
            &[
                &2u32.to_be_bytes(),
                &3u64.to_be_bytes(),
                &2u32.to_be_bytes(),
            ],
        );
        let trun = full(b"trun", 0, 0, &[&1u32.to_be_bytes()]);
        let moof = bx(b"moof", &[&bx(b"traf", &[&tfhd, &trun])]);
        let got = run(&mut d, &moof).unwrap();
        let Media::Frame { data, .. } = &got[0] else {
            panic!()
        };
        assert_eq!(data[..], moof[3..5]);
        // An absurd sample count is refused, not looped over.
        let trun = full(b"trun", 0, 0, &[&u32::MAX.to_be_bytes()]);
        let moof = bx(b"moof", &[&bx(b"traf", &[&tfhd, &trun])]);
        assert!(run(&mut d, &moof).unwrap().is_empty());
        assert!(d.last_error.as_deref().unwrap().contains("sample count"));
    }

    #[test]
    fn opus_mp3_and_dops() {
        let dops = bx(b"dOps", &[&[0, 2, 0x01, 0x38, 0, 0, 0xBB, 0x80, 0, 0, 0]]);
        let mp3 = audio_entry(b"mp4a", esds(0x6B, &[]));
        let moov = bx(
            b"moov",
            &[
                &trak(1, b"soun", 48_000, audio_entry(b"Opus", dops)),
                &trak(2, b"soun", 44_100, mp3),
            ],
        );
        let got = run(&mut Fmp4ToMedia::new(), &moov).unwrap();
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        assert_eq!(
            got,
            vec![
                Media::Tracks(vec![
                    Track {
                        codec: FC_CODEC_OPUS,
                        timebase: (1, 48_000)
                    },
                    Track {
                        codec: FC_CODEC_MP3,
                        timebase: (1, 44_100)
                    },
                ]),
                Media::Params {
                    track: 0,
                    data: head
                },
            ]
        );
    }

    #[test]
    fn a_fragmented_file_reads_like_its_segments() {
        let idr = avcc_sample(&[&[0x65, 1, 2]]);
        let frag = |t0: u64| {
            fragment(&[
                (1, t0, vec![(&idr, 0, 0)]),
                (2, t0, vec![(&[7u8; 9][..], 0, 0)]),
            ])
        };
        let file = [init(SPS), frag(0), frag(90_000)].concat();
        let mut via_push = run(&mut Fmp4ToMedia::new(), &file).unwrap();
        let mut via_file = Vec::new();
        read_bytes(&file, &mut |m| {
            via_file.push(m);
            Ok(())
        })
        .unwrap();
        assert_eq!(via_file.len(), 3 + 4);
        // push sorts a whole buffer by time; the file is read fragment by fragment.
        let key = |m: &Media| format!("{m:?}");
        via_push.sort_by_key(key);
        via_file.sort_by_key(key);
        assert_eq!(via_file, via_push);
        // Without a moov: a clear error.
        let e = read_bytes(&frag(0), &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("no moov"), "{e}");
    }

    /// A deterministic mutation fuzzer on stable: an init segment and fragments with bytes
    /// flipped, cut short or extended never panic (the `fmp4` fuzz target goes further).
    #[test]
    fn mutated_segments_never_panic() {
        let idr = avcc_sample(&[&[0x65, 1, 2]]);
        let seeds = [
            init(SPS),
            [
                init(SPS),
                fragment(&[
                    (1, 0, vec![(&idr, 0, 10)]),
                    (2, 0, vec![(&[1, 2, 3][..], 0, 0)]),
                ]),
            ]
            .concat(),
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut b = seeds[i % 2].clone();
            for _ in 0..1 + rnd() % 4 {
                let at = (rnd() as usize) % b.len();
                match rnd() % 3 {
                    0 => b[at] = rnd() as u8,
                    1 => b.truncate(at.max(1)),
                    _ => b.insert(at, rnd() as u8),
                }
            }
            let mut d = Fmp4ToMedia::new();
            let _ = run(&mut d, &b);
            let _ = run(&mut d, &b);
            let _ = read_bytes(&b, &mut |_| Ok(()));
        }
        // Found by the mp4_file fuzz target: a 64-bit box size that ends past u64::MAX.
        let mut huge = vec![0, 0, 0, 1, 0, 0, 0, 0xFF];
        huge.extend_from_slice(&[0xFF; 8]);
        huge.extend_from_slice(&[0, 0, 0, 9, b'm', b'o', b'o', b'v', 0]);
        assert!(read_bytes(&huge, &mut |_| Ok(())).is_err());
    }
}

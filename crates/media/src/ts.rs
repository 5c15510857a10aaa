//! MPEG transport stream (ISO/IEC 13818-1) demuxer and muxer, sans-IO: bytes in, events or bytes
//! out, no files, sockets or clocks.
//!
//! - [`Demuxer`] turns a TS byte stream, cut anywhere, into [`Event`]s: the stream list of the
//!   first program, codec parameters found in-band and access units with 90 kHz timestamps. It is
//!   meant for hostile input (UDP/SRT ingest): it never panics, resynchronises on lost sync bytes,
//!   reports continuity-counter gaps, and bounds its memory (a PES is capped at [`MAX_PES`]).
//! - [`Muxer`] writes access units of up to 32 streams into a single-program TS that ffmpeg plays,
//!   with PAT/PMT repeated before every video keyframe so a file cut anywhere still plays.
//! - [`h264_sps_info`], [`aac_config_info`] and [`adts_header`] parse and build the bits of codec
//!   configuration that importing and exporting need.
//!
//! Limits, by design or not yet done:
//! - Only the first program of the PAT is followed; 192-byte (M2TS) packets are not recognised;
//!   scrambled packets are dropped.
//! - MPEG audio: stream type 0x03 is first reported as [`Codec::Mp2`] and 0x04 as [`Codec::Mp3`];
//!   the layer of the first frame header then decides (layer I counts as Mp2), and a change is
//!   announced by a second [`Event::Streams`] before the stream's first unit.
//! - AAC only as ADTS (LATM, type 0x11, is [`Codec::Data`]); ADTS frames holding several raw
//!   data blocks are dropped with an error; the AudioSpecificConfig built from ADTS has no
//!   program config element (channel configuration 0).
//! - Opus units keep the TS control headers and no `OpusHead` is produced; E-AC-3, DTS, SCTE-35,
//!   teletext and the like are [`Codec::Data`].
//! - The muxer expects parameter sets in-band (as the demuxer delivers them); it writes no null
//!   packets (no constant bitrate) and a PCR only with each PES of the PCR stream.
//!
//! ```
//! use framecache_media::ts::{Codec, Demuxer, Event, MuxStream, Muxer};
//!
//! let mut mux = Muxer::new(&[MuxStream::new(Codec::Mp2)]);
//! let ts = mux.mux(0, &[0xFF, 0xFD, 0x94, 0x00], 90_000, 90_000, true);
//! let mut demux = Demuxer::new();
//! let mut events = demux.push(&ts);
//! events.extend(demux.flush());
//! assert!(events.iter().any(|e| matches!(e, Event::Unit(u) if u.pts == Some(90_000))));
//! ```

use std::collections::HashMap;

use crate::codec::AAC_RATES;
pub use crate::codec::{
    aac_config_info, adts_header, crc32_mpeg2, h264_sps_info, nal_units, H264Info,
};
use crate::media::{Media, MediaOut, Track};
use crate::time::Unwrapper;
use framecache_shm::packet::FC_NOPTS;
use framecache_shm::Result;
/// Size of one transport stream packet.
pub const TS_PACKET: usize = 188;
/// Largest PES the demuxer assembles; a bigger one is dropped with an [`Event::Error`].
pub const MAX_PES: usize = 8 << 20;
/// PID of the PMT written by the [`Muxer`].
pub const MUX_PMT_PID: u16 = 0x1000;
/// PID of the first elementary stream written by the [`Muxer`] (the others follow).
pub const MUX_FIRST_PID: u16 = 0x100;

const SYNC: u8 = 0x47;
const NULL_PID: u16 = 0x1FFF;
/// All PES buffers together: with many streams declared by a hostile PMT, the per-PES cap alone
/// would still allow gigabytes.
const MAX_BUFFERED: usize = 32 << 20;
/// Streams followed per program (the packet ring carries 8; leave room for data streams).
const MAX_STREAMS: usize = 32;
/// 3 header bytes + the largest section_length PAT and PMT may have (1021).
const MAX_SECTION: usize = 1024;
/// PTS/DTS are 33-bit counters.
#[cfg(test)]
const TS_WRAP: i64 = 1 << 33;
/// Parameter-set NAL units bigger than this are not kept (real ones are a few hundred bytes).
const MAX_PARAM_NAL: usize = 64 << 10;
/// Streams the muxer writes (PIDs stay below the PMT PID and the PMT fits one section).
const MAX_MUX_STREAMS: usize = 32;
/// PCR runs this far (90 kHz) behind the DTS, giving decoders 0.1 s of buffering.
const PCR_DELAY: i64 = 9000;
/// Without video, PAT/PMT are repeated at least this often (90 kHz).
const PSI_INTERVAL: i64 = 45_000;

/// A codec the demuxer can report and the muxer can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC video (stream type 0x1B), Annex-B access units.
    H264,
    /// H.265 / HEVC video (stream type 0x24), Annex-B access units.
    Hevc,
    /// AAC audio carried as ADTS (stream type 0x0F); units are raw AAC frames.
    Aac,
    /// MPEG-1/2 audio layer II (or layer I), stream types 0x03/0x04.
    Mp2,
    /// MPEG-1/2 audio layer III, stream types 0x03/0x04.
    Mp3,
    /// AC-3 (stream type 0x81, or 0x06 with an AC-3 descriptor or registration).
    Ac3,
    /// Opus (stream type 0x06 with registration 'Opus'); units keep the TS control headers.
    Opus,
    /// Anything else; units are delivered as PES payloads.
    Data,
}

impl Codec {
    /// Name as ffmpeg spells it (`h264`, `hevc`, `aac`, `mp2`, `mp3`, `ac3`, `opus`, `data`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
            Codec::Aac => "aac",
            Codec::Mp2 => "mp2",
            Codec::Mp3 => "mp3",
            Codec::Ac3 => "ac3",
            Codec::Opus => "opus",
            Codec::Data => "data",
        }
    }

    /// The packet ring's `FC_CODEC_*` code of this codec.
    pub fn fc_codec(self) -> u32 {
        use framecache_shm::packet::*;
        match self {
            Codec::H264 => FC_CODEC_H264,
            Codec::Hevc => FC_CODEC_HEVC,
            Codec::Aac => FC_CODEC_AAC,
            Codec::Opus => FC_CODEC_OPUS,
            Codec::Mp2 => FC_CODEC_MP2,
            Codec::Mp3 => FC_CODEC_MP3,
            Codec::Ac3 => FC_CODEC_AC3,
            Codec::Data => FC_CODEC_DATA,
        }
    }

    /// The codec of an `FC_CODEC_*` code (unknown codes are [`Codec::Data`]).
    pub fn from_fc_codec(code: u32) -> Codec {
        use framecache_shm::packet::*;
        match code {
            FC_CODEC_H264 => Codec::H264,
            FC_CODEC_HEVC => Codec::Hevc,
            FC_CODEC_AAC => Codec::Aac,
            FC_CODEC_OPUS => Codec::Opus,
            FC_CODEC_MP2 => Codec::Mp2,
            FC_CODEC_MP3 => Codec::Mp3,
            FC_CODEC_AC3 => Codec::Ac3,
            _ => Codec::Data,
        }
    }

    /// True for H.264 and HEVC.
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::Hevc)
    }

    /// True for the audio codecs.
    pub fn is_audio(self) -> bool {
        matches!(
            self,
            Codec::Aac | Codec::Mp2 | Codec::Mp3 | Codec::Ac3 | Codec::Opus
        )
    }
}

/// One elementary stream of the followed program, as declared by its PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// PID carrying the stream.
    pub pid: u16,
    /// `stream_type` from the PMT.
    pub stream_type: u8,
    /// Codec derived from the stream type, descriptors and (MPEG audio) the frame headers.
    pub codec: Codec,
}

/// One access unit (video frame, audio frame, or data PES).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// PID it arrived on.
    pub pid: u16,
    /// Codec of its stream.
    pub codec: Codec,
    /// Presentation time, 90 kHz, unwrapped across the 33-bit wrap (the first one seen is taken
    /// as is). AAC frames after the first of a PES get the PES PTS plus their offset.
    pub pts: Option<i64>,
    /// Decoding time, 90 kHz; equal to `pts` when the PES carries no DTS.
    pub dts: Option<i64>,
    /// H.264: contains an IDR slice; HEVC: contains an IRAP picture; audio and data: always.
    pub keyframe: bool,
    /// H.264/HEVC: the Annex-B access unit as carried (start codes and in-band parameter sets
    /// kept). AAC: one raw frame without its ADTS header. Others: the PES payload as is.
    pub data: Vec<u8>,
    /// Packets were lost (continuity-counter gap, transport error) or the stream signalled a
    /// discontinuity before or inside this unit.
    pub discontinuity: bool,
}

/// What the [`Demuxer`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The streams of the followed program, after its first PMT and whenever the list changes.
    Streams(Vec<StreamInfo>),
    /// Codec parameters found in-band, when first seen and whenever they change. H.264: the
    /// Annex-B concatenation (`00 00 00 01` + NAL) of the SPS and PPS last seen; HEVC: VPS, SPS
    /// and PPS; AAC: the 2-byte AudioSpecificConfig built from the ADTS header. Comes before the
    /// unit that carried them.
    Params {
        /// PID of the stream.
        pid: u16,
        /// Codec of the stream.
        codec: Codec,
        /// The parameters, as described above.
        data: Vec<u8>,
    },
    /// An access unit.
    Unit(AccessUnit),
    /// A recoverable problem (lost sync, bad header, oversized PES, CC gap...); demuxing goes on.
    Error(String),
}

// ---------------------------------------------------------------------------------------------
// Demuxer
// ---------------------------------------------------------------------------------------------

/// Sans-IO TS demuxer: feed bytes with [`push`](Demuxer::push), cut anywhere, and call
/// [`flush`](Demuxer::flush) at the end of the input.
///
/// It follows the first program of the PAT. Events do not depend on how the input is cut.
pub struct Demuxer {
    /// Bytes of an incomplete packet, or a sync candidate waiting for confirmation.
    buf: Vec<u8>,
    synced: bool,
    /// Bytes dropped while hunting for sync, reported once sync is found again.
    skipped: u64,
    pat: Psi,
    pmt: Psi,
    pmt_pid: Option<u16>,
    program: u16,
    streams: Vec<Es>,
    announced: Option<Vec<StreamInfo>>,
    clock: Unwrapper,
}

impl Default for Demuxer {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
struct Psi {
    cc: Option<u8>,
    buf: Vec<u8>,
    active: bool,
    /// Last section processed: PSI repeats every ~100 ms and need not be parsed again.
    last: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PesState {
    /// No PES open: payload without PUSI is ignored (joined mid-PES, or dropped one).
    Idle,
    /// Assembling.
    Open,
    /// Completed by its length field; waiting for the next PUSI.
    Done,
}

struct Es {
    info: StreamInfo,
    cc: Option<u8>,
    scrambled: bool,
    state: PesState,
    pes: Vec<u8>,
    /// Discontinuity that applies to the PES being assembled.
    pes_disc: bool,
    /// Discontinuity that applies to the next PES.
    disc: bool,
    // Video parameter sets, last seen.
    vps: Vec<Vec<u8>>,
    sps: Vec<Vec<u8>>,
    pps: Vec<Vec<u8>>,
    params: Vec<u8>,
    // AAC: an ADTS frame cut by the end of its PES, with the timestamps it started with.
    carry: Vec<u8>,
    carry_pts: Option<i64>,
    carry_dts: Option<i64>,
    next_pts: Option<i64>,
    next_dts: Option<i64>,
    asc: Option<[u8; 2]>,
}

impl Es {
    fn new(info: StreamInfo) -> Self {
        Es {
            info,
            cc: None,
            scrambled: false,
            state: PesState::Idle,
            pes: Vec::new(),
            pes_disc: false,
            disc: false,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
            params: Vec::new(),
            carry: Vec::new(),
            carry_pts: None,
            carry_dts: None,
            next_pts: None,
            next_dts: None,
            asc: None,
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    Pat,
    Pmt,
    Es(usize),
}

impl Demuxer {
    /// A demuxer that has seen nothing yet.
    pub fn new() -> Self {
        Demuxer {
            buf: Vec::new(),
            synced: false,
            skipped: 0,
            pat: Psi::default(),
            pmt: Psi::default(),
            pmt_pid: None,
            program: 0,
            streams: Vec::new(),
            announced: None,
            clock: Unwrapper::new(33),
        }
    }

    /// The streams of the followed program as currently known.
    pub fn streams(&self) -> Vec<StreamInfo> {
        self.streams.iter().map(|s| s.info.clone()).collect()
    }

    /// Feeds bytes, cut at any boundary; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut ev = Vec::new();
        if self.buf.is_empty() {
            // Common case (whole packets): no copy of the input.
            let used = self.consume(bytes, false, &mut ev);
            self.buf.extend_from_slice(&bytes[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(bytes);
            let used = self.consume(&buf, false, &mut ev);
            buf.drain(..used);
            self.buf = buf;
        }
        ev
    }

    /// Ends the input: processes what is buffered and emits the pending PES of every stream
    /// (a PES without length field only ends at the next one). The demuxer can be fed again
    /// afterwards; it then hunts for sync anew but keeps the program it knows.
    pub fn flush(&mut self) -> Vec<Event> {
        let mut ev = Vec::new();
        let buf = std::mem::take(&mut self.buf);
        let used = self.consume(&buf, true, &mut ev);
        let left = (buf.len() - used) as u64 + self.skipped;
        if left > 0 {
            ev.push(Event::Error(format!(
                "{left} bytes at the end of the input are not a whole packet"
            )));
        }
        self.skipped = 0;
        self.synced = false;
        self.pat.active = false;
        self.pmt.active = false;
        for i in 0..self.streams.len() {
            self.finish(i, &mut ev);
            let es = &mut self.streams[i];
            es.state = PesState::Idle;
            if !es.carry.is_empty() {
                ev.push(Event::Error(format!(
                    "PID {:#06x}: incomplete ADTS frame of {} bytes at the end dropped",
                    es.info.pid,
                    es.carry.len()
                )));
                es.carry.clear();
            }
        }
        ev
    }

    /// Processes whole packets of `data`, hunting for sync where needed; returns how many bytes
    /// were used (the rest waits for more input).
    fn consume(&mut self, data: &[u8], at_end: bool, ev: &mut Vec<Event>) -> usize {
        let mut pos = 0;
        loop {
            if self.synced {
                if data.len() - pos < TS_PACKET {
                    return pos;
                }
                if data[pos] == SYNC {
                    self.packet(&data[pos..pos + TS_PACKET], ev);
                    pos += TS_PACKET;
                    continue;
                }
                self.synced = false;
            }
            match data[pos..].iter().position(|&b| b == SYNC) {
                None => {
                    self.skipped += (data.len() - pos) as u64;
                    return data.len();
                }
                Some(off) => {
                    self.skipped += off as u64;
                    pos += off;
                }
            }
            // A 0x47 is only trusted when the next packet starts with one too: payload bytes
            // are 0x47 often enough.
            let next = pos + TS_PACKET;
            if next < data.len() {
                if data[next] == SYNC {
                    self.resynced(ev);
                } else {
                    pos += 1;
                    self.skipped += 1;
                }
            } else if at_end && next == data.len() {
                self.resynced(ev);
            } else {
                return pos;
            }
        }
    }

    fn resynced(&mut self, ev: &mut Vec<Event>) {
        self.synced = true;
        if self.skipped > 0 {
            ev.push(Event::Error(format!(
                "lost sync: skipped {} bytes",
                self.skipped
            )));
            self.skipped = 0;
        }
    }

    fn target(&self, pid: u16) -> Option<Target> {
        if pid == 0 {
            Some(Target::Pat)
        } else if self.pmt_pid == Some(pid) {
            Some(Target::Pmt)
        } else {
            self.streams
                .iter()
                .position(|s| s.info.pid == pid)
                .map(Target::Es)
        }
    }

    /// Marks data lost on `target`.
    fn lost(&mut self, target: Target, pusi: bool) {
        match target {
            Target::Pat => self.pat.active = false,
            Target::Pmt => self.pmt.active = false,
            Target::Es(i) => {
                let es = &mut self.streams[i];
                if es.state == PesState::Open {
                    es.pes_disc = true;
                }
                // A gap before a PUSI, or outside a PES, lies before the next PES.
                if pusi || es.state != PesState::Open {
                    es.disc = true;
                }
            }
        }
    }

    /// One 188-byte packet starting with the sync byte.
    fn packet(&mut self, p: &[u8], ev: &mut Vec<Event>) {
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        if pid == NULL_PID {
            return;
        }
        let Some(target) = self.target(pid) else {
            return;
        };
        let pusi = p[1] & 0x40 != 0;
        if p[1] & 0x80 != 0 {
            ev.push(Event::Error(format!(
                "PID {pid:#06x}: transport_error_indicator set, packet dropped"
            )));
            self.lost(target, false);
            return;
        }
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0F;
        if afc == 0 {
            ev.push(Event::Error(format!(
                "PID {pid:#06x}: reserved adaptation_field_control, packet dropped"
            )));
            self.lost(target, false);
            return;
        }
        let mut start = 4;
        let mut disc_flag = false;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            let max = if afc == 3 { 182 } else { 183 };
            if len > max {
                ev.push(Event::Error(format!(
                    "PID {pid:#06x}: adaptation field length {len} exceeds the packet, dropped"
                )));
                self.lost(target, false);
                return;
            }
            disc_flag = len > 0 && p[5] & 0x80 != 0;
            start = 5 + len;
        }
        let has_payload = afc & 1 != 0;

        let slot = match target {
            Target::Pat => &mut self.pat.cc,
            Target::Pmt => &mut self.pmt.cc,
            Target::Es(i) => &mut self.streams[i].cc,
        };
        if disc_flag {
            // The counter may restart anywhere after a signalled discontinuity.
            *slot = None;
        }
        let mut gap = false;
        if has_payload {
            if let Some(last) = *slot {
                if cc == last {
                    // A duplicate packet (allowed once by the standard).
                    return;
                }
                let expected = (last + 1) & 0x0F;
                if cc != expected {
                    gap = true;
                    ev.push(Event::Error(format!(
                        "PID {pid:#06x}: continuity counter jump (expected {expected}, got {cc})"
                    )));
                }
            }
            *slot = Some(cc);
        }
        if gap || disc_flag {
            self.lost(target, pusi);
        }
        if !has_payload {
            return;
        }
        let scrambled = p[3] >> 6 != 0;
        let payload = &p[start..];
        match target {
            Target::Pat | Target::Pmt => {
                if scrambled {
                    return;
                }
                let is_pat = matches!(target, Target::Pat);
                let psi = if is_pat { &mut self.pat } else { &mut self.pmt };
                let sections = collect_sections(psi, pid, pusi, payload, ev);
                for s in sections {
                    if is_pat {
                        self.on_pat(&s, ev);
                    } else {
                        self.on_pmt(&s, ev);
                    }
                }
            }
            Target::Es(i) => {
                let es = &mut self.streams[i];
                if scrambled {
                    if !es.scrambled {
                        ev.push(Event::Error(format!(
                            "PID {pid:#06x}: scrambled, payload dropped"
                        )));
                        es.scrambled = true;
                    }
                    es.state = PesState::Idle;
                    es.disc = true;
                    return;
                }
                es.scrambled = false;
                self.es_payload(i, pusi, payload, ev);
            }
        }
    }

    fn es_payload(&mut self, i: usize, pusi: bool, payload: &[u8], ev: &mut Vec<Event>) {
        if pusi {
            self.finish(i, ev);
            let es = &mut self.streams[i];
            es.pes.clear();
            es.state = PesState::Open;
            es.pes_disc = std::mem::take(&mut es.disc);
        } else {
            let es = &mut self.streams[i];
            match es.state {
                PesState::Open => {}
                PesState::Idle => return,
                PesState::Done => {
                    ev.push(Event::Error(format!(
                        "PID {:#06x}: {} bytes after the end of a PES ignored",
                        es.info.pid,
                        payload.len()
                    )));
                    es.state = PesState::Idle;
                    return;
                }
            }
        }
        let buffered: usize = self.streams.iter().map(|s| s.pes.len()).sum();
        let es = &mut self.streams[i];
        if es.pes.len() + payload.len() > MAX_PES || buffered + payload.len() > MAX_BUFFERED {
            ev.push(Event::Error(format!(
                "PID {:#06x}: PES larger than {} bytes dropped",
                es.info.pid,
                if es.pes.len() + payload.len() > MAX_PES {
                    MAX_PES
                } else {
                    MAX_BUFFERED
                }
            )));
            es.pes = Vec::new();
            es.state = PesState::Idle;
            es.disc = true;
            return;
        }
        es.pes.extend_from_slice(payload);
        if es.pes.len() >= 6 {
            let declared = usize::from(u16::from_be_bytes([es.pes[4], es.pes[5]]));
            // Bounded PES (audio, data) are emitted as soon as complete: no wait for the next.
            if declared > 0 && es.pes.len() >= 6 + declared {
                self.finish(i, ev);
                self.streams[i].state = PesState::Done;
            }
        }
    }

    /// Emits the open PES of stream `i`, if any.
    fn finish(&mut self, i: usize, ev: &mut Vec<Event>) {
        if self.streams[i].state != PesState::Open {
            return;
        }
        let at = ev.len();
        if finish_pes(&mut self.streams[i], &mut self.clock, ev) {
            // MPEG audio turned out to be another layer: tell before its first unit.
            let infos = self.streams();
            self.announced = Some(infos.clone());
            ev.insert(at, Event::Streams(infos));
        }
    }

    fn on_pat(&mut self, s: &[u8], ev: &mut Vec<Event>) {
        if s[0] != 0x00 || !section_ok(s, 0, ev) {
            return;
        }
        if s == self.pat.last.as_slice() {
            return;
        }
        self.pat.last = s.to_vec();
        let body = &s[8..s.len() - 4];
        let program = body.chunks_exact(4).find_map(|e| {
            let number = u16::from_be_bytes([e[0], e[1]]);
            let pid = (u16::from(e[2] & 0x1F) << 8) | u16::from(e[3]);
            (number != 0).then_some((number, pid))
        });
        match program {
            None => ev.push(Event::Error("PAT lists no program".into())),
            Some((_, pid)) if pid < 0x10 || pid == NULL_PID => ev.push(Event::Error(format!(
                "PAT points to the reserved PID {pid:#06x} for its PMT"
            ))),
            Some((number, pid)) => {
                if self.pmt_pid != Some(pid) || self.program != number {
                    self.pmt_pid = Some(pid);
                    self.program = number;
                    self.pmt = Psi::default();
                }
            }
        }
    }

    fn on_pmt(&mut self, s: &[u8], ev: &mut Vec<Event>) {
        let pid = self.pmt_pid.unwrap_or(0);
        if s[0] != 0x02 || !section_ok(s, pid, ev) {
            return;
        }
        if u16::from_be_bytes([s[3], s[4]]) != self.program || s == self.pmt.last.as_slice() {
            return;
        }
        // Remembered even when broken, so a repeated bad PMT is reported once.
        self.pmt.last = s.to_vec();
        let end = s.len() - 4;
        let info_len = (usize::from(s[10] & 0x0F) << 8) | usize::from(s[11]);
        let mut pos = 12 + info_len;
        if pos > end {
            ev.push(Event::Error(format!(
                "PMT: program_info_length {info_len} runs past the section"
            )));
            return;
        }
        let mut list: Vec<StreamInfo> = Vec::new();
        while pos + 5 <= end {
            let stream_type = s[pos];
            let es_pid = (u16::from(s[pos + 1] & 0x1F) << 8) | u16::from(s[pos + 2]);
            let info_len = (usize::from(s[pos + 3] & 0x0F) << 8) | usize::from(s[pos + 4]);
            let d_end = pos + 5 + info_len;
            if d_end > end {
                ev.push(Event::Error(format!(
                    "PMT: ES_info_length {info_len} of PID {es_pid:#06x} runs past the section"
                )));
                break;
            }
            let desc = &s[pos + 5..d_end];
            pos = d_end;
            if es_pid < 0x10
                || es_pid == NULL_PID
                || Some(es_pid) == self.pmt_pid
                || list.iter().any(|l| l.pid == es_pid)
            {
                ev.push(Event::Error(format!(
                    "PMT: stream on invalid or repeated PID {es_pid:#06x} ignored"
                )));
                continue;
            }
            if list.len() == MAX_STREAMS {
                ev.push(Event::Error(format!(
                    "PMT: more than {MAX_STREAMS} streams, the rest ignored"
                )));
                break;
            }
            list.push(StreamInfo {
                pid: es_pid,
                stream_type,
                codec: codec_for(stream_type, desc),
            });
        }
        self.set_streams(list, ev);
    }

    fn set_streams(&mut self, list: Vec<StreamInfo>, ev: &mut Vec<Event>) {
        let mut old: Vec<Option<Es>> = std::mem::take(&mut self.streams)
            .into_iter()
            .map(Some)
            .collect();
        let mut new = Vec::with_capacity(list.len());
        for info in list {
            // A stream that stays keeps its state (open PES, parameters, refined codec).
            let kept = old.iter_mut().find_map(|o| {
                if o.as_ref().is_some_and(|e| {
                    e.info.pid == info.pid && e.info.stream_type == info.stream_type
                }) {
                    o.take()
                } else {
                    None
                }
            });
            match kept {
                Some(mut es) => {
                    // MPEG audio keeps the layer found in its frames; others follow the PMT.
                    if !matches!(info.stream_type, 0x03 | 0x04) {
                        es.info.codec = info.codec;
                    }
                    new.push(es);
                }
                None => new.push(Es::new(info)),
            }
        }
        for mut es in old.into_iter().flatten() {
            if es.state == PesState::Open {
                finish_pes(&mut es, &mut self.clock, ev);
            }
        }
        self.streams = new;
        let infos = self.streams();
        if self.announced.as_ref() != Some(&infos) {
            self.announced = Some(infos.clone());
            ev.push(Event::Streams(infos));
        }
    }
}

/// Assembles PSI sections from the payload of one packet; returns the completed ones.
fn collect_sections(
    psi: &mut Psi,
    pid: u16,
    pusi: bool,
    payload: &[u8],
    ev: &mut Vec<Event>,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if !pusi {
        if psi.active {
            psi.buf.extend_from_slice(payload);
            match section_total(&psi.buf) {
                None => {}
                Some(total) if total > MAX_SECTION => {
                    ev.push(Event::Error(format!(
                        "PID {pid:#06x}: section_length {} too large",
                        total - 3
                    )));
                    psi.active = false;
                }
                Some(total) if psi.buf.len() >= total => {
                    out.push(psi.buf[..total].to_vec());
                    psi.active = false;
                }
                Some(_) => {}
            }
        }
        return out;
    }
    let Some((&pointer, rest)) = payload.split_first() else {
        return out;
    };
    let pointer = usize::from(pointer);
    if pointer > rest.len() {
        ev.push(Event::Error(format!(
            "PID {pid:#06x}: pointer_field {pointer} beyond the packet"
        )));
        psi.active = false;
        return out;
    }
    if psi.active {
        psi.buf.extend_from_slice(&rest[..pointer]);
        match section_total(&psi.buf) {
            Some(total) if total <= MAX_SECTION && psi.buf.len() >= total => {
                out.push(psi.buf[..total].to_vec());
            }
            _ => ev.push(Event::Error(format!(
                "PID {pid:#06x}: section truncated by the next one"
            ))),
        }
        psi.active = false;
    }
    let mut rest = &rest[pointer..];
    while let Some(&table_id) = rest.first() {
        if table_id == 0xFF {
            break; // stuffing
        }
        match section_total(rest) {
            None => {
                psi.buf.clear();
                psi.buf.extend_from_slice(rest);
                psi.active = true;
                break;
            }
            Some(total) if total > MAX_SECTION => {
                ev.push(Event::Error(format!(
                    "PID {pid:#06x}: section_length {} too large",
                    total - 3
                )));
                break;
            }
            Some(total) if rest.len() >= total => {
                out.push(rest[..total].to_vec());
                rest = &rest[total..];
            }
            Some(_) => {
                psi.buf.clear();
                psi.buf.extend_from_slice(rest);
                psi.active = true;
                break;
            }
        }
    }
    out
}

/// Whole length of the section starting `b`, once its 3-byte header is there.
fn section_total(b: &[u8]) -> Option<usize> {
    (b.len() >= 3).then(|| 3 + ((usize::from(b[1] & 0x0F) << 8) | usize::from(b[2])))
}

/// Checks a long-form section: syntax flag, minimum length, CRC, current_next_indicator.
fn section_ok(s: &[u8], pid: u16, ev: &mut Vec<Event>) -> bool {
    if s.len() < 12 || s[1] & 0x80 == 0 {
        ev.push(Event::Error(format!(
            "PID {pid:#06x}: malformed section (table {:#04x})",
            s[0]
        )));
        return false;
    }
    if crc32_mpeg2(s) != 0 {
        ev.push(Event::Error(format!(
            "PID {pid:#06x}: CRC mismatch in table {:#04x}",
            s[0]
        )));
        return false;
    }
    // A section for later use (current_next_indicator 0) does not apply yet.
    s[5] & 1 == 1
}

fn descriptors(mut d: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if d.len() < 2 {
            return None;
        }
        let (tag, len) = (d[0], usize::from(d[1]));
        let body = d.get(2..2 + len)?;
        d = &d[2 + len..];
        Some((tag, body))
    })
}

fn codec_for(stream_type: u8, desc: &[u8]) -> Codec {
    match stream_type {
        0x1B => Codec::H264,
        0x24 => Codec::Hevc,
        0x0F => Codec::Aac,
        0x03 => Codec::Mp2,
        0x04 => Codec::Mp3,
        0x81 => Codec::Ac3,
        0x06 => descriptors(desc)
            .find_map(|(tag, body)| match tag {
                0x05 if body.starts_with(b"Opus") => Some(Codec::Opus),
                0x05 if body.starts_with(b"AC-3") => Some(Codec::Ac3),
                0x6A => Some(Codec::Ac3),
                _ => None,
            })
            .unwrap_or(Codec::Data),
        _ => Codec::Data,
    }
}

struct Pes<'a> {
    pts: Option<i64>,
    dts: Option<i64>,
    payload: &'a [u8],
    /// The PES ended before its length field said.
    short: Option<usize>,
    padding: bool,
}

fn read_ts(b: &[u8]) -> i64 {
    (i64::from((b[0] >> 1) & 7) << 30)
        | (i64::from(b[1]) << 22)
        | (i64::from(b[2] >> 1) << 15)
        | (i64::from(b[3]) << 7)
        | i64::from(b[4] >> 1)
}

fn parse_pes(pes: &[u8]) -> Result<Pes<'_>, String> {
    if pes.len() < 6 {
        return Err(format!("PES of {} bytes has no header", pes.len()));
    }
    if pes[..3] != [0, 0, 1] {
        return Err("bad PES start code".into());
    }
    let declared = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
    let (end, short) = match declared {
        0 => (pes.len(), None),
        n if 6 + n <= pes.len() => (6 + n, None),
        n => (pes.len(), Some(n)),
    };
    let sid = pes[3];
    // Streams without the optional header (program_stream_map, padding, private_stream_2...).
    if matches!(sid, 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF) {
        return Ok(Pes {
            pts: None,
            dts: None,
            payload: &pes[6..end],
            short,
            padding: sid == 0xBE,
        });
    }
    if end < 9 {
        return Err("PES header truncated".into());
    }
    if pes[6] & 0xC0 != 0x80 {
        return Err("PES header is not MPEG-2".into());
    }
    let flags = pes[7] >> 6;
    let header_len = usize::from(pes[8]);
    let start = 9 + header_len;
    if start > end {
        return Err(format!("PES header length {header_len} runs past the PES"));
    }
    let mut pts = None;
    let mut dts = None;
    if flags & 2 != 0 {
        if header_len < 5 {
            return Err("PES header too short for its PTS".into());
        }
        pts = Some(read_ts(&pes[9..14]));
        if flags == 3 {
            if header_len < 10 {
                return Err("PES header too short for its DTS".into());
            }
            dts = Some(read_ts(&pes[14..19]));
        }
    }
    Ok(Pes {
        pts,
        dts,
        payload: &pes[start..end],
        short,
        padding: false,
    })
}

/// Parses the PES assembled in `es` and emits its units. Returns true when the stream's codec
/// changed (MPEG audio layer found in the frame headers).
fn finish_pes(es: &mut Es, clock: &mut Unwrapper, ev: &mut Vec<Event>) -> bool {
    es.state = PesState::Idle;
    let disc = std::mem::take(&mut es.pes_disc);
    let pes = std::mem::take(&mut es.pes);
    let pid = es.info.pid;
    let mut changed = false;
    match parse_pes(&pes) {
        Err(e) => {
            ev.push(Event::Error(format!("PID {pid:#06x}: {e}, PES dropped")));
            es.disc = true;
        }
        Ok(p) => {
            if let Some(n) = p.short {
                ev.push(Event::Error(format!(
                    "PID {pid:#06x}: PES shorter than its length field ({} of {n} bytes)",
                    pes.len() - 6
                )));
            }
            let pts = p.pts.map(|t| clock.unwrap(t));
            let dts = p.dts.map(|t| clock.unwrap(t)).or(pts);
            if p.padding || (p.payload.is_empty() && es.carry.is_empty()) {
                // nothing to deliver
            } else {
                match es.info.codec {
                    Codec::H264 | Codec::Hevc => video_unit(es, p.payload, pts, dts, disc, ev),
                    Codec::Aac => aac_units(es, p.payload, pts, dts, disc, ev),
                    codec => {
                        let mut codec = codec;
                        if matches!(es.info.stream_type, 0x03 | 0x04) {
                            if let Some(c) = mpeg_audio_codec(p.payload) {
                                if c != codec {
                                    es.info.codec = c;
                                    codec = c;
                                    changed = true;
                                }
                            }
                        }
                        ev.push(Event::Unit(AccessUnit {
                            pid,
                            codec,
                            pts,
                            dts,
                            keyframe: true,
                            data: p.payload.to_vec(),
                            discontinuity: disc,
                        }));
                    }
                }
            }
        }
    }
    // Keep the buffer for the next PES, unless a huge one made it big.
    es.pes = pes;
    es.pes.clear();
    if es.pes.capacity() > 1 << 20 {
        es.pes = Vec::new();
    }
    changed
}

fn annexb(nals: &[&Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}

fn video_unit(
    es: &mut Es,
    data: &[u8],
    pts: Option<i64>,
    dts: Option<i64>,
    disc: bool,
    ev: &mut Vec<Event>,
) {
    let hevc = es.info.codec == Codec::Hevc;
    let mut keyframe = false;
    let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
    for nal in nal_units(data) {
        let Some(&h) = nal.first() else { continue };
        let kind = if hevc { (h >> 1) & 0x3F } else { h & 0x1F };
        let small = nal.len() <= MAX_PARAM_NAL;
        match (hevc, kind) {
            (false, 5) | (true, 16..=21) => keyframe = true,
            (true, 32) if small => vps.push(nal.to_vec()),
            (false, 7) | (true, 33) if small => sps.push(nal.to_vec()),
            (false, 8) | (true, 34) if small => pps.push(nal.to_vec()),
            _ => {}
        }
    }
    if !(vps.is_empty() && sps.is_empty() && pps.is_empty()) {
        if !vps.is_empty() {
            es.vps = vps;
        }
        if !sps.is_empty() {
            es.sps = sps;
        }
        if !pps.is_empty() {
            es.pps = pps;
        }
        let complete = !es.sps.is_empty() && !es.pps.is_empty() && (!hevc || !es.vps.is_empty());
        if complete {
            let all: Vec<&Vec<u8>> = es.vps.iter().chain(&es.sps).chain(&es.pps).collect();
            let params = annexb(&all);
            if params != es.params {
                es.params = params.clone();
                ev.push(Event::Params {
                    pid: es.info.pid,
                    codec: es.info.codec,
                    data: params,
                });
            }
        }
    }
    ev.push(Event::Unit(AccessUnit {
        pid: es.info.pid,
        codec: es.info.codec,
        pts,
        dts,
        keyframe,
        data: data.to_vec(),
        discontinuity: disc,
    }));
}

struct Adts {
    profile: u8,
    rate_index: u8,
    channels: u8,
    frame_len: usize,
    header_len: usize,
    raw_blocks: u8,
}

fn adts_sync(b: &[u8]) -> bool {
    // 12-bit sync word and layer 0; the ID bit (MPEG-2/4) may be either.
    b.len() >= 2 && b[0] == 0xFF && b[1] & 0xF6 == 0xF0
}

fn parse_adts(b: &[u8]) -> Option<Adts> {
    if b.len() < 7 || !adts_sync(b) {
        return None;
    }
    let header_len = if b[1] & 1 == 1 { 7 } else { 9 };
    let rate_index = (b[2] >> 2) & 0x0F;
    let frame_len =
        (usize::from(b[3] & 3) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    if usize::from(rate_index) >= AAC_RATES.len() || frame_len <= header_len {
        return None;
    }
    Some(Adts {
        profile: b[2] >> 6,
        rate_index,
        channels: ((b[2] & 1) << 2) | (b[3] >> 6),
        frame_len,
        header_len,
        raw_blocks: b[6] & 3,
    })
}

/// Offset in 90 kHz ticks of sample `samples` at `rate` Hz, rounded.
fn sample_ticks(samples: i64, rate: u32) -> i64 {
    let rate = i64::from(rate.max(1));
    (samples * 90_000 + rate / 2) / rate
}

/// Splits a PES of ADTS frames into raw AAC frames. A frame cut by the end of the PES is kept and
/// completed from the next one (other muxers do that; ffmpeg does not).
fn aac_units(
    es: &mut Es,
    payload: &[u8],
    pts: Option<i64>,
    dts: Option<i64>,
    disc: bool,
    ev: &mut Vec<Event>,
) {
    let pid = es.info.pid;
    let mut disc = disc;
    let mut pos = 0;
    if !es.carry.is_empty() && (disc || adts_sync(payload)) {
        // Lost packets, or the new PES starts a frame: the carried part can't be completed.
        ev.push(Event::Error(format!(
            "PID {pid:#06x}: incomplete ADTS frame of {} bytes dropped",
            es.carry.len()
        )));
        es.carry.clear();
    }
    if !es.carry.is_empty() {
        if es.carry.len() < 7 {
            let need = (7 - es.carry.len()).min(payload.len());
            es.carry.extend_from_slice(&payload[..need]);
            pos = need;
        }
        match parse_adts(&es.carry) {
            None if es.carry.len() < 7 => return, // still waiting for the header
            None => {
                ev.push(Event::Error(format!(
                    "PID {pid:#06x}: bad ADTS header in a frame continued across PES"
                )));
                es.carry.clear();
            }
            Some(h) => {
                let need = h.frame_len - es.carry.len();
                if payload.len() - pos < need {
                    es.carry.extend_from_slice(&payload[pos..]);
                    return;
                }
                let mut frame = std::mem::take(&mut es.carry);
                frame.extend_from_slice(&payload[pos..pos + need]);
                pos += need;
                let (p, d) = (es.carry_pts, es.carry_dts);
                aac_frame(es, &h, &frame, p, d, false, ev);
            }
        }
    }
    let base_pts = pts.or(es.next_pts);
    let base_dts = dts.or(base_pts).or(es.next_dts);
    let mut k: i64 = 0;
    let mut skipped = 0usize;
    while pos < payload.len() {
        let rest = &payload[pos..];
        let Some(h) = parse_adts(rest) else {
            let partial = rest.len() < 7 && (rest == [0xFF] || adts_sync(rest));
            if !partial {
                skipped += 1;
                pos += 1;
                continue;
            }
            // The start of a header, cut by the end of the PES.
            es.carry.clear();
            es.carry.extend_from_slice(rest);
            let rate = es
                .asc
                .and_then(|a| aac_config_info(&a))
                .map_or(48_000, |(r, _)| r);
            let off = sample_ticks(k * 1024, rate);
            es.carry_pts = base_pts.map(|t| t.saturating_add(off));
            es.carry_dts = base_dts.map(|t| t.saturating_add(off));
            break;
        };
        let rate = AAC_RATES[usize::from(h.rate_index)];
        let off = sample_ticks(k * 1024, rate);
        let fp = base_pts.map(|t| t.saturating_add(off));
        let fd = base_dts.map(|t| t.saturating_add(off));
        if h.frame_len > rest.len() {
            es.carry.clear();
            es.carry.extend_from_slice(rest);
            es.carry_pts = fp;
            es.carry_dts = fd;
            break;
        }
        aac_frame(es, &h, &rest[..h.frame_len], fp, fd, disc, ev);
        disc = false;
        k += 1;
        pos += h.frame_len;
    }
    if skipped > 0 {
        ev.push(Event::Error(format!(
            "PID {pid:#06x}: {skipped} bytes without ADTS sync skipped"
        )));
    }
}

fn aac_frame(
    es: &mut Es,
    h: &Adts,
    frame: &[u8],
    pts: Option<i64>,
    dts: Option<i64>,
    disc: bool,
    ev: &mut Vec<Event>,
) {
    let pid = es.info.pid;
    if h.raw_blocks != 0 {
        ev.push(Event::Error(format!(
            "PID {pid:#06x}: ADTS frame with {} raw data blocks not supported, dropped",
            h.raw_blocks + 1
        )));
        es.disc = true;
        return;
    }
    let object_type = h.profile + 1;
    let asc = [
        (object_type << 3) | (h.rate_index >> 1),
        ((h.rate_index & 1) << 7) | (h.channels << 3),
    ];
    if es.asc != Some(asc) {
        es.asc = Some(asc);
        ev.push(Event::Params {
            pid,
            codec: Codec::Aac,
            data: asc.to_vec(),
        });
    }
    let dur = sample_ticks(1024, AAC_RATES[usize::from(h.rate_index)]);
    es.next_pts = pts.map(|t| t.saturating_add(dur));
    es.next_dts = dts.map(|t| t.saturating_add(dur));
    ev.push(Event::Unit(AccessUnit {
        pid,
        codec: Codec::Aac,
        pts,
        dts,
        keyframe: true,
        data: frame[h.header_len..].to_vec(),
        discontinuity: disc,
    }));
}

/// Layer of the first plausible MPEG audio frame header: Mp3 for layer III, Mp2 for I and II.
fn mpeg_audio_codec(b: &[u8]) -> Option<Codec> {
    b.windows(3).find_map(|w| {
        let ok = w[0] == 0xFF
            && w[1] & 0xE0 == 0xE0
            && (w[1] >> 3) & 3 != 1 // reserved version
            && (w[1] >> 1) & 3 != 0 // reserved layer
            && w[2] >> 4 != 15 // bad bitrate
            && (w[2] >> 2) & 3 != 3; // reserved sample rate
        ok.then(|| {
            if (w[1] >> 1) & 3 == 1 {
                Codec::Mp3
            } else {
                Codec::Mp2
            }
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Muxer
// ---------------------------------------------------------------------------------------------

/// One stream to mux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxStream {
    /// Codec. H.264, HEVC, AAC, MP2, MP3 and AC-3 are written as ffmpeg does; Opus and Data as
    /// stream type 0x06 (Opus payloads must carry the TS control headers, as demuxed).
    pub codec: Codec,
    /// AAC: the AudioSpecificConfig, from which each frame's ADTS header is made. Without it
    /// AAC data must already be ADTS. Opus: with an `OpusHead` (its channel count is used) the
    /// data are raw Opus packets and get the TS control header; without one they must carry
    /// it already (as demuxed) and stereo is assumed. Ignored for other codecs.
    pub asc: Option<Vec<u8>>,
}

impl MuxStream {
    /// A stream of `codec` without configuration.
    pub fn new(codec: Codec) -> Self {
        MuxStream { codec, asc: None }
    }

    /// An AAC stream with its AudioSpecificConfig.
    pub fn aac(asc: &[u8]) -> Self {
        MuxStream {
            codec: Codec::Aac,
            asc: Some(asc.to_vec()),
        }
    }
}

struct MuxEs {
    codec: Codec,
    pid: u16,
    stream_id: u8,
    cc: u8,
    asc: Option<Vec<u8>>,
}

/// Sans-IO single-program TS muxer: access units in, whole 188-byte packets out.
///
/// Program 1, PMT on PID 0x1000, streams on PIDs 0x100, 0x101... in the given order (at most 32),
/// PCR on the first video stream (or the first stream).
pub struct Muxer {
    es: Vec<MuxEs>,
    pcr: Option<usize>,
    has_video: bool,
    pat: Vec<u8>,
    pmt: Vec<u8>,
    pat_cc: u8,
    pmt_cc: u8,
    psi_dts: Option<i64>,
}

fn psi_section(table_id: u8, id_ext: u16, body: &[u8]) -> Vec<u8> {
    let len = 5 + body.len() + 4;
    let mut s = vec![
        table_id,
        0xB0 | ((len >> 8) as u8 & 0x0F),
        len as u8,
        (id_ext >> 8) as u8,
        id_ext as u8,
        0xC1, // version 0, current
        0,
        0,
    ];
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

fn put_ts(out: &mut Vec<u8>, prefix: u8, ts: i64) {
    let t = (ts as u64) & 0x1_FFFF_FFFF;
    out.push((prefix << 4) | (((t >> 30) as u8 & 7) << 1) | 1);
    out.push((t >> 22) as u8);
    out.push((((t >> 15) & 0x7F) as u8) << 1 | 1);
    out.push((t >> 7) as u8);
    out.push(((t & 0x7F) as u8) << 1 | 1);
}

impl Muxer {
    /// A muxer for `streams` (streams past the 32nd are ignored).
    pub fn new(streams: &[MuxStream]) -> Self {
        let mut es = Vec::new();
        let mut pmt_body = Vec::new();
        for (i, s) in streams.iter().take(MAX_MUX_STREAMS).enumerate() {
            let pid = MUX_FIRST_PID + i as u16;
            let (stream_type, stream_id) = match s.codec {
                Codec::H264 => (0x1B, 0xE0),
                Codec::Hevc => (0x24, 0xE0),
                Codec::Aac => (0x0F, 0xC0),
                Codec::Mp2 | Codec::Mp3 => (0x03, 0xC0),
                Codec::Ac3 => (0x81, 0xBD),
                Codec::Opus | Codec::Data => (0x06, 0xBD),
            };
            let mut desc = Vec::new();
            if s.codec == Codec::Opus {
                let channels = s
                    .asc
                    .as_deref()
                    .filter(|h| h.len() >= 10 && h.starts_with(b"OpusHead"))
                    .map_or(2, |h| h[9]);
                desc.extend_from_slice(&[0x05, 4, b'O', b'p', b'u', b's']);
                // DVB extension descriptor, Opus channel_config_code.
                desc.extend_from_slice(&[0x7F, 2, 0x80, channels.clamp(1, 8)]);
            }
            pmt_body.extend_from_slice(&[
                stream_type,
                0xE0 | (pid >> 8) as u8,
                pid as u8,
                0xF0,
                desc.len() as u8,
            ]);
            pmt_body.extend_from_slice(&desc);
            es.push(MuxEs {
                codec: s.codec,
                pid,
                stream_id,
                cc: 0,
                asc: s.asc.clone(),
            });
        }
        let pcr = es
            .iter()
            .position(|e| e.codec.is_video())
            .or((!es.is_empty()).then_some(0));
        let pcr_pid = pcr.map_or(NULL_PID, |i| es[i].pid);
        let mut body = vec![0xE0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xF0, 0x00];
        body.extend_from_slice(&pmt_body);
        let pmt = psi_section(0x02, 1, &body);
        let pat = psi_section(
            0x00,
            1,
            &[0, 1, 0xE0 | (MUX_PMT_PID >> 8) as u8, MUX_PMT_PID as u8],
        );
        Muxer {
            has_video: es.iter().any(|e| e.codec.is_video()),
            es,
            pcr,
            pat,
            pmt,
            pat_cc: 0,
            pmt_cc: 0,
            psi_dts: None,
        }
    }

    /// PID of stream `index`, if it exists.
    pub fn pid(&self, index: usize) -> Option<u16> {
        self.es.get(index).map(|e| e.pid)
    }

    /// Muxes one access unit of stream `index`, in the form the demuxer produces (Annex-B video,
    /// raw AAC frames which are wrapped in ADTS here), with 90 kHz timestamps. Returns whole
    /// 188-byte packets: PAT and PMT first and again before every video keyframe (every 0.5 s
    /// without video), then the PES with PTS (and DTS when it differs). The PCR stream carries a
    /// PCR (DTS - 0.1 s) in the first packet of each PES; keyframes get the random access flag.
    /// An unknown `index` gives nothing.
    pub fn mux(
        &mut self,
        index: usize,
        data: &[u8],
        pts: i64,
        dts: i64,
        keyframe: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(es) = self.es.get(index) else {
            return out;
        };
        let video = es.codec.is_video();
        let psi = match self.psi_dts {
            None => true,
            Some(last) => {
                (video && keyframe)
                    || (!self.has_video && (dts.saturating_sub(last) >= PSI_INTERVAL || dts < last))
            }
        };
        if psi {
            write_section(&mut out, 0, &mut self.pat_cc, &self.pat);
            write_section(&mut out, MUX_PMT_PID, &mut self.pmt_cc, &self.pmt);
            self.psi_dts = Some(dts);
        }

        let es = &mut self.es[index];
        let mut prefix: Vec<u8> = Vec::new();
        match es.codec {
            Codec::Aac if !adts_sync(data) => {
                if let Some(h) = es.asc.as_deref().and_then(|a| adts_header(a, data.len())) {
                    prefix.extend_from_slice(&h);
                }
            }
            // Raw Opus packets (the packet ring's form, known by their OpusHead) get the TS
            // control header (ETSI TS 103 491, as ffmpeg's muxer writes it):
            // 0x7FE0, then the size as 0xFF bytes and a remainder.
            Codec::Opus
                if es
                    .asc
                    .as_deref()
                    .is_some_and(|h| h.starts_with(b"OpusHead")) =>
            {
                prefix.extend_from_slice(&[0x7F, 0xE0]);
                let mut n = data.len();
                while n >= 255 {
                    prefix.push(0xFF);
                    n -= 255;
                }
                prefix.push(n as u8);
            }
            // Access unit delimiters, as ffmpeg adds them: some decoders need them in TS.
            Codec::H264 if first_nal_type(data).is_some_and(|h| h & 0x1F != 9) => {
                prefix.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xF0]);
            }
            Codec::Hevc if first_nal_type(data).is_some_and(|h| (h >> 1) & 0x3F != 35) => {
                prefix.extend_from_slice(&[0, 0, 0, 1, 0x46, 0x01, 0x50]);
            }
            _ => {}
        }
        let with_dts = dts != pts;
        let header_len: usize = if with_dts { 10 } else { 5 };
        let pes_len = 3 + header_len + prefix.len() + data.len();
        // Bounded whenever it fits, video too: a demuxer (ffmpeg's, ours) then hands the PES
        // on as soon as it is complete instead of at the next one, a frame later.
        let pes_len = if pes_len > 0xFFFF { 0 } else { pes_len };
        let mut pes = Vec::with_capacity(9 + header_len + prefix.len() + data.len());
        pes.extend_from_slice(&[0, 0, 1, es.stream_id, (pes_len >> 8) as u8, pes_len as u8]);
        pes.push(0x84); // MPEG-2 header, data_alignment_indicator
        pes.push(if with_dts { 0xC0 } else { 0x80 });
        pes.push(header_len as u8);
        put_ts(&mut pes, if with_dts { 3 } else { 2 }, pts);
        if with_dts {
            put_ts(&mut pes, 1, dts);
        }
        pes.extend_from_slice(&prefix);
        pes.extend_from_slice(data);

        let pcr = (self.pcr == Some(index)).then(|| dts.saturating_sub(PCR_DELAY));
        write_pes(&mut out, es.pid, &mut es.cc, &pes, pcr, keyframe);
        out
    }
}

fn first_nal_type(d: &[u8]) -> Option<u8> {
    if d.starts_with(&[0, 0, 1]) {
        d.get(3).copied()
    } else if d.starts_with(&[0, 0, 0, 1]) {
        d.get(4).copied()
    } else {
        None
    }
}

fn write_section(out: &mut Vec<u8>, pid: u16, cc: &mut u8, section: &[u8]) {
    let mut rest = section;
    let mut first = true;
    while first || !rest.is_empty() {
        let mut p = [0xFFu8; TS_PACKET];
        p[0] = SYNC;
        p[1] = if first { 0x40 } else { 0 } | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x10 | *cc;
        *cc = (*cc + 1) & 0x0F;
        let mut at = 4;
        if first {
            p[4] = 0; // pointer_field
            at = 5;
        }
        let n = rest.len().min(TS_PACKET - at);
        p[at..at + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
        out.extend_from_slice(&p);
    }
}

fn write_pes(out: &mut Vec<u8>, pid: u16, cc: &mut u8, pes: &[u8], pcr: Option<i64>, rai: bool) {
    let mut rest = pes;
    let mut first = true;
    while first || !rest.is_empty() {
        let mut p = [0xFFu8; TS_PACKET];
        p[0] = SYNC;
        p[1] = if first { 0x40 } else { 0 } | (pid >> 8) as u8;
        p[2] = pid as u8;
        let cc_now = *cc;
        *cc = (*cc + 1) & 0x0F;
        let pcr = if first { pcr } else { None };
        let rai = first && rai;
        let mut flags = 0u8;
        let mut fields: Vec<u8> = Vec::new();
        if rai {
            flags |= 0x40;
        }
        if let Some(pcr) = pcr {
            flags |= 0x10;
            let base = (pcr as u64) & 0x1_FFFF_FFFF;
            fields.extend_from_slice(&[
                (base >> 25) as u8,
                (base >> 17) as u8,
                (base >> 9) as u8,
                (base >> 1) as u8,
                ((base & 1) as u8) << 7 | 0x7E, // 6 reserved bits, extension 0
                0,
            ]);
        }
        let want_af = flags != 0;
        // Adaptation field bytes, length byte included, before any stuffing.
        let af_min = if want_af { 2 + fields.len() } else { 0 };
        let room = 184 - af_min;
        let af_size = if rest.len() >= room {
            af_min
        } else {
            184 - rest.len() // stuffing fills the packet
        };
        let n = rest.len().min(184 - af_size);
        if af_size > 0 {
            p[3] = 0x30 | cc_now;
            p[4] = (af_size - 1) as u8;
            if af_size > 1 {
                p[5] = flags;
                p[6..6 + fields.len()].copy_from_slice(&fields);
            }
        } else {
            p[3] = 0x10 | cc_now;
        }
        let at = 4 + af_size;
        p[at..at + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
        out.extend_from_slice(&p);
    }
}

/// MPEG-TS bytes → [`Media`]: tracks from the PMT (timebase 1/90000), parameters, units.
#[derive(Default)]
pub struct TsToMedia {
    demux: Demuxer,
    pids: HashMap<u16, usize>,
    /// Recoverable demux errors seen.
    pub errors: u64,
    /// The last one.
    pub last_error: Option<String>,
}

impl TsToMedia {
    /// A fresh demuxer.
    pub fn new() -> TsToMedia {
        TsToMedia::default()
    }

    fn convert(&mut self, events: Vec<Event>, out: MediaOut) -> Result<()> {
        for ev in events {
            match ev {
                Event::Streams(s) => {
                    self.pids = s.iter().enumerate().map(|(i, s)| (s.pid, i)).collect();
                    out(Media::Tracks(
                        s.iter()
                            .map(|s| Track {
                                codec: s.codec.fc_codec(),
                                timebase: (1, 90_000),
                            })
                            .collect(),
                    ))?;
                }
                Event::Params { pid, data, .. } => {
                    if let Some(&track) = self.pids.get(&pid) {
                        out(Media::Params { track, data })?;
                    }
                }
                Event::Unit(u) => {
                    if let Some(&track) = self.pids.get(&u.pid) {
                        out(Media::Frame {
                            track,
                            pts: u.pts.unwrap_or(FC_NOPTS),
                            dts: u.dts.or(u.pts).unwrap_or(FC_NOPTS),
                            keyframe: u.keyframe,
                            discontinuity: u.discontinuity,
                            data: u.data,
                        })?;
                    }
                }
                Event::Error(e) => {
                    self.errors += 1;
                    self.last_error = Some(e);
                }
            }
        }
        Ok(())
    }

    /// Feeds TS bytes (cut anywhere).
    pub fn push(&mut self, bytes: &[u8], out: MediaOut) -> Result<()> {
        let ev = self.demux.push(bytes);
        self.convert(ev, out)
    }

    /// Ends the input: the last unit of each stream comes out.
    pub fn flush(&mut self, out: MediaOut) -> Result<()> {
        let ev = self.demux.flush();
        self.convert(ev, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::OnceLock;

    // ---- helpers ------------------------------------------------------------------------

    fn run_tool(tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
            panic!(
                "the ts tests need {tool}, which could not be run ({e}): \
                 install it with `apt-get install -y ffmpeg`"
            )
        });
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("framecache-ts-{}-{name}", std::process::id()))
    }

    /// Encodes a TS with ffmpeg; returns its bytes (the file is removed, also on failure).
    fn encode(name: &str, args: &[&str]) -> Vec<u8> {
        let path = tmp(name);
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-nostdin"])
            .args(args)
            .args(["-f", "mpegts"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the ts tests need ffmpeg, which could not be run ({e}): \
                     install it with `apt-get install -y ffmpeg`"
                )
            });
        let data = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "ffmpeg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        data.expect("ffmpeg output")
    }

    /// Runs `ffprobe` (the command of the round-trip check) on TS bytes: raw JSON and parsed.
    fn probe(name: &str, ts: &[u8]) -> (String, serde_json::Value) {
        let path = tmp(name);
        std::fs::write(&path, ts).expect("write temp file");
        let p = path.to_str().expect("utf-8 temp path");
        let raw = run_tool(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height,sample_rate,channels",
                "-count_packets",
                "-show_entries",
                "stream=nb_read_packets",
                "-of",
                "json",
                p,
            ],
        );
        let _ = std::fs::remove_file(&path);
        let v = serde_json::from_str(&raw).expect("ffprobe JSON");
        (raw, v)
    }

    /// `ffmpeg -v error -i X -f null -`: decodes everything; returns stderr (errors only).
    fn decode_errors(name: &str, ts: &[u8]) -> String {
        let path = tmp(name);
        std::fs::write(&path, ts).expect("write temp file");
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .expect("the ts tests need ffmpeg: install it with `apt-get install -y ffmpeg`");
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "ffmpeg failed to decode {name}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn streams_json(v: &serde_json::Value) -> Vec<serde_json::Value> {
        v["streams"].as_array().expect("streams array").clone()
    }

    struct Fixture {
        ts: Vec<u8>,
        probe: serde_json::Value,
    }

    /// The fixture of the brief: 2 s of 320x240 25 fps H.264 (GOP 25, no B-frames) + AAC.
    fn base() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let ts = encode(
                "base.ts",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=320x240:rate=25",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=440:sample_rate=48000",
                    "-t",
                    "2",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-g",
                    "25",
                    "-bf",
                    "0",
                    "-c:a",
                    "aac",
                    "-b:a",
                    "64k",
                ],
            );
            let (_, probe) = probe("base-probe.ts", &ts);
            Fixture { ts, probe }
        })
    }

    fn demux(data: &[u8], chunk: usize) -> Vec<Event> {
        let mut d = Demuxer::new();
        let mut ev = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            ev.extend(d.push(c));
        }
        ev.extend(d.flush());
        ev
    }

    fn units(ev: &[Event]) -> Vec<&AccessUnit> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Unit(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    fn units_of(ev: &[Event], codec: Codec) -> Vec<&AccessUnit> {
        units(ev).into_iter().filter(|u| u.codec == codec).collect()
    }

    fn errors(ev: &[Event]) -> Vec<&str> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Error(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn params(ev: &[Event], codec: Codec) -> Vec<&[u8]> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Params { codec: c, data, .. } if *c == codec => Some(data.as_slice()),
                _ => None,
            })
            .collect()
    }

    fn last_streams(ev: &[Event]) -> Vec<StreamInfo> {
        ev.iter()
            .rev()
            .find_map(|e| match e {
                Event::Streams(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Muxes every unit of `ev` with the Muxer, streams in PMT order.
    fn remux(ev: &[Event]) -> Vec<u8> {
        let infos = last_streams(ev);
        let ms: Vec<MuxStream> = infos
            .iter()
            .map(|i| MuxStream {
                codec: i.codec,
                asc: ev.iter().find_map(|e| match e {
                    Event::Params { pid, data, .. } if *pid == i.pid && i.codec == Codec::Aac => {
                        Some(data.clone())
                    }
                    _ => None,
                }),
            })
            .collect();
        let mut m = Muxer::new(&ms);
        let mut out = Vec::new();
        for u in units(ev) {
            let idx = infos
                .iter()
                .position(|i| i.pid == u.pid)
                .expect("known pid");
            let pts = u.pts.expect("pts");
            out.extend(m.mux(idx, &u.data, pts, u.dts.unwrap_or(pts), u.keyframe));
        }
        assert_eq!(out.len() % TS_PACKET, 0);
        out
    }

    fn packets(ts: &[u8]) -> impl Iterator<Item = &[u8]> {
        ts.chunks_exact(TS_PACKET)
    }

    fn pid_of(p: &[u8]) -> u16 {
        (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2])
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A TS packet with `payload` (≤ 184 bytes), stuffed through the adaptation field.
    fn pkt(pid: u16, pusi: bool, cc: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= 184);
        let mut p = vec![
            0x47,
            if pusi { 0x40 } else { 0 } | (pid >> 8) as u8,
            pid as u8,
        ];
        if payload.len() == 184 {
            p.push(0x10 | cc);
        } else {
            p.push(0x30 | cc);
            let af = 184 - payload.len();
            p.push((af - 1) as u8);
            if af > 1 {
                p.push(0);
                p.resize(p.len() + af - 2, 0xFF);
            }
        }
        p.extend_from_slice(payload);
        assert_eq!(p.len(), TS_PACKET);
        p
    }

    fn section_pkt(pid: u16, cc: u8, section: &[u8]) -> Vec<u8> {
        let mut pl = vec![0];
        pl.extend_from_slice(section);
        pl.resize(184, 0xFF);
        pkt(pid, true, cc, &pl)
    }

    fn pat_pmt(stream_type: u8, es_pid: u16) -> Vec<u8> {
        let mut ts = section_pkt(0, 0, &psi_section(0, 1, &[0, 1, 0xF0, 0x00]));
        let pmt = psi_section(
            2,
            1,
            &[
                0xE0 | (es_pid >> 8) as u8,
                es_pid as u8,
                0xF0,
                0,
                stream_type,
                0xE0 | (es_pid >> 8) as u8,
                es_pid as u8,
                0xF0,
                0,
            ],
        );
        ts.extend(section_pkt(0x1000, 0, &pmt));
        ts
    }

    /// A PES with a PTS; `declared` overrides PES_packet_length.
    fn pes(sid: u8, pts: i64, payload: &[u8], declared: Option<u16>) -> Vec<u8> {
        let len = declared.unwrap_or((8 + payload.len()) as u16);
        let mut p = vec![0, 0, 1, sid, (len >> 8) as u8, len as u8, 0x80, 0x80, 5];
        put_ts(&mut p, 2, pts);
        p.extend_from_slice(payload);
        p
    }

    // ---- real streams from ffmpeg ------------------------------------------------------

    #[test]
    fn demuxes_h264_and_aac() {
        let f = base();
        let ev = demux(&f.ts, f.ts.len());
        assert!(errors(&ev).is_empty(), "{:?}", errors(&ev));
        let infos = last_streams(&ev);
        let codecs: Vec<Codec> = infos.iter().map(|s| s.codec).collect();
        assert_eq!(codecs, [Codec::H264, Codec::Aac]);
        assert_eq!(infos[0].stream_type, 0x1B);
        assert_eq!(infos[1].stream_type, 0x0F);

        let video = units_of(&ev, Codec::H264);
        assert_eq!(video.len(), 50);
        assert_eq!(video.iter().filter(|u| u.keyframe).count(), 2);
        assert!(video[0].keyframe && video[25].keyframe);
        for w in video.windows(2) {
            assert!(w[1].pts > w[0].pts, "video pts must increase");
            assert_eq!(w[1].pts.unwrap() - w[0].pts.unwrap(), 3600);
        }
        assert!(video.iter().all(|u| u.dts == u.pts && !u.discontinuity));
        assert!(video.iter().all(|u| u.data.starts_with(&[0, 0, 0, 1])));

        let vp = params(&ev, Codec::H264);
        assert_eq!(vp.len(), 1, "SPS/PPS repeat unchanged: one Params event");
        assert!(vp[0].starts_with(&[0, 0, 0, 1, 0x67]));
        let info = h264_sps_info(vp[0]).expect("SPS parses");
        assert_eq!((info.width, info.height), (320, 240));
        assert_eq!(info.fps, Some(25.0));
        assert!(info.frame_mbs_only);

        let ap = params(&ev, Codec::Aac);
        assert_eq!(ap, [&[0x11u8, 0x88][..]]);
        assert_eq!(aac_config_info(ap[0]), Some((48000, 1)));

        let audio = units_of(&ev, Codec::Aac);
        let expected = f.probe["streams"][1]["nb_read_packets"]
            .as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .expect("ffprobe count");
        assert_eq!(audio.len(), expected, "AAC frames vs ffprobe");
        for w in audio.windows(2) {
            assert_eq!(
                w[1].pts.unwrap() - w[0].pts.unwrap(),
                1920,
                "1024 samples at 48 kHz"
            );
        }
        assert!(audio.iter().all(|u| u.keyframe && !u.data.is_empty()));
        // ffmpeg packs several ADTS frames per PES: check they were split.
        let pes_count = packets(&f.ts)
            .filter(|p| pid_of(p) == infos[1].pid && p[1] & 0x40 != 0)
            .count();
        assert!(pes_count < audio.len());
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let f = base();
        let whole = demux(&f.ts, f.ts.len());
        for chunk in [1, 7, 187, 189, 1316] {
            assert!(
                demux(&f.ts, chunk) == whole,
                "chunks of {chunk} bytes differ"
            );
        }
        // Irregular chunks too.
        let mut rng = XorShift(7);
        let mut d = Demuxer::new();
        let mut ev = Vec::new();
        let mut rest = &f.ts[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(3000)).min(rest.len());
            ev.extend(d.push(&rest[..n]));
            rest = &rest[n..];
        }
        ev.extend(d.flush());
        assert!(ev == whole);
    }

    #[test]
    fn b_frames_have_dts_before_pts() {
        let ts = encode(
            "bf.ts",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-t",
                "1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-bf",
                "2",
            ],
        );
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev).is_empty(), "{:?}", errors(&ev));
        let video = units_of(&ev, Codec::H264);
        assert_eq!(video.len(), 25);
        assert!(
            video.iter().any(|u| u.dts != u.pts),
            "some B-frame reordering"
        );
        assert!(video.iter().all(|u| u.dts <= u.pts));
        for w in video.windows(2) {
            assert!(w[1].dts > w[0].dts, "dts must increase");
        }
        let mut pts: Vec<i64> = video.iter().filter_map(|u| u.pts).collect();
        pts.sort_unstable();
        pts.dedup();
        assert_eq!(pts.len(), 25);
    }

    #[test]
    fn round_trip_through_the_muxer() {
        let f = base();
        let ev = demux(&f.ts, f.ts.len());
        let out = remux(&ev);
        let (raw, v) = probe("roundtrip-out.ts", &out);
        println!("ffprobe out.ts:\n{raw}");
        let got = streams_json(&v);
        let want = streams_json(&f.probe);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["codec_name"], "h264");
        assert_eq!(
            (got[0]["width"].as_i64(), got[0]["height"].as_i64()),
            (Some(320), Some(240))
        );
        assert_eq!(got[1]["codec_name"], "aac");
        assert_eq!(got[1]["sample_rate"], "48000");
        assert_eq!(got[1]["channels"], 1);
        for k in 0..2 {
            assert_eq!(
                got[k]["nb_read_packets"], want[k]["nb_read_packets"],
                "stream {k}"
            );
        }
        let errs = decode_errors("roundtrip-decode.ts", &out);
        assert!(errs.is_empty(), "ffmpeg decoding out.ts: {errs}");

        // PAT/PMT come again before the second keyframe: a cut there plays on its own.
        let pats: Vec<usize> = packets(&out)
            .enumerate()
            .filter(|(_, p)| pid_of(p) == 0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pats.len(), 2, "PSI before each of the 2 keyframes");
        let cut = &out[pats[1] * TS_PACKET..];
        let (_, v) = probe("roundtrip-cut.ts", cut);
        let got = streams_json(&v);
        assert_eq!(got[0]["codec_name"], "h264");
        assert_eq!(got[0]["width"], 320);
        assert_eq!(got[0]["nb_read_packets"], "25");

        // Our own demuxer gives back exactly what went in.
        let again = demux(&out, out.len());
        assert!(errors(&again).is_empty(), "{:?}", errors(&again));
        // (Per stream: across streams the order depends on where each PES ends.)
        for codec in [Codec::H264, Codec::Aac] {
            let strip = |u: &&AccessUnit| (u.pts, u.dts, u.keyframe, u.data.clone());
            let a: Vec<_> = units_of(&ev, codec).iter().map(strip).collect();
            let b: Vec<_> = units_of(&again, codec).iter().map(strip).collect();
            assert!(a == b, "{codec:?} units differ after the round trip");
        }
        assert_eq!(params(&again, Codec::Aac), params(&ev, Codec::Aac));
        assert_eq!(params(&again, Codec::H264), params(&ev, Codec::H264));
    }

    #[test]
    fn hevc_keyframes_params_and_round_trip() {
        let ts = encode(
            "hevc.ts",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-t",
                "2",
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-x265-params",
                "log-level=error",
            ],
        );
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev).is_empty(), "{:?}", errors(&ev));
        assert_eq!(last_streams(&ev)[0].codec, Codec::Hevc);
        let video = units_of(&ev, Codec::Hevc);
        assert_eq!(video.len(), 50);
        assert!(video[0].keyframe);
        assert!(video.iter().filter(|u| u.keyframe).count() >= 2);
        let p = params(&ev, Codec::Hevc);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with(&[0, 0, 0, 1, 0x40, 0x01]), "VPS first");
        let types: Vec<u8> = nal_units(p[0]).iter().map(|n| (n[0] >> 1) & 0x3F).collect();
        assert_eq!(types, [32, 33, 34]);

        let out = remux(&ev);
        let (raw, v) = probe("hevc-out.ts", &out);
        println!("ffprobe hevc out.ts:\n{raw}");
        let got = streams_json(&v);
        assert_eq!(got[0]["codec_name"], "hevc");
        assert_eq!(
            (got[0]["width"].as_i64(), got[0]["height"].as_i64()),
            (Some(320), Some(240))
        );
        assert_eq!(got[0]["nb_read_packets"], "50");
    }

    #[test]
    fn mpeg_audio_ac3_opus_detection_and_round_trip() {
        let ts = encode(
            "audio.ts",
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "1",
                "-map",
                "0:a",
                "-map",
                "0:a",
                "-map",
                "0:a",
                "-map",
                "0:a",
                "-c:a:0",
                "mp2",
                "-c:a:1",
                "libmp3lame",
                "-c:a:2",
                "ac3",
                "-c:a:3",
                "libopus",
            ],
        );
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev).is_empty(), "{:?}", errors(&ev));
        let infos = last_streams(&ev);
        let codecs: Vec<Codec> = infos.iter().map(|s| s.codec).collect();
        assert_eq!(codecs, [Codec::Mp2, Codec::Mp3, Codec::Ac3, Codec::Opus]);
        // Both MPEG audio streams are type 0x03 (ffmpeg's choice at 48 kHz): the layer came
        // from the frame headers, announced by a second Streams event before the first unit.
        assert_eq!(infos[1].stream_type, 0x03);
        let announcements = ev.iter().filter(|e| matches!(e, Event::Streams(_))).count();
        assert_eq!(announcements, 2);
        for c in codecs.iter().copied() {
            let u = units_of(&ev, c);
            assert!(!u.is_empty(), "{c:?} units");
            assert!(u.iter().all(|u| u.keyframe && u.pts.is_some()));
        }
        let first_mp3 = ev
            .iter()
            .position(|e| matches!(e, Event::Unit(u) if u.codec == Codec::Mp3))
            .unwrap();
        let second_streams = ev
            .iter()
            .rposition(|e| matches!(e, Event::Streams(_)))
            .unwrap();
        assert!(second_streams < first_mp3);

        let out = remux(&ev);
        let (raw, v) = probe("audio-out.ts", &out);
        println!("ffprobe audio out.ts:\n{raw}");
        let (_, want) = probe("audio-in.ts", &ts);
        let got = streams_json(&v);
        let want = streams_json(&want);
        let names: Vec<&str> = got
            .iter()
            .filter_map(|s| s["codec_name"].as_str())
            .collect();
        assert_eq!(names, ["mp2", "mp3", "ac3", "opus"]);
        for k in 0..3 {
            assert_eq!(
                got[k]["nb_read_packets"], want[k]["nb_read_packets"],
                "stream {k}"
            );
            assert_eq!(got[k]["sample_rate"], "48000");
        }
    }

    /// Raw Opus packets with an `OpusHead` (the packet ring's form) get the TS control header,
    /// sized in 0xFF steps; demuxed, the unit is the header and the packet.
    #[test]
    fn raw_opus_gets_the_control_header() {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 1, 0, 0, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        let mut m = Muxer::new(&[MuxStream {
            codec: Codec::Opus,
            asc: Some(head),
        }]);
        let small = vec![0xFC, 1, 2, 3];
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut ts = m.mux(0, &small, 0, 0, true);
        ts.extend(m.mux(0, &big, 1800, 1800, true));
        ts.extend(m.mux(0, &small, 3600, 3600, true));
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev).is_empty(), "{:?}", errors(&ev));
        let u = units_of(&ev, Codec::Opus);
        assert!(u.len() >= 2, "{u:?}");
        assert_eq!(u[0].data, [&[0x7F, 0xE0, 4][..], &small].concat());
        assert_eq!(u[1].data, [&[0x7F, 0xE0, 0xFF, 45][..], &big].concat());
    }

    #[test]
    fn ac3_in_private_stream_with_descriptor() {
        let ts = encode(
            "ac3b.ts",
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=sample_rate=48000",
                "-t",
                "0.5",
                "-c:a",
                "ac3",
                "-mpegts_flags",
                "system_b",
            ],
        );
        let ev = demux(&ts, ts.len());
        let infos = last_streams(&ev);
        assert_eq!(infos[0].stream_type, 0x06);
        assert_eq!(infos[0].codec, Codec::Ac3);
        assert!(!units_of(&ev, Codec::Ac3).is_empty());
    }

    #[test]
    fn sps_cropping_and_interlace() {
        let sps_of = |name: &str, size: &str, extra: &[&str]| {
            let src = format!("testsrc=size={size}:rate=30");
            let mut a = vec![
                "-f",
                "lavfi",
                "-i",
                &src,
                "-frames:v",
                "1",
                "-c:v",
                "libx264",
            ];
            a.extend_from_slice(extra);
            let ts = encode(name, &a);
            let ev = demux(&ts, ts.len());
            let p = params(&ev, Codec::H264);
            assert_eq!(p.len(), 1, "{name}");
            h264_sps_info(p[0]).expect("SPS parses")
        };
        let odd = sps_of(
            "crop.ts",
            "330x250",
            &["-preset", "ultrafast", "-pix_fmt", "yuv420p"],
        );
        assert_eq!((odd.width, odd.height), (330, 250));
        assert_eq!(odd.fps, Some(30.0));
        let hd = sps_of(
            "hd.ts",
            "1920x1080",
            &["-preset", "veryfast", "-pix_fmt", "yuv420p"],
        );
        assert_eq!((hd.width, hd.height, hd.profile_idc), (1920, 1080, 100));
        let il = sps_of(
            "interlaced.ts",
            "320x240",
            &["-pix_fmt", "yuv420p", "-flags", "+ildct+ilme"],
        );
        assert!(!il.frame_mbs_only);
        assert_eq!((il.width, il.height), (320, 240));
        let yuv444 = sps_of(
            "444.ts",
            "176x144",
            &["-pix_fmt", "yuv444p", "-preset", "ultrafast"],
        );
        assert_eq!(
            (yuv444.width, yuv444.height, yuv444.chroma_format_idc),
            (176, 144, 3)
        );

        // A raw NAL (no start code) works too; garbage and truncations give None, no panic.
        let f = base();
        let ev = demux(&f.ts, f.ts.len());
        let p = params(&ev, Codec::H264)[0].to_vec();
        let sps = nal_units(&p)[0];
        assert_eq!(h264_sps_info(sps).map(|i| i.width), Some(320));
        for n in 0..sps.len() {
            let _ = h264_sps_info(&sps[..n]);
        }
        assert_eq!(h264_sps_info(&[]), None);
        assert_eq!(h264_sps_info(&[0x68, 1, 2, 3]), None);
        let mut rng = XorShift(99);
        for _ in 0..20_000 {
            let mut m = sps.to_vec();
            let i = 1 + rng.below(m.len() - 1);
            m[i] ^= rng.next() as u8;
            let _ = h264_sps_info(&m);
            let len = rng.below(40);
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = h264_sps_info(&junk);
        }
    }

    // ---- pure functions ----------------------------------------------------------------

    #[test]
    fn aac_config_and_adts() {
        assert_eq!(aac_config_info(&[0x12, 0x10]), Some((44100, 2)));
        assert_eq!(aac_config_info(&[0x11, 0x88]), Some((48000, 1)));
        // HE-AAC, explicit: core 24 kHz, output 48 kHz.
        assert_eq!(aac_config_info(&[0x2B, 0x11, 0x80]), Some((48000, 2)));
        // Escape rate: 15 then 24 bits (12345 Hz), 2 channels.
        let r = 12345u32;
        let asc = [
            0x10 | 0x07,
            0x80 | (r >> 17) as u8,
            (r >> 9) as u8,
            (r >> 1) as u8,
            ((r & 1) as u8) << 7 | 0x10,
        ];
        assert_eq!(aac_config_info(&asc), Some((12345, 2)));
        assert_eq!(aac_config_info(&[]), None);
        assert_eq!(aac_config_info(&[0x11]), None);

        let h = adts_header(&[0x11, 0x88], 100).expect("LC 48k mono");
        let a = parse_adts(&h).expect("parses back");
        assert_eq!((a.profile, a.rate_index, a.channels), (1, 3, 1));
        assert_eq!((a.frame_len, a.header_len, a.raw_blocks), (107, 7, 0));
        assert_eq!(
            adts_header(&[0x12, 0x10], 8184).map(|h| parse_adts(&h).unwrap().frame_len),
            Some(8191)
        );
        assert_eq!(adts_header(&[0x12, 0x10], 8185), None);
        assert_eq!(
            adts_header(&[0x2B, 0x11, 0x80], 10),
            None,
            "HE-AAC: no ADTS profile"
        );
        assert_eq!(adts_header(&[0x12], 10), None);
        // Escape rate that is in the table maps to its index.
        let r = 44100u32;
        let asc = [
            0x17,
            0x80 | (r >> 17) as u8,
            (r >> 9) as u8,
            (r >> 1) as u8,
            ((r & 1) as u8) << 7 | 0x10,
        ];
        assert_eq!(adts_header(&asc, 10).map(|h| (h[2] >> 2) & 0xF), Some(4));
    }

    #[test]
    fn crc32_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        let s = psi_section(0, 1, &[0, 1, 0xF0, 0]);
        assert_eq!(crc32_mpeg2(&s), 0);
    }

    #[test]
    fn muxer_stuffing_and_pcr_round_trip_for_every_size() {
        // Every payload size around the packet boundaries, with and without PCR/RAI/DTS.
        let streams = [MuxStream::new(Codec::H264), MuxStream::new(Codec::Data)];
        let mut m = Muxer::new(&streams);
        let mut ts = Vec::new();
        let mut sent = Vec::new();
        let mut rng = XorShift(3);
        for n in (0..420).chain([65_000, 70_000, 200_000]) {
            let pts = 900_000 + 3000 * n as i64;
            let mut v = vec![0, 0, 0, 1, 0x09, 0xF0];
            v.extend((0..n).map(|_| rng.next() as u8 | 0x80));
            let dts = pts - if n % 3 == 0 { 3000 } else { 0 };
            ts.extend(m.mux(0, &v, pts, dts, n % 5 == 0));
            sent.push((Codec::H264, v, pts, dts));
            let d: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            if n > 0 {
                ts.extend(m.mux(1, &d, pts, pts, true));
                sent.push((Codec::Data, d, pts, pts));
            }
        }
        assert_eq!(ts.len() % TS_PACKET, 0);
        assert!(packets(&ts).all(|p| p[0] == SYNC));
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev).is_empty(), "{:?}", errors(&ev));
        let mut got: Vec<_> = units(&ev)
            .iter()
            .map(|u| (u.codec, u.data.clone(), u.pts.unwrap(), u.dts.unwrap()))
            .collect();
        // Video waits for the next PES start, data is complete at once: compare per stream.
        got.sort_by_key(|u| (u.0 == Codec::Data, u.2));
        sent.sort_by_key(|u| (u.0 == Codec::Data, u.2));
        assert!(got == sent);
        assert!(m.mux(7, b"x", 0, 0, true).is_empty(), "unknown index");
        assert_eq!(m.pid(1), Some(0x101));
        // PCR only on the video PID, in the first packet of each PES.
        let pcr_pkts: Vec<&[u8]> = packets(&ts)
            .filter(|p| p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x10 != 0)
            .collect();
        assert!(pcr_pkts
            .iter()
            .all(|p| pid_of(p) == 0x100 && p[1] & 0x40 != 0));
        assert_eq!(pcr_pkts.len(), 423);
    }

    #[test]
    fn timestamps_unwrap_across_33_bits() {
        let mut m = Muxer::new(&[MuxStream::new(Codec::Mp2)]);
        let mut ts = Vec::new();
        for k in 0..40i64 {
            let t = TS_WRAP - 20 * 2160 + k * 2160;
            ts.extend(m.mux(0, &[0xFF, 0xFD, 0x94, 0x00], t, t, true));
        }
        let ev = demux(&ts, ts.len());
        let pts: Vec<i64> = units(&ev).iter().filter_map(|u| u.pts).collect();
        assert_eq!(pts.len(), 40);
        assert_eq!(pts[0], TS_WRAP - 20 * 2160);
        assert!(pts.windows(2).all(|w| w[1] - w[0] == 2160), "{pts:?}");
        assert!(pts[39] > TS_WRAP);
    }

    #[test]
    fn clock_ignores_a_single_wild_timestamp_but_follows_a_new_timeline() {
        let mut c = Unwrapper::new(33);
        assert_eq!(c.unwrap(TS_WRAP - 100), TS_WRAP - 100);
        assert_eq!(c.unwrap(50), TS_WRAP + 50, "wrap");
        let wild = c.unwrap(TS_WRAP / 2 + 7);
        assert!((wild - (TS_WRAP + 50)).abs() <= TS_WRAP / 2);
        assert_eq!(c.unwrap(3050), TS_WRAP + 3050, "back on the timeline");
        let j = c.unwrap(3_000_000_000);
        assert_eq!(
            c.unwrap(3_000_003_000),
            j + 3000,
            "a confirmed jump is followed"
        );
        assert_eq!(c.unwrap(3_000_006_000), j + 6000);
    }

    // ---- hostile input -----------------------------------------------------------------

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x1234_5678);
        let junk: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
        let ev = demux(&junk, 1000);
        assert!(units(&ev).is_empty());
        // Random packets behind good sync bytes.
        let mut synced = junk.clone();
        for p in synced.chunks_mut(TS_PACKET) {
            p[0] = SYNC;
        }
        let ev = demux(&synced, 4096);
        assert!(units(&ev).is_empty());
        // Random packets on the PIDs of a real program.
        let f = base();
        let mut ts = f.ts[..TS_PACKET * 2].to_vec();
        for p in synced.chunks(TS_PACKET).take(3000) {
            let mut p = p.to_vec();
            p[1] &= 0xE0; // PID 0x100/0x101
            p[1] |= 0x01;
            p[2] = rng.next() as u8 & 1;
            ts.extend_from_slice(&p);
        }
        let _ = demux(&ts, 7);
    }

    #[test]
    fn garbage_after_sync_bytes() {
        let f = base();
        let mut ts = f.ts.clone();
        let mut rng = XorShift(42);
        for (i, p) in ts.chunks_mut(TS_PACKET).enumerate() {
            if i > 2 && rng.below(3) == 0 {
                for b in &mut p[1..] {
                    *b = rng.next() as u8;
                }
            }
        }
        let ev = demux(&ts, 1316);
        assert!(!errors(&ev).is_empty());
    }

    #[test]
    fn resyncs_after_lost_sync() {
        let f = base();
        let whole = demux(&f.ts, f.ts.len());
        // 100 garbage bytes between two packets: nothing but an error is lost.
        let at = TS_PACKET * 200;
        let mut ts = f.ts[..at].to_vec();
        ts.extend(
            (0..100u8)
                .map(|i| i.wrapping_mul(37) | 1)
                .map(|b| if b == SYNC { 0 } else { b }),
        );
        ts.extend_from_slice(&f.ts[at..]);
        let ev = demux(&ts, 1316);
        assert_eq!(errors(&ev), ["lost sync: skipped 100 bytes"]);
        assert!(units(&ev) == units(&whole));
        // A cut packet (half of one missing): resync, one unit damaged, the rest fine.
        let mut ts = f.ts[..at + 94].to_vec();
        ts.extend_from_slice(&f.ts[at + TS_PACKET..]);
        let ev = demux(&ts, 1);
        assert!(errors(&ev).iter().any(|e| e.starts_with("lost sync")));
        assert_eq!(units_of(&ev, Codec::H264).len(), 50);
        // File starting mid-packet.
        let ev = demux(&f.ts[1000..], 999);
        assert!(errors(&ev)[0].starts_with("lost sync"));
        // (Units before the next PAT/PMT, 0.1 s later, are unknown streams.)
        assert!(units_of(&ev, Codec::H264).len() >= 45);
    }

    #[test]
    fn truncated_file() {
        let f = base();
        let cut = f.ts.len() * 2 / 3 + 77;
        let ev = demux(&f.ts[..cut], 4096);
        let errs = errors(&ev);
        assert!(
            errs.last()
                .is_some_and(|e| e.contains("not a whole packet")),
            "{errs:?}"
        );
        let n = units_of(&ev, Codec::H264).len();
        assert!(n > 25 && n < 50, "{n}");
        for cut in [1, 187, 188, 189, 375, 377, 5000] {
            let _ = demux(&f.ts[..cut], 1);
        }
    }

    #[test]
    fn pes_length_larger_than_its_data() {
        let mut ts = pat_pmt(0x06, 0x100);
        ts.extend(pkt(
            0x100,
            true,
            0,
            &pes(0xBD, 1000, &[0xAA; 100], Some(1000)),
        ));
        ts.extend(pkt(0x100, true, 1, &pes(0xBD, 4000, &[0xBB; 50], None)));
        let ev = demux(&ts, 5);
        assert!(errors(&ev)
            .iter()
            .any(|e| e.contains("shorter than its length field")));
        let u = units(&ev);
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].data.len(), u[0].pts), (100, Some(1000)));
        assert_eq!(
            (u[1].data.as_slice(), u[1].pts),
            (&[0xBB; 50][..], Some(4000))
        );
        assert_eq!(u[0].codec, Codec::Data);
        // Data after a PES that its length closed is reported, not appended.
        let mut ts = pat_pmt(0x06, 0x100);
        ts.extend(pkt(0x100, true, 0, &pes(0xBD, 1000, &[0xAA; 10], None)));
        ts.extend(pkt(0x100, false, 1, &[0xCC; 30]));
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev)
            .iter()
            .any(|e| e.contains("after the end of a PES")));
        assert_eq!(units(&ev).len(), 1);
        // Header length past the PES, and a bad start code.
        let mut ts = pat_pmt(0x06, 0x100);
        let mut bad = pes(0xBD, 0, &[1, 2, 3], None);
        bad[8] = 200;
        ts.extend(pkt(0x100, true, 0, &bad));
        ts.extend(pkt(0x100, true, 1, &[0, 0, 2, 0xBD, 0, 0, 1]));
        let ev = demux(&ts, ts.len());
        assert_eq!(errors(&ev).len(), 2, "{:?}", errors(&ev));
        assert!(units(&ev).is_empty());
    }

    #[test]
    fn pat_section_length_beyond_the_packet() {
        let mut ts = Vec::new();
        let mut long = vec![0x00, 0xB3, 0xE8]; // section_length 1000
        long.resize(183, 0);
        ts.extend(section_pkt(0, 0, &long));
        let mut huge = vec![0x00, 0xBF, 0xFF]; // 4095: more than a PAT may have
        huge.resize(183, 0);
        ts.extend(section_pkt(0, 1, &huge));
        let ev = demux(&ts, 3);
        assert!(units(&ev).is_empty() && last_streams(&ev).is_empty());
        let errs = errors(&ev);
        assert!(errs.iter().any(|e| e.contains("truncated")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("too large")), "{errs:?}");
        // A good program afterwards is still found.
        let mut ts2 = ts.clone();
        let good = pat_pmt(0x06, 0x100);
        let mut pat = good[..TS_PACKET].to_vec();
        pat[3] = (pat[3] & 0xF0) | 2;
        ts2.extend(pat);
        ts2.extend_from_slice(&good[TS_PACKET..]);
        ts2.extend(pkt(0x100, true, 0, &pes(0xBD, 10, &[1; 20], None)));
        let ev = demux(&ts2, 11);
        assert_eq!(last_streams(&ev).len(), 1);
        assert_eq!(units(&ev).len(), 1);
        // pointer_field beyond the packet, and a bad CRC.
        let mut p = section_pkt(0, 0, &psi_section(0, 1, &[0, 1, 0xF0, 0]));
        p[4] = 200;
        let mut q = section_pkt(0, 1, &psi_section(0, 1, &[0, 1, 0xF0, 0]));
        q[10] ^= 1;
        let ev = demux(&[p, q].concat(), 1);
        let errs = errors(&ev);
        assert!(errs.iter().any(|e| e.contains("pointer_field")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("CRC")), "{errs:?}");
    }

    #[test]
    fn pmt_with_huge_program_info_length() {
        let mut ts = section_pkt(0, 0, &psi_section(0, 1, &[0, 1, 0xF0, 0x00]));
        let body = [0xE1, 0x00, 0xFF, 0xFF, 0x1B, 0xE1, 0x00, 0xF0, 0x00];
        ts.extend(section_pkt(0x1000, 0, &psi_section(2, 1, &body)));
        // And one whose ES_info_length runs past the end.
        let body = [0xE1, 0x00, 0xF0, 0x00, 0x1B, 0xE1, 0x00, 0xF3, 0xFF];
        ts.extend(section_pkt(0x1000, 1, &psi_section(2, 1, &body)));
        let ev = demux(&ts, 2);
        let errs = errors(&ev);
        assert!(
            errs.iter().any(|e| e.contains("program_info_length")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("ES_info_length")),
            "{errs:?}"
        );
        assert!(units(&ev).is_empty());
        assert!(last_streams(&ev).is_empty());
    }

    #[test]
    fn continuity_counter_jump_flags_the_unit() {
        let f = base();
        let pkts: Vec<&[u8]> = packets(&f.ts).collect();
        let vpid = 0x100;
        // Second packet of the 10th video PES (which has more than two packets).
        let starts: Vec<usize> = (0..pkts.len())
            .filter(|&i| pid_of(pkts[i]) == vpid && pkts[i][1] & 0x40 != 0)
            .collect();
        let victim = (starts[9] + 1..pkts.len())
            .find(|&i| pid_of(pkts[i]) == vpid)
            .unwrap();
        assert!(victim < starts[10]);
        let ts: Vec<u8> = pkts
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != victim)
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        let ev = demux(&ts, 188);
        let errs = errors(&ev);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("continuity"));
        let video = units_of(&ev, Codec::H264);
        assert_eq!(video.len(), 50);
        let flagged: Vec<usize> = (0..50).filter(|&i| video[i].discontinuity).collect();
        assert_eq!(flagged, [9]);
        assert!(units_of(&ev, Codec::Aac).iter().all(|u| !u.discontinuity));
        // The adaptation-field discontinuity_indicator flags too, without an error.
        let mut ts = pat_pmt(0x06, 0x100);
        ts.extend(pkt(0x100, true, 0, &pes(0xBD, 0, &[1; 10], None)));
        let mut p = pkt(0x100, true, 9, &pes(0xBD, 0, &[2; 10], None));
        p[5] |= 0x80;
        ts.extend(p);
        let ev = demux(&ts, ts.len());
        assert!(errors(&ev).is_empty());
        let u = units(&ev);
        assert_eq!((u[0].discontinuity, u[1].discontinuity), (false, true));
    }

    #[test]
    fn no_pat_means_no_units() {
        let f = base();
        let ts: Vec<u8> = packets(&f.ts)
            .filter(|p| pid_of(p) != 0)
            .flatten()
            .copied()
            .collect();
        let ev = demux(&ts, 1316);
        assert!(ev.is_empty(), "{:?}", &ev[..ev.len().min(3)]);
    }

    #[test]
    fn oversized_pes_is_dropped() {
        let mut ts = pat_pmt(0x1B, 0x100);
        let mut first = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5];
        put_ts(&mut first, 2, 0);
        first.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        ts.extend(pkt(0x100, true, 0, &first));
        let mut cc = 1u8;
        for _ in 0..MAX_PES / 184 + 10 {
            ts.extend(pkt(0x100, false, cc, &[0x11; 184]));
            cc = (cc + 1) & 15;
        }
        ts.extend(pkt(
            0x100,
            true,
            cc,
            &pes(0xE0, 3600, &[0, 0, 0, 1, 0x41, 0x9A], Some(0)),
        ));
        let ev = demux(&ts, ts.len());
        let errs = errors(&ev);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("PES larger than"));
        let u = units(&ev);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].pts, u[0].discontinuity, u[0].keyframe),
            (Some(3600), true, false)
        );
    }

    #[test]
    fn mutated_files_never_panic() {
        // A small real file (every code path: PSI, H.264, AAC), mutated 5000 times.
        static SMALL: OnceLock<Vec<u8>> = OnceLock::new();
        let base = SMALL.get_or_init(|| {
            encode(
                "small.ts",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=64x48:rate=25",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=sample_rate=48000",
                    "-t",
                    "0.4",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-bf",
                    "2",
                    "-c:a",
                    "aac",
                ],
            )
        });
        let clean = demux(base, base.len());
        assert!(
            !units_of(&clean, Codec::Aac).is_empty() && !units_of(&clean, Codec::H264).is_empty()
        );
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut total_units = 0;
        for it in 0..5000 {
            let mut m = base.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(m.len());
                m[i] ^= (rng.next() as u8) | 1;
            }
            if it % 5 == 0 {
                m.truncate(rng.below(m.len()));
            }
            if it % 7 == 0 {
                let i = rng.below(m.len());
                m.insert(i, SYNC);
            }
            let mut d = Demuxer::new();
            let chunk = 1 + rng.below(2000);
            for c in m.chunks(chunk) {
                total_units += units(&d.push(c)).len();
            }
            total_units += units(&d.flush()).len();
        }
        assert!(total_units > 0);
    }
}

//! AAC → Opus for WebRTC viewers: browsers receive Opus, RTMP and SRT sources mostly carry AAC.
//!
//! AAC-LC is decoded with symphonia, resampled to 48 kHz and encoded with libopus, which is
//! loaded with `dlopen` (as libsrt is) so the library builds and loads without it; without
//! libopus an AAC stream plays in WHEP without sound and the log says why. One transcoder runs
//! per stream, not per viewer.

use std::ffi::{c_int, c_void, CString};
use std::sync::OnceLock;

use symphonia_codec_aac::AacDecoder;
use symphonia_core::codecs::audio::well_known::CODEC_ID_AAC;
use symphonia_core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia_core::packet::PacketRef;
use symphonia_core::units::{Duration as SDuration, Timestamp};

type EncoderCreate = unsafe extern "C" fn(i32, c_int, c_int, *mut c_int) -> *mut c_void;
type EncoderCtl = unsafe extern "C" fn(*mut c_void, c_int, ...) -> c_int;
type Encode = unsafe extern "C" fn(*mut c_void, *const f32, c_int, *mut u8, i32) -> i32;
type EncoderDestroy = unsafe extern "C" fn(*mut c_void);

struct OpusApi {
    create: EncoderCreate,
    ctl: EncoderCtl,
    encode: Encode,
    destroy: EncoderDestroy,
}

const OPUS_APPLICATION_AUDIO: c_int = 2049;
const OPUS_SET_BITRATE_REQUEST: c_int = 4002;

fn api() -> Result<&'static OpusApi, String> {
    static API: OnceLock<Result<OpusApi, String>> = OnceLock::new();
    API.get_or_init(|| {
        let mut handle = std::ptr::null_mut();
        for n in ["libopus.so.0", "libopus.so"] {
            let c = CString::new(n).expect("no NUL");
            // SAFETY: plain dlopen of a library name.
            handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if !handle.is_null() {
                break;
            }
        }
        if handle.is_null() {
            return Err("libopus not found (apt install libopus0)".into());
        }
        macro_rules! sym {
            ($name:literal, $t:ty) => {{
                let c = CString::new($name).expect("no NUL");
                // SAFETY: dlsym on a live handle; the C type is the field's type (opus.h 1.3).
                let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
                if p.is_null() {
                    return Err(format!("libopus lacks {}", $name));
                }
                // SAFETY: see above.
                unsafe { std::mem::transmute::<*mut c_void, $t>(p) }
            }};
        }
        Ok(OpusApi {
            create: sym!("opus_encoder_create", EncoderCreate),
            ctl: sym!("opus_encoder_ctl", EncoderCtl),
            encode: sym!("opus_encode_float", Encode),
            destroy: sym!("opus_encoder_destroy", EncoderDestroy),
        })
    })
    .as_ref()
    .map_err(|e| e.clone())
}

/// Whether libopus could be loaded (AAC sources can then be heard in WebRTC).
pub fn opus_available() -> bool {
    api().is_ok()
}

/// A libopus encoder at 48 kHz, 20 ms frames.
struct OpusEncoder {
    api: &'static OpusApi,
    enc: *mut c_void,
    channels: usize,
}

// SAFETY: the encoder state is owned by this value and used from one thread at a time.
unsafe impl Send for OpusEncoder {}

impl OpusEncoder {
    fn new(channels: usize, bitrate: i32) -> Result<OpusEncoder, String> {
        let api = api()?;
        let mut err: c_int = 0;
        // SAFETY: valid arguments per opus.h; err is a valid out pointer.
        let enc =
            unsafe { (api.create)(48000, channels as c_int, OPUS_APPLICATION_AUDIO, &mut err) };
        if enc.is_null() || err != 0 {
            return Err(format!("opus_encoder_create failed ({err})"));
        }
        // SAFETY: live encoder; OPUS_SET_BITRATE takes an opus_int32.
        unsafe { (api.ctl)(enc, OPUS_SET_BITRATE_REQUEST, bitrate) };
        Ok(OpusEncoder { api, enc, channels })
    }

    /// Encodes exactly 960 interleaved frames.
    fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, String> {
        debug_assert_eq!(pcm.len(), 960 * self.channels);
        let mut out = vec![0u8; 1500];
        // SAFETY: pcm holds 960 frames of `channels` samples; out has 1500 bytes.
        let n = unsafe { (self.api.encode)(self.enc, pcm.as_ptr(), 960, out.as_mut_ptr(), 1500) };
        if n < 0 {
            return Err(format!("opus_encode_float failed ({n})"));
        }
        out.truncate(n as usize);
        Ok(out)
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { (self.api.destroy)(self.enc) };
    }
}

/// Linear-interpolating resampler to 48 kHz, per channel, carrying phase across calls.
///
/// Linear interpolation is enough for monitoring-quality sound in a browser; it is not a
/// mastering-grade resampler (no anti-alias filter when downsampling).
struct Resampler {
    ratio: f64,
    pos: f64,
    last: Vec<f32>,
    channels: usize,
}

impl Resampler {
    fn new(rate: u32, channels: usize) -> Resampler {
        Resampler {
            ratio: rate as f64 / 48000.0,
            pos: 0.0,
            last: vec![0.0; channels],
            channels,
        }
    }

    /// Appends the resampled version of `input` (interleaved) to `out`.
    fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let ch = self.channels;
        let frames = input.len() / ch;
        if (self.ratio - 1.0).abs() < 1e-9 {
            out.extend_from_slice(&input[..frames * ch]);
            return;
        }
        // Sample i of the virtual signal: -1 is `last`, 0.. are `input`.
        let at = |i: isize, c: usize| -> f32 {
            if i < 0 {
                self.last[c]
            } else {
                input[i as usize * ch + c]
            }
        };
        // Output sample k lies at virtual position pos - 1, between i and i + 1.
        while self.pos < frames as f64 {
            let base = self.pos.floor();
            let frac = (self.pos - base) as f32;
            let i = base as isize - 1;
            for c in 0..ch {
                let a = at(i, c);
                let b = at(i + 1, c);
                out.push(a + (b - a) * frac);
            }
            self.pos += self.ratio;
        }
        self.pos -= frames as f64;
        if frames > 0 {
            self.last
                .copy_from_slice(&input[(frames - 1) * ch..frames * ch]);
        }
    }
}

/// One Opus frame produced by [`AacToOpus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusFrame {
    /// Presentation time at 48 kHz (the first AAC frame's pts, then +960 per frame).
    pub ts48: i64,
    /// The Opus packet.
    pub data: Vec<u8>,
}

/// AAC-LC access units in, 20 ms Opus frames out.
pub struct AacToOpus {
    dec: AacDecoder,
    enc: OpusEncoder,
    rs: Resampler,
    channels: usize,
    pcm: Vec<f32>,
    resampled: Vec<f32>,
    /// 48 kHz time of `resampled[0]`; None until the first frame.
    next_ts48: Option<i64>,
    errors: u64,
}

impl AacToOpus {
    /// Creates a transcoder from an AudioSpecificConfig. Fails for AAC the decoder does not
    /// support (only AAC-LC mono/stereo; HE-AAC is refused) or when libopus is missing.
    pub fn new(asc: &[u8], bitrate: i32) -> Result<AacToOpus, String> {
        let mut params = AudioCodecParameters::new();
        params.for_codec(CODEC_ID_AAC).with_extra_data(asc.into());
        let dec = AacDecoder::try_new(&params, &AudioDecoderOptions::default())
            .map_err(|e| format!("AAC decoder: {e}"))?;
        let rate = dec.codec_params().sample_rate.unwrap_or(48000);
        let channels = dec
            .codec_params()
            .channels
            .as_ref()
            .map(|c| c.count())
            .unwrap_or(2)
            .clamp(1, 2);
        if !(8000..=96000).contains(&rate) {
            return Err(format!("AAC sample rate {rate} unsupported"));
        }
        let enc = OpusEncoder::new(channels, bitrate)?;
        Ok(AacToOpus {
            dec,
            enc,
            rs: Resampler::new(rate, channels),
            channels,
            pcm: Vec::new(),
            resampled: Vec::new(),
            next_ts48: None,
            errors: 0,
        })
    }

    /// Channels of the Opus output (1 or 2).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// AAC frames that failed to decode (skipped).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Forgets buffered audio, so the next frame starts a new timeline (after a
    /// discontinuity).
    pub fn reset(&mut self) {
        self.dec.reset();
        self.resampled.clear();
        self.next_ts48 = None;
    }

    /// Decodes one raw AAC frame with presentation time `ts48` (48 kHz units) and returns the
    /// Opus frames that became complete.
    pub fn push(&mut self, aac: &[u8], ts48: i64) -> Vec<OpusFrame> {
        let pkt = PacketRef::new(0, Timestamp::new(0), SDuration::new(1024), aac);
        match self.dec.decode_ref(&pkt) {
            Ok(buf) => {
                self.pcm.clear();
                buf.copy_to_vec_interleaved(&mut self.pcm);
            }
            Err(_) => {
                // A damaged frame is skipped; the timeline continues with the next one.
                self.errors += 1;
                return Vec::new();
            }
        }
        let decoded_ch = if self.pcm.is_empty() {
            self.channels
        } else {
            self.dec
                .codec_params()
                .channels
                .as_ref()
                .map(|c| c.count())
                .unwrap_or(self.channels)
                .max(1)
        };
        if decoded_ch != self.channels {
            // Mixed down or duplicated to the encoder's layout.
            let frames = self.pcm.len() / decoded_ch;
            let mut v = Vec::with_capacity(frames * self.channels);
            for f in 0..frames {
                let s = &self.pcm[f * decoded_ch..(f + 1) * decoded_ch];
                if self.channels == 1 {
                    v.push(s.iter().sum::<f32>() / decoded_ch as f32);
                } else {
                    v.push(s[0]);
                    v.push(*s.get(1).unwrap_or(&s[0]));
                }
            }
            self.pcm = v;
        }
        if self.next_ts48.is_none() {
            self.next_ts48 = Some(ts48);
        }
        let pcm = std::mem::take(&mut self.pcm);
        self.rs.process(&pcm, &mut self.resampled);
        self.pcm = pcm;
        let mut out = Vec::new();
        let n = 960 * self.channels;
        while self.resampled.len() >= n {
            let ts = self.next_ts48.unwrap_or(ts48);
            match self.enc.encode(&self.resampled[..n]) {
                Ok(data) => out.push(OpusFrame { ts48: ts, data }),
                Err(_) => self.errors += 1,
            }
            self.resampled.drain(..n);
            self.next_ts48 = Some(ts + 960);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampler_keeps_the_rate_ratio_across_calls() {
        let mut rs = Resampler::new(44100, 1);
        let mut out = Vec::new();
        let mut fed = 0usize;
        for _ in 0..100 {
            let input: Vec<f32> = (0..1024).map(|i| ((fed + i) as f32 * 0.01).sin()).collect();
            fed += 1024;
            rs.process(&input, &mut out);
        }
        let expect = fed as f64 * 48000.0 / 44100.0;
        assert!(
            (out.len() as f64 - expect).abs() < 3.0,
            "{} vs {expect}",
            out.len()
        );
        // A smooth input stays smooth: no jumps at call boundaries.
        let max_step = out
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0f32, f32::max);
        assert!(max_step < 0.02, "step {max_step}");
    }

    #[test]
    fn resampler_passes_48k_through() {
        let mut rs = Resampler::new(48000, 2);
        let mut out = Vec::new();
        rs.process(&[1.0, 2.0, 3.0, 4.0], &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn bad_audio_specific_config_is_an_error() {
        assert!(AacToOpus::new(&[], 64000).is_err());
        assert!(AacToOpus::new(&[0xff], 64000).is_err());
        // HE-AAC (object type 5) is refused, not mis-decoded.
        assert!(AacToOpus::new(&[0x2b, 0x92, 0x08, 0x00], 64000).is_err());
    }
}

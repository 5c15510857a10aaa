// Copyright (C) The Retina Authors
// SPDX-License-Identifier: MIT OR Apache-2.0

//! Opus as defined in [RFC 7587](https://datatracker.ietf.org/doc/html/rfc7587): one Opus
//! packet ([RFC 6716](https://datatracker.ietf.org/doc/html/rfc6716)) per RTP payload, a
//! 48 kHz RTP clock whatever the coded bandwidth, and `opus/48000/2` in the SDP whatever the
//! channel count actually sent.
//!
//! Added by framecache to its vendored copy (retina 0.4.21 has no Opus depacketizer).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::buf::PacketRef;

use super::{AudioParameters, CodecItem};

/// The RTP clock rate RFC 7587 §4.1 requires.
const CLOCK_RATE: u32 = 48_000;

/// RFC 7587 §4.2: the longest Opus packet lasts 120 ms.
const MAX_SAMPLES: u32 = 5_760;

#[derive(Debug)]
pub(crate) struct Depacketizer {
    parameters: AudioParameters,
    pending: Option<super::AudioFrame>,
    /// Packets dropped as malformed since the last frame handed out, reported as loss on
    /// the next one.
    dropped: u16,
}

impl Depacketizer {
    pub(super) fn new(
        clock_rate: u32,
        channels: Option<NonZeroU16>,
        format_specific_params: Option<&str>,
    ) -> Result<Self, String> {
        if clock_rate != CLOCK_RATE {
            return Err(format!(
                "Opus RTP clock rate must be {CLOCK_RATE} (RFC 7587), not {clock_rate}"
            ));
        }
        // The rtpmap always says 2 channels (RFC 7587 §7); `sprop-stereo=0` says the sender
        // sends mono. An Opus decoder set up for 2 channels decodes either.
        let stereo = !format_specific_params
            .unwrap_or("")
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("sprop-stereo=0"));
        let channels = match (stereo, channels.map(NonZeroU16::get)) {
            (false, _) => 1,
            (true, Some(c)) if c <= 2 => c,
            (true, _) => 2,
        };
        Ok(Self {
            parameters: AudioParameters {
                rfc6381_codec: Some("Opus".to_string()),
                frame_length: None, // variable: 2.5 to 120 ms per packet
                clock_rate,
                channels: NonZeroU16::new(channels).expect("1 or 2"),
                extra_data: opus_head(channels as u8),
                codec: super::AudioParametersCodec::Other,
            },
            pending: None,
            dropped: 0,
        })
    }

    pub(super) fn parameters(&self) -> Option<super::ParametersRef<'_>> {
        Some(super::ParametersRef::Audio(&self.parameters))
    }

    pub(super) fn push(&mut self, pkt: &PacketRef<'_>) -> Result<(), String> {
        assert!(self.pending.is_none());
        let (s1, s2) = pkt.payload().slices();
        let mut payload = Vec::with_capacity(usize::from(pkt.payload_len()));
        payload.extend_from_slice(s1);
        payload.extend_from_slice(s2);
        // A malformed packet is left out and counted as lost rather than ending the
        // session: an Opus decoder conceals a missing packet.
        let Some(frame_length) = samples(&payload).and_then(NonZeroU32::new) else {
            log::debug!(
                "dropping malformed Opus packet of {} bytes (seq {})",
                payload.len(),
                pkt.meta.sequence_number
            );
            self.dropped = self.dropped.saturating_add(1);
            return Ok(());
        };
        self.pending = Some(super::AudioFrame {
            loss: pkt.meta.loss.saturating_add(std::mem::take(&mut self.dropped)),
            ctx: pkt.meta.ctx,
            stream_id: pkt.meta.stream_id,
            timestamp: pkt.meta.timestamp,
            frame_length,
            data: Bytes::from(payload),
        });
        Ok(())
    }

    pub(super) fn pull(&mut self) -> Option<Result<CodecItem, super::DepacketizeError>> {
        self.pending.take().map(|f| Ok(CodecItem::AudioFrame(f)))
    }
}

/// The 48 kHz samples an Opus packet holds, from its TOC byte and frame count (RFC 6716
/// §3.1–3.2), or `None` for a packet that cannot be valid.
pub(crate) fn samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = u32::from(toc >> 3);
    let per_frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize], // SILK: 10/20/40/60 ms
        12..=15 => [480, 960][(config % 2) as usize],            // hybrid: 10/20 ms
        _ => [120, 240, 480, 960][(config % 4) as usize],        // CELT: 2.5/5/10/20 ms
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = per_frame * frames;
    (frames > 0 && total <= MAX_SAMPLES).then_some(total)
}

/// An `OpusHead` ([RFC 7845 §5.1](https://datatracker.ietf.org/doc/html/rfc7845#section-5.1))
/// for an RTP stream: no pre-skip is signalled over RTP, 48 kHz input, mapping family 0.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1); // version
    h.push(channels);
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&CLOCK_RATE.to_le_bytes()); // input sample rate
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_from_toc() {
        assert_eq!(samples(&[0xfc, 0xff]), Some(960)); // CELT FB 20 ms, one frame
        assert_eq!(samples(&[0x78]), Some(960)); // hybrid FB 20 ms (config 15)
        assert_eq!(samples(&[0x18]), Some(2880)); // SILK NB 60 ms (config 3)
        assert_eq!(samples(&[0x19]), Some(5760)); // two 60 ms frames
        assert_eq!(samples(&[0x83, 0x06]), Some(720)); // CELT 2.5 ms ×6 (code 3)
        assert_eq!(samples(&[0x1b, 0x03]), None); // 3 × 60 ms > 120 ms
        assert_eq!(samples(&[0x83, 0x00]), None); // code 3 with no frames
        assert_eq!(samples(&[0x83]), None); // code 3 without its count byte
        assert_eq!(samples(&[]), None);
    }

    #[test]
    fn parameters_and_refusals() {
        let d = Depacketizer::new(48_000, NonZeroU16::new(2), Some("sprop-stereo=1")).unwrap();
        let Some(super::super::ParametersRef::Audio(p)) = d.parameters() else {
            panic!("audio parameters");
        };
        assert_eq!(p.channels().get(), 2);
        assert_eq!(&p.extra_data()[..8], b"OpusHead");
        assert_eq!(p.extra_data()[9], 2);
        let d = Depacketizer::new(48_000, NonZeroU16::new(2), Some("sprop-stereo=0")).unwrap();
        let Some(super::super::ParametersRef::Audio(p)) = d.parameters() else {
            panic!("audio parameters");
        };
        assert_eq!(p.channels().get(), 1);
        assert!(Depacketizer::new(8_000, None, None).is_err());
    }
}

//! A public probe of an input URL (the seed's `Probe`): does it open and deliver media within a
//! time limit, and what: codecs, picture size, audio rate. For hosts that check a camera or a
//! feed before they add it.

use std::time::{Duration, Instant};

use framecache_media::{codec, Media};
use framecache_shm::error::{Error, Result};
use framecache_shm::packet::*;

use crate::input::{InputTimeouts, StopFlag};
use crate::pull::{run_input, InputUrl, Locations};

/// What a probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// `FC_CODEC_*` of each track, as the input announced them.
    pub codecs: Vec<u32>,
    /// Picture size of the first H.264 track (0 when unknown or none).
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Sample rate of the first AAC track (0 when unknown or none).
    pub sample_rate: u32,
    /// Its channels.
    pub channels: u32,
    /// Time from the start of the probe to the first access unit.
    pub first_media: Duration,
}

/// Opens `url` and reads it until every track has delivered a unit (with its parameters, for
/// the codecs that need them) or `timeout` passes, then leaves. An input that delivered media
/// gives its report (partial when the time ran out first); one that did not gives its error,
/// or [`Error::Timeout`].
pub fn probe(url: &str, at: &Locations, timeout: Duration) -> Result<ProbeReport> {
    let input = InputUrl::parse(url)?;
    let start = Instant::now();
    let t = InputTimeouts {
        connect: timeout,
        idle: timeout,
    };
    let stop = StopFlag::default();
    let mut rep = ProbeReport::default();
    let mut seen: Vec<bool> = Vec::new();
    let mut params: Vec<bool> = Vec::new();
    let mut got_media = false;
    let r = run_input(&input, at, t, &stop, &mut |m| {
        match m {
            Media::Tracks(tracks) => {
                rep.codecs = tracks.iter().map(|t| t.codec).collect();
                seen = vec![false; tracks.len()];
                params = vec![false; tracks.len()];
            }
            Media::AddTrack(track) => {
                rep.codecs.push(track.codec);
                seen.push(false);
                params.push(false);
            }
            Media::Params { track, data } => {
                match rep.codecs.get(track) {
                    Some(&FC_CODEC_H264) if rep.width == 0 => {
                        if let Some(i) = codec::h264_sps_info(&data) {
                            (rep.width, rep.height) = (i.width, i.height);
                        }
                    }
                    Some(&FC_CODEC_AAC) if rep.sample_rate == 0 => {
                        if let Some((rate, ch)) = codec::aac_config_info(&data) {
                            (rep.sample_rate, rep.channels) = (rate, u32::from(ch));
                        }
                    }
                    _ => {}
                }
                if let Some(p) = params.get_mut(track) {
                    *p = true;
                }
            }
            Media::Frame { track, .. } => {
                if !got_media {
                    got_media = true;
                    rep.first_media = start.elapsed();
                }
                if let Some(s) = seen.get_mut(track) {
                    *s = true;
                }
            }
        }
        let needs = |c: u32| matches!(c, FC_CODEC_H264 | FC_CODEC_HEVC | FC_CODEC_AAC);
        let complete = !seen.is_empty()
            && seen.iter().all(|&s| s)
            && rep
                .codecs
                .iter()
                .zip(&params)
                .all(|(&c, &p)| p || !needs(c));
        if complete {
            return Err(Error::State("probe complete"));
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout);
        }
        Ok(())
    });
    match r {
        _ if got_media => Ok(rep),
        Err(Error::State("probe complete")) => Ok(rep),
        Err(e) => Err(e),
        Ok(()) => Err(Error::Timeout),
    }
}

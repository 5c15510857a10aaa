//! The media model every source is converted to: tracks, codec parameters and access units,
//! independent of the protocol or container they came in.

use framecache_shm::Result;

/// One track of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// `FC_CODEC_*`.
    pub codec: u32,
    /// Timebase of the source's timestamps, e.g. (1, 1000) for RTMP.
    pub timebase: (u32, u32),
}

/// What a source delivers, independent of its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// The tracks the source will deliver, as far as it knows (PMT, FLV metadata). Track ids
    /// are indices into this list. Sources that cannot announce tracks send
    /// [`Media::AddTrack`] instead.
    Tracks(Vec<Track>),
    /// One more track, with id = number of tracks so far.
    AddTrack(Track),
    /// Codec parameters of a track (Annex-B parameter sets, AudioSpecificConfig, OpusHead).
    Params {
        /// Track id.
        track: usize,
        /// The parameters.
        data: Vec<u8>,
    },
    /// One access unit.
    Frame {
        /// Track id.
        track: usize,
        /// Presentation time in the track's timebase (`FC_NOPTS` = none).
        pts: i64,
        /// Decoding time in the track's timebase (`FC_NOPTS` = none).
        dts: i64,
        /// Random-access point.
        keyframe: bool,
        /// Data was lost before this unit.
        discontinuity: bool,
        /// The unit, in the packet ring's format.
        data: Vec<u8>,
    },
}

/// One access unit, borrowed: [`SlotSink::push_frame`] writes it into the slot without an
/// owned copy (the RTMP publish path). Fields as in [`Media::Frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Track id.
    pub track: usize,
    /// Presentation time in the track's timebase (`FC_NOPTS` = none).
    pub pts: i64,
    /// Decoding time in the track's timebase (`FC_NOPTS` = none).
    pub dts: i64,
    /// Random-access point.
    pub keyframe: bool,
    /// Data was lost before this unit.
    pub discontinuity: bool,
    /// The unit, in the packet ring's format.
    pub data: &'a [u8],
}

impl FrameRef<'_> {
    /// An owned copy, as [`Media::Frame`].
    pub fn to_media(self) -> Media {
        Media::Frame {
            track: self.track,
            pts: self.pts,
            dts: self.dts,
            keyframe: self.keyframe,
            discontinuity: self.discontinuity,
            data: self.data.to_vec(),
        }
    }
}

/// Where an input's media go; an error from it stops the input.
pub type MediaOut<'a> = &'a mut dyn FnMut(Media) -> Result<()>;

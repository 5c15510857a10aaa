//! The ingest engine: a live source becomes a packet slot.
//!
//! - [`sink`]: source-neutral media → packet slot ([`SlotSink`]), events and counters.
//! - [`flv`]: FLV tag bodies (RTMP, FLV files) ↔ access units.
//! - [`chunk`]: the inbound RTMP chunk stream (the publish hot path).
//! - [`registry`]: stream keys of the push listeners, one pusher per key.
//! - [`push`]: what the push listeners share: settings, the life of one accepted pusher.
//! - [`rtmp`]: the RTMP server (publish and play).
//! - [`srt`]: SRT through libsrt (loaded at run time): the listener and the caller.
//! - [`mp4`]: MP4, fragmented (HLS fMP4 segments) or progressive (files) → access units.
//! - [`pull`]: pull inputs (UDP, SRT, RTMP, HLS, files, other slots).
//! - [`engine`]: listeners, keys, mounts and pull ingests with failover, in one [`Engine`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub mod chunk;
pub mod engine;
pub mod flv;
pub mod http;
pub mod mp4;
pub mod pull;
pub(crate) mod pump;
pub mod push;
pub mod registry;
pub mod rtmp;
pub mod sink;
pub mod srt;

pub use engine::{Endpoint, Engine, PullConfig, PullIngest};
pub use pull::{InputTimeouts, InputUrl, Mounts};

pub use registry::{KeyConfig, KeyRegistry, PushGuard};
pub use sink::{
    EventCallback, FrameRef, IngestEvent, IngestStats, Media, MediaInfo, SinkOptions, SlotSink,
    StatsSnapshot, Track,
};

/// Counters per stream key (push) or ingest name (pull), shared by the listeners.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    inner: Arc<Mutex<HashMap<String, Arc<IngestStats>>>>,
}

impl Streams {
    /// An empty table.
    pub fn new() -> Streams {
        Streams::default()
    }

    /// The counters of `name`, created on first use.
    pub fn stats_for(&self, name: &str) -> Arc<IngestStats> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The counters of `name`, if it ever ran.
    pub fn get(&self, name: &str) -> Option<Arc<IngestStats>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// A snapshot of every stream's counters, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, StatsSnapshot)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = g.iter().map(|(k, s)| (k.clone(), s.snapshot())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

//! framecache-ingest, the ingest engine: a live source becomes a packet slot.
//!
//! **Owns**: the I/O of every input (sockets, files, threads, the tokio runtime of the push
//! listeners), stream keys, failover, RTMP play egress, and the sink that turns media into a
//! packet slot. The formats themselves (TS, FLV, MP4, HLS playlists, the RTMP chunk stream) are
//! `framecache-media`'s; they are re-exported here under their old paths.
//!
//! **May import**: `framecache-shm`, `framecache-media`, tokio, rustls, rml_rtmp, retina, libc (libsrt is
//! loaded at run time). Not `framecache-whep`, `framecache-cuda` or the C ABI. It never prints:
//! diagnostics go through `log`.
//!
//! - [`sink`]: source-neutral media → packet slot ([`SlotSink`]), events and counters.
//! - [`input`]: what every pull input shares (media out, stop flag, time limits).
//! - [`observe`]: the engine's callbacks (engine-wide, per slot) and the packet-event switch.
//! - [`registry`]: stream keys of the push listeners, one pusher per key.
//! - [`push`]: what the push listeners share: settings, the life of one accepted pusher.
//! - [`rtmp`]: the RTMP server (publish and play).
//! - [`srt`]: SRT through libsrt (loaded at run time): the listener and the caller.
//! - [`rtsp`]: RTSP pull through retina (URL, stream choice, frames → media).
//! - [`share`]: one slot fed by a push key and pull inputs by priority.
//! - [`probe`]: does an input URL open and deliver media, and what.
//! - [`pull`]: pull inputs (UDP, SRT, RTMP, HLS, files, other slots).
//! - [`failover`]: the failover policy of a pull ingest (sans-IO, driven by `now`).
//! - [`egress`]: a packet slot as MPEG-TS (export, `cat`, SRT play).
//! - [`engine`]: listeners, keys, mounts and pull ingests with failover, in one [`Engine`].

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use framecache_media::{chunk, flv, mp4};

pub mod egress;
pub mod engine;
pub mod failover;
pub mod http;
pub mod input;
pub mod observe;
pub mod probe;
pub mod pull;
pub(crate) mod pump;
pub mod push;
pub mod registry;
pub mod rtmp;
pub mod rtsp;
pub mod share;
pub mod sink;
pub mod srt;
pub mod url;

pub use engine::{Endpoint, Engine, PullConfig, PullIngest};
pub use pull::{InputTimeouts, InputUrl, Locations, Mounts};

pub use framecache_media::{FrameRef, Media, Track};
pub use registry::{KeyConfig, KeyRegistry, PushGuard};
pub use sink::{
    EventCallback, IngestEvent, IngestStats, MediaInfo, SinkOptions, SlotSink, StatsSnapshot,
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

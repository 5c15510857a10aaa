//! What the push listeners (RTMP, SRT) share: their settings and the life of one accepted
//! pusher (key held, slot fed, connect and disconnect reported, counters kept).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::registry::{KeyRegistry, PushGuard};
use crate::sink::{EventCallback, IngestEvent, SinkOptions, SlotSink};
use crate::Streams;
use framecache_shm::error::Result;

/// Settings of a push listener.
#[derive(Clone)]
pub struct PushConfig {
    /// Keys that may publish.
    pub registry: KeyRegistry,
    /// How publish slots are created (the source type names the protocol).
    pub sink: SinkOptions,
    /// Events of every publish.
    pub events: Option<EventCallback>,
    /// Root directory of slots (None = the default).
    pub root: Option<PathBuf>,
}

impl PushConfig {
    /// Publish through `registry` into slots labelled `source_type`.
    pub fn new(registry: KeyRegistry, source_type: &str) -> PushConfig {
        PushConfig {
            registry,
            sink: SinkOptions {
                source_type: source_type.into(),
                ..SinkOptions::default()
            },
            events: None,
            root: None,
        }
    }
}

/// One accepted pusher: holds its key and feeds the key's slot until [`PushSession::finish`].
pub struct PushSession {
    guard: PushGuard,
    sink: SlotSink,
    input: String,
    events: Option<EventCallback>,
}

impl PushSession {
    /// Starts feeding the slot of `guard`'s key for the pusher described by `input` (its URL
    /// form, for events and logs): counts a reconnect when the key had delivered before,
    /// marks it connected and reports `Connected`.
    pub fn start(
        cfg: &PushConfig,
        streams: &Streams,
        guard: PushGuard,
        input: String,
    ) -> Result<PushSession> {
        let stats = streams.stats_for(guard.key());
        let slot = guard.config().slot.clone();
        let mut sink = SlotSink::new(cfg.root.as_deref(), &slot, cfg.sink.clone(), stats.clone())?;
        sink.set_events(cfg.events.clone(), false);
        if stats.packets.load(Ordering::Relaxed) > 0 {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        stats.connected.store(true, Ordering::Relaxed);
        if let Some(cb) = &cfg.events {
            cb(&IngestEvent::Connected {
                input: input.clone(),
            });
        }
        log::info!("{input} publishes into slot {slot}");
        Ok(PushSession {
            guard,
            sink,
            input,
            events: cfg.events.clone(),
        })
    }

    /// The key pushed to.
    pub fn key(&self) -> &str {
        self.guard.key()
    }

    /// The sink the pusher's media go to.
    pub fn sink(&mut self) -> &mut SlotSink {
        &mut self.sink
    }

    /// Ends the push: closes the slot, marks the key disconnected, reports `Disconnected`
    /// with `reason` and releases the key.
    pub fn finish(mut self, reason: String) {
        self.sink.end_session(true);
        self.sink.stats().connected.store(false, Ordering::Relaxed);
        if let Some(cb) = &self.events {
            cb(&IngestEvent::Disconnected {
                input: self.input.clone(),
                reason,
            });
        }
    }
}

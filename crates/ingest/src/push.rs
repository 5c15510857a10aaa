//! What the push listeners (RTMP, SRT) share: their settings and the life of one accepted
//! pusher (key held, slot fed, connect and disconnect reported, counters kept).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::registry::{KeyRegistry, PushGuard};
use crate::share::SharedFeed;
use crate::sink::{EventCallback, IngestEvent, IngestStats, SinkOptions, SlotSink};
use crate::Streams;
use framecache_media::{FrameRef, Media, PushGate, PushRefusal, PushRequest};
use framecache_shm::error::Result;
use framecache_shm::slot;

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

/// Where a pusher's media go: a slot of its own, or a slot it shares by priority with pull
/// inputs (see [`crate::share`]).
enum Feed {
    Own(Box<SlotSink>),
    Shared(SharedFeed),
}

/// One accepted pusher: holds its key and feeds the key's slot until [`PushSession::finish`].
pub struct PushSession {
    guard: PushGuard,
    feed: Feed,
    stats: Arc<IngestStats>,
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
        let feed = match &guard.config().feed {
            Some(f) => {
                f.share.claim(f.priority);
                Feed::Shared(f.clone())
            }
            None => {
                let mut sink =
                    SlotSink::new(cfg.root.as_deref(), &slot, cfg.sink.clone(), stats.clone())?;
                sink.set_events(cfg.events.clone(), false);
                Feed::Own(Box::new(sink))
            }
        };
        if stats.packets.load(Ordering::Relaxed) > 0 {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        stats.connected.store(true, Ordering::Relaxed);
        stats.connected_input(&input);
        if let Some(cb) = &cfg.events {
            cb(&IngestEvent::Connected {
                slot: slot.clone(),
                input: input.clone(),
            });
        }
        log::info!("{input} publishes into slot {slot}");
        Ok(PushSession {
            guard,
            feed,
            stats,
            input,
            events: cfg.events.clone(),
        })
    }

    /// The key pushed to.
    pub fn key(&self) -> &str {
        self.guard.key()
    }

    /// The key's counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// Fails once the operator kicked the pusher ([`KeyRegistry::kick`]).
    fn check_kicked(&self) -> Result<()> {
        if self.guard.kicked() {
            return Err(framecache_shm::error::Error::Rejected(
                "the operator ended this publish".into(),
            ));
        }
        Ok(())
    }

    /// One media item of the pusher (see [`SlotSink::push`]).
    pub fn push(&mut self, m: Media) -> Result<()> {
        self.check_kicked()?;
        match &mut self.feed {
            Feed::Own(s) => s.push(m),
            Feed::Shared(f) => f.share.offer(f.priority, m),
        }
    }

    /// One borrowed access unit (see [`SlotSink::push_frame`]); a shared slot takes a copy.
    pub fn push_frame(&mut self, fr: FrameRef<'_>) -> Result<()> {
        self.check_kicked()?;
        match &mut self.feed {
            Feed::Own(s) => s.push_frame(fr),
            Feed::Shared(f) => f.share.offer(f.priority, fr.to_media()),
        }
    }

    /// See [`SlotSink::set_defer_wake`] (a shared slot wakes its readers per packet).
    pub fn set_defer_wake(&mut self, on: bool) {
        if let Feed::Own(s) = &mut self.feed {
            s.set_defer_wake(on);
        }
    }

    /// See [`SlotSink::flush`].
    pub fn flush(&mut self) {
        match &mut self.feed {
            Feed::Own(s) => s.flush(),
            Feed::Shared(f) => f.share.flush(),
        }
    }

    /// Ends the push: closes the slot (a shared slot goes to the next live input), marks the
    /// key disconnected, reports `Disconnected` with `reason` and releases the key.
    pub fn finish(mut self, reason: String) {
        match &mut self.feed {
            Feed::Own(s) => s.end_session(true),
            Feed::Shared(f) => f.share.release(f.priority),
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        if let Some(cb) = &self.events {
            cb(&IngestEvent::Disconnected {
                slot: self.guard.config().slot.clone(),
                input: self.input.clone(),
                reason,
            });
        }
    }
}

impl framecache_media::PushSink for PushSession {
    fn push(&mut self, m: Media) -> Result<()> {
        PushSession::push(self, m)
    }

    fn finish(self: Box<Self>, reason: String) {
        PushSession::finish(*self, reason)
    }
}

/// A [`PushGate`] over `cfg`'s key registry, for pushers of a protocol the ingest engine does
/// not speak itself (WHIP in the WHEP engine): a key with a passphrase needs it as the
/// credential; one pusher per key; refusals are reported as [`IngestEvent::Refused`].
pub fn gate(cfg: PushConfig, streams: Streams) -> PushGate {
    Arc::new(move |req: &PushRequest<'_>| {
        let input = format!("{}://{}/{}", req.protocol, req.peer, req.key);
        let refuse = |r: PushRefusal| {
            if let Some(cb) = &cfg.events {
                cb(&IngestEvent::Refused {
                    slot: cfg
                        .registry
                        .lookup(req.key)
                        .map(|c| c.slot)
                        .unwrap_or_default(),
                    input: input.clone(),
                    reason: r.to_string(),
                });
            }
            log::info!("{input} refused: {r}");
            r
        };
        let key = crate::registry::normalize_key(req.key);
        match cfg.registry.lookup(key) {
            Some(k) => {
                let want = k.passphrase.as_deref();
                if want.is_some() && !framecache_media::credential::admits(req.credential, &[want])
                {
                    return Err(refuse(PushRefusal::Credential(key.into())));
                }
            }
            None if cfg.registry.allow_any() && slot::validate_id(key).is_ok() => {}
            None => return Err(refuse(PushRefusal::UnknownKey(key.into()))),
        }
        let guard = cfg.registry.acquire(key, req.peer).map_err(|e| {
            refuse(match cfg.registry.holder(key) {
                Some(holder) => PushRefusal::Busy {
                    key: key.into(),
                    holder,
                },
                None => PushRefusal::Failed(e.to_string()),
            })
        })?;
        let session = PushSession::start(&cfg, &streams, guard, input.clone())
            .map_err(|e| refuse(PushRefusal::Failed(e.to_string())))?;
        Ok(Box::new(session) as Box<dyn framecache_media::PushSink>)
    })
}

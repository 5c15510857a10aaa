//! Observers of an engine: one callback for everything and one per slot, and the switch of
//! per-packet events. The engine hands every listener, pusher and pull ingest the same
//! [`Observers`], so a callback set or changed later applies at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::sink::{EventCallback, IngestEvent};

/// The callbacks of an engine.
#[derive(Default)]
pub struct Observers {
    all: RwLock<Option<EventCallback>>,
    per_slot: RwLock<HashMap<String, EventCallback>>,
    packets: Arc<AtomicBool>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("packets", &self.packets.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Observers {
    /// No callbacks, packet events off.
    pub fn new() -> Arc<Observers> {
        Arc::default()
    }

    /// The engine-wide callback (None = none).
    pub fn set_all(&self, cb: Option<EventCallback>) {
        *self.all.write().unwrap_or_else(|e| e.into_inner()) = cb;
    }

    /// The callback of `slot`'s events (None = none), beside the engine-wide one.
    pub fn set_slot(&self, slot: &str, cb: Option<EventCallback>) {
        let mut g = self.per_slot.write().unwrap_or_else(|e| e.into_inner());
        match cb {
            Some(cb) => {
                g.insert(slot.to_string(), cb);
            }
            None => {
                g.remove(slot);
            }
        }
    }

    /// Per-packet events on or off (off by default: they cost a call per packet).
    pub fn set_packets(&self, on: bool) {
        self.packets.store(on, Ordering::Relaxed);
    }

    /// The switch the sinks read.
    pub fn packet_switch(&self) -> Arc<AtomicBool> {
        self.packets.clone()
    }

    /// Delivers `ev` to the engine-wide callback and to its slot's.
    pub fn emit(&self, ev: &IngestEvent) {
        let all = self.all.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(cb) = all {
            cb(ev);
        }
        let one = self
            .per_slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ev.slot())
            .cloned();
        if let Some(cb) = one {
            cb(ev);
        }
    }

    /// A callback that delivers to these observers, for the parts of the engine.
    pub fn callback(self: &Arc<Self>) -> EventCallback {
        let me = self.clone();
        Arc::new(move |ev: &IngestEvent| me.emit(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn engine_wide_and_per_slot_callbacks() {
        let o = Observers::new();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let cb = o.callback();
        let ev = |slot: &str| IngestEvent::Connected {
            slot: slot.into(),
            input: "x".into(),
        };
        cb(&ev("a")); // nobody listens yet
        let s = seen.clone();
        o.set_all(Some(Arc::new(move |e: &IngestEvent| {
            s.lock().unwrap().push(format!("all:{}", e.slot()))
        })));
        let s = seen.clone();
        o.set_slot(
            "b",
            Some(Arc::new(move |e: &IngestEvent| {
                s.lock().unwrap().push(format!("b:{}", e.slot()))
            })),
        );
        cb(&ev("a"));
        cb(&ev("b"));
        o.set_slot("b", None);
        cb(&ev("b"));
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["all:a", "all:b", "b:b", "all:b"]
        );
        assert!(!o.packet_switch().load(Ordering::Relaxed));
        o.set_packets(true);
        assert!(o.packet_switch().load(Ordering::Relaxed));
    }
}

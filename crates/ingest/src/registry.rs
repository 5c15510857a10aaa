//! Stream keys of the push listeners (RTMP, SRT): which keys exist, which slot each feeds, its
//! passphrase, and who is pushing to it right now (at most one pusher per key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use framecache_shm::error::{Error, Result};
use framecache_shm::slot;

/// What a key leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    /// Packet slot the pusher feeds (and RTMP play of the key reads).
    pub slot: String,
    /// SRT passphrase (10..=79 bytes) required from SRT pushers of this key.
    pub passphrase: Option<String>,
    /// Set when the key shares its slot with pull inputs by priority (see [`crate::share`]).
    pub feed: Option<crate::share::SharedFeed>,
}

impl KeyConfig {
    /// A key feeding `slot`, no passphrase.
    pub fn new(slot: &str) -> KeyConfig {
        KeyConfig {
            slot: slot.to_string(),
            passphrase: None,
            feed: None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    config: KeyConfig,
    /// Peer currently pushing, and a token telling its guard from a later one.
    holder: Option<(String, u64)>,
    /// Set to end the current pusher (its guard sees it).
    kicked: Arc<std::sync::atomic::AtomicBool>,
    /// Created by an allow-any acquire; removed when its pusher leaves.
    implicit: bool,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, Entry>,
    /// Accept keys that were not registered (each feeds the slot of the same name).
    allow_any: bool,
    next_token: u64,
}

/// The key registry, shared by the listeners. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct KeyRegistry {
    inner: Arc<Mutex<Inner>>,
}

/// Holds a key for one pusher; dropping it releases the key.
#[derive(Debug)]
pub struct PushGuard {
    registry: KeyRegistry,
    key: String,
    token: u64,
    config: KeyConfig,
    kicked: Arc<std::sync::atomic::AtomicBool>,
}

impl PushGuard {
    /// Whether the operator asked this pusher to go ([`KeyRegistry::kick`]).
    pub fn kicked(&self) -> bool {
        self.kicked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key's configuration at acquire time.
    pub fn config(&self) -> &KeyConfig {
        &self.config
    }
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        let mut g = self.registry.lock();
        let mut remove = false;
        if let Some(e) = g.keys.get_mut(&self.key) {
            if e.holder.as_ref().is_some_and(|h| h.1 == self.token) {
                e.holder = None;
                remove = e.implicit;
            }
        }
        if remove {
            g.keys.remove(&self.key);
        }
    }
}

/// The key alone: without a query string, and without an application path in front
/// (`live/cam1` → `cam1`), so RTMP's app name and SRT's `r=app/key` do not matter.
pub fn normalize_key(key: &str) -> &str {
    let k = key.split('?').next().unwrap_or("");
    let k = k.trim_matches('/');
    k.rsplit('/').next().unwrap_or(k)
}

impl KeyRegistry {
    /// An empty registry that accepts only registered keys.
    pub fn new() -> KeyRegistry {
        KeyRegistry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts unregistered keys too, each feeding the slot of its own name (the key must then
    /// be a valid slot id). Meant for loopback-only setups.
    pub fn set_allow_any(&self, allow: bool) {
        self.lock().allow_any = allow;
    }

    /// Whether unregistered keys are accepted.
    pub fn allow_any(&self) -> bool {
        self.lock().allow_any
    }

    /// Registers (or reconfigures) a key. The slot id and passphrase are checked here.
    pub fn register(&self, key: &str, config: KeyConfig) -> Result<()> {
        let key = normalize_key(key);
        if key.is_empty() || key.len() > 256 {
            return Err(Error::InvalidArg("stream key must be 1..=256 bytes".into()));
        }
        slot::validate_id(&config.slot)?;
        if let Some(p) = &config.passphrase {
            if !(10..=79).contains(&p.len()) {
                return Err(Error::InvalidArg(
                    "SRT passphrase must be 10..=79 bytes".into(),
                ));
            }
        }
        let mut g = self.lock();
        match g.keys.get_mut(key) {
            Some(e) => {
                e.config = config;
                e.implicit = false;
            }
            None => {
                g.keys.insert(
                    key.to_string(),
                    Entry {
                        config,
                        holder: None,
                        kicked: Default::default(),
                        implicit: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// Removes a key; a live pusher keeps going until it disconnects. True if it existed.
    pub fn unregister(&self, key: &str) -> bool {
        self.lock().keys.remove(normalize_key(key)).is_some()
    }

    /// The configuration of a key, without side effects. In allow-any mode an unregistered key
    /// that is a valid slot id maps to that slot.
    pub fn lookup(&self, key: &str) -> Option<KeyConfig> {
        let key = normalize_key(key);
        let g = self.lock();
        if let Some(e) = g.keys.get(key) {
            return Some(e.config.clone());
        }
        (g.allow_any && slot::validate_id(key).is_ok()).then(|| KeyConfig::new(key))
    }

    /// Who pushes to `key` now, if anyone.
    pub fn holder(&self, key: &str) -> Option<String> {
        self.lock()
            .keys
            .get(normalize_key(key))
            .and_then(|e| e.holder.as_ref().map(|h| h.0.clone()))
    }

    /// Whether a registered key feeds slot `slot` (a stream that exists before its pusher).
    pub fn feeds_slot(&self, slot: &str) -> bool {
        self.lock().keys.values().any(|e| e.config.slot == slot)
    }

    /// Registered keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.lock().keys.keys().cloned().collect();
        k.sort();
        k
    }

    /// Takes `key` for `peer`: [`Error::Rejected`] when the key is unknown or another pusher
    /// holds it (the message names which).
    pub fn acquire(&self, key: &str, peer: &str) -> Result<PushGuard> {
        let key = normalize_key(key).to_string();
        let mut g = self.lock();
        g.next_token += 1;
        let token = g.next_token;
        if !g.keys.contains_key(&key) {
            if !(g.allow_any && slot::validate_id(&key).is_ok()) {
                return Err(Error::Rejected(format!("unknown stream key {key:?}")));
            }
            let entry = Entry {
                config: KeyConfig::new(&key),
                holder: None,
                kicked: Default::default(),
                implicit: true,
            };
            g.keys.insert(key.clone(), entry);
        }
        let e = g.keys.get_mut(&key).expect("present");
        if let Some((h, _)) = &e.holder {
            return Err(Error::Rejected(format!(
                "stream key {key:?} is already being pushed by {h}"
            )));
        }
        e.holder = Some((peer.to_string(), token));
        e.kicked = Default::default();
        Ok(PushGuard {
            registry: self.clone(),
            key,
            token,
            config: e.config.clone(),
            kicked: e.kicked.clone(),
        })
    }

    /// Ends the current pusher of `key`: its next media item fails, which closes its
    /// connection and frees the key. False when nobody pushes to it.
    pub fn kick(&self, key: &str) -> bool {
        let g = self.lock();
        match g.keys.get(normalize_key(key)) {
            Some(e) if e.holder.is_some() => {
                e.kicked.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pusher_per_key() {
        let r = KeyRegistry::new();
        r.register("cam1", KeyConfig::new("slot1")).unwrap();
        assert!(matches!(r.acquire("nope", "a"), Err(Error::Rejected(_))));
        let g = r.acquire("live/cam1?token=x", "peer-a").unwrap();
        assert_eq!(g.config().slot, "slot1");
        assert_eq!(r.holder("cam1").as_deref(), Some("peer-a"));
        let Err(Error::Rejected(why)) = r.acquire("cam1", "peer-b") else {
            panic!("second pusher accepted")
        };
        assert!(why.contains("peer-a"), "{why}");
        // Lookup has no side effect.
        assert_eq!(r.lookup("cam1").unwrap().slot, "slot1");
        drop(g);
        assert_eq!(r.holder("cam1"), None);
        let _g2 = r.acquire("cam1", "peer-b").unwrap();
    }

    #[test]
    fn allow_any_and_checks() {
        let r = KeyRegistry::new();
        assert!(r.lookup("x").is_none());
        r.set_allow_any(true);
        assert_eq!(r.lookup("x").unwrap().slot, "x");
        assert!(r.lookup("bad key!").is_none());
        let g = r.acquire("x", "p").unwrap();
        assert!(matches!(r.acquire("x", "q"), Err(Error::Rejected(_))));
        assert_eq!(r.keys(), vec!["x".to_string()]);
        drop(g);
        assert!(
            r.keys().is_empty(),
            "implicit key removed after its pusher left"
        );
        let mut c = KeyConfig::new("s");
        c.passphrase = Some("short".into());
        assert!(r.register("k", c).is_err());
        assert!(r.register("k", KeyConfig::new("bad/slot")).is_err());
        // A stale guard does not release a newer holder.
        r.register("k", KeyConfig::new("s")).unwrap();
        let g1 = r.acquire("k", "one").unwrap();
        assert!(r.unregister("k"));
        r.register("k", KeyConfig::new("s")).unwrap();
        let _g2 = r.acquire("k", "two").unwrap();
        drop(g1);
        assert_eq!(r.holder("k").as_deref(), Some("two"));
    }
}

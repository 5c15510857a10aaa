//! The operator's control API of `serve`: JSON under `/api/v1/`, behind `[api] token` (the
//! operator token, apart from the viewer token). Lists streams with their publishers and
//! viewers, adds and removes pull inputs and stream keys at run time, ends a publisher or a
//! viewer, and reloads the configuration file (also on SIGHUP) without touching what did not
//! change. `docs/openapi.json` describes it; `tests/api.rs` checks the server against it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use framecache::ingest::registry::KeyConfig;
use framecache::ingest::{Engine, InputTimeouts, Streams};
use framecache::whep::http::{HttpRequest, Page};
use framecache::whep::WhepEngine;
use serde_json::{json, Value};

/// The OpenAPI description, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

/// A stream key as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Slot it feeds.
    pub slot: String,
    /// SRT passphrase / WHIP bearer token.
    pub passphrase: Option<String>,
}

/// A slot's pull inputs as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// URLs, highest priority first.
    pub urls: Vec<String>,
    /// Connect and idle limit of each input, ms.
    pub timeout_ms: Option<u64>,
}

/// Keys and inputs as they are applied now (from the file and from the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// By key.
    pub keys: BTreeMap<String, KeySpec>,
    /// By slot.
    pub inputs: BTreeMap<String, InputSpec>,
}

/// The control API's state.
pub struct Api {
    token: Option<String>,
    root: PathBuf,
    ingest: Arc<Mutex<Engine>>,
    streams: Streams,
    plays: Arc<framecache::ingest::rtmp::Plays>,
    whep: WhepEngine,
    config: Option<PathBuf>,
    applied: Mutex<Applied>,
}

fn page(status: u16, v: Value) -> Option<Page> {
    Some(Page {
        status,
        content_type: "application/json",
        body: v.to_string().into_bytes(),
    })
}

fn bad(field: &str, why: &str) -> Option<Page> {
    page(
        400,
        json!({"error": format!("{field}: {why}"), "field": field}),
    )
}

fn not_found(what: &str) -> Option<Page> {
    page(404, json!({"error": format!("no {what}")}))
}

/// Adds (or replaces) the pull inputs of `slot` in `e`.
pub fn add_input(e: &mut Engine, slot: &str, spec: &InputSpec) -> framecache::Result<()> {
    let urls: Vec<&str> = spec.urls.iter().map(String::as_str).collect();
    let mut t = InputTimeouts::default();
    if let Some(ms) = spec.timeout_ms {
        t.connect = Duration::from_millis(ms);
        t.idle = Duration::from_millis(ms);
    }
    e.add_with_timeouts(slot, &urls, t)
}

/// Registers (or changes) `key` in `e`.
pub fn add_key(e: &Engine, key: &str, spec: &KeySpec) -> framecache::Result<()> {
    let mut kc = KeyConfig::new(&spec.slot);
    kc.passphrase = spec.passphrase.clone();
    e.registry().register(key, kc)
}

impl Api {
    /// The API over `ingest` and `whep`, with `applied` as what the configuration set up.
    pub fn new(
        token: Option<String>,
        root: PathBuf,
        ingest: Arc<Mutex<Engine>>,
        whep: WhepEngine,
        config: Option<PathBuf>,
        applied: Applied,
    ) -> Api {
        let (streams, plays) = {
            let e = ingest.lock().unwrap_or_else(|e| e.into_inner());
            (e.streams().clone(), e.plays().clone())
        };
        Api {
            token,
            root,
            ingest,
            streams,
            plays,
            whep,
            config,
            applied: Mutex::new(applied),
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.ingest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a request under `/api/v1/`; `None` for other paths.
    pub fn handle(&self, req: &HttpRequest) -> Option<Page> {
        let path = req.path.split(['?', '#']).next().unwrap_or("");
        let rest = path.strip_prefix("/api/v1/")?;
        let segs: Vec<&str> = rest.split('/').collect();
        let method = req.method.as_str();
        if (method, rest) == ("GET", "openapi.json") {
            return Some(Page {
                status: 200,
                content_type: "application/json",
                body: OPENAPI.as_bytes().to_vec(),
            });
        }
        let Some(token) = self.token.as_deref() else {
            return page(
                403,
                json!({"error": "the control API is off: set [api] token in the configuration"}),
            );
        };
        let given = framecache::media::credential::bearer(req.authorization.as_deref());
        if !framecache::media::credential::admits(given, &[Some(token)]) {
            return page(
                401,
                json!({"error": "the operator token is required: Authorization: Bearer TOKEN"}),
            );
        }
        match (method, segs.as_slice()) {
            ("GET", ["streams"]) => page(200, self.streams()),
            ("POST", ["inputs"]) => self.post_input(&req.body),
            ("DELETE", ["inputs", slot]) => {
                let had = self.applied().inputs.remove(*slot).is_some();
                // Engine::remove also unregisters the keys that feed the slot.
                let removed = self.engine().remove(slot);
                self.applied().keys.retain(|_, k| k.slot != *slot);
                if had | removed {
                    page(200, json!({"removed": slot}))
                } else {
                    not_found(&format!("pull inputs of slot {slot:?}"))
                }
            }
            ("POST", ["keys"]) => self.post_key(&req.body),
            ("DELETE", ["keys", key]) => {
                let e = self.engine();
                let kicked = e.registry().kick(key);
                if e.registry().unregister(key) {
                    self.applied().keys.remove(*key);
                    page(200, json!({"removed": key, "publisher_ended": kicked}))
                } else {
                    not_found(&format!("stream key {key:?}"))
                }
            }
            ("DELETE", ["publishers", key]) => {
                if self.engine().registry().kick(key) {
                    page(200, json!({"ended": key}))
                } else {
                    not_found(&format!("publisher of key {key:?}"))
                }
            }
            ("DELETE", ["viewers", id]) => {
                if self.whep.kick(id) || self.plays.kick(id) {
                    page(200, json!({"ended": id}))
                } else {
                    not_found(&format!("viewer {id:?}"))
                }
            }
            ("POST", ["reload"]) => match self.reload() {
                Ok(v) => page(200, v),
                Err(e) => page(400, json!({"error": e, "field": "config"})),
            },
            (_, ["streams"] | ["inputs"] | ["keys"] | ["reload"])
            | (_, ["inputs" | "keys" | "publishers" | "viewers", _]) => {
                page(405, json!({"error": format!("{method} is not taken here")}))
            }
            _ => not_found(&format!("API path {path:?}")),
        }
    }

    /// Every slot with its publisher (the connected input) and its WebRTC viewers and
    /// publishers.
    fn streams(&self) -> Value {
        let root = &self.root;
        let peers = self.whep.peers();
        let plays = self.plays.list();
        let applied = self.applied().clone();
        let mut out = Vec::new();
        let ids: Vec<String> = framecache::packet::list_slots(root)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .chain(applied.inputs.keys().cloned())
            .chain(applied.keys.values().map(|k| k.slot.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in ids {
            let live = framecache::packet::slot_info(root, &id).is_ok();
            let stats = self.streams.get(&id);
            let publisher = stats.as_ref().filter(|s| s.connected.load(std::sync::atomic::Ordering::Relaxed)).map(|s| {
                let input = s.input();
                let protocol = input.split("://").next().unwrap_or("").to_string();
                json!({
                    "protocol": protocol,
                    "input": input,
                    "since_ms": s.since_ns.load(std::sync::atomic::Ordering::Relaxed) / 1_000_000,
                    "bytes": s.bytes.load(std::sync::atomic::Ordering::Relaxed),
                })
            });
            let viewers: Vec<Value> = peers
                .iter()
                .filter(|p| p.stream == id && p.protocol == "whep")
                .map(|p| json!({"id": p.id, "protocol": p.protocol, "peer": p.peer, "since_ms": p.since_ms, "bytes": p.bytes}))
                .chain(plays.iter().filter(|p| p.slot == id).map(|p| {
                    json!({"id": p.id, "protocol": p.protocol, "peer": p.peer,
                           "since_ms": p.since_ns / 1_000_000, "bytes": p.bytes})
                }))
                .collect();
            let keys: Vec<&String> = applied
                .keys
                .iter()
                .filter(|(_, k)| k.slot == id)
                .map(|(k, _)| k)
                .collect();
            out.push(json!({
                "id": id,
                "live": live,
                "keys": keys,
                "inputs": applied.inputs.get(&id).map(|i| i.urls.iter().map(|u| framecache::ingest::url::redact(u)).collect::<Vec<_>>()),
                "publisher": publisher,
                "viewers": viewers,
            }));
        }
        for p in peers.iter().filter(|p| p.protocol == "whip") {
            // A WHIP publisher's slot is listed above; its resource id is how to end it.
            if let Some(Value::Object(o)) = out.iter_mut().find(|s| {
                applied
                    .keys
                    .get(&p.stream)
                    .is_some_and(|k| s["id"] == k.slot.as_str())
                    || s["id"] == p.stream.as_str()
            }) {
                o.insert(
                    "whip_publisher".into(),
                    json!({"id": p.id, "since_ms": p.since_ms, "bytes": p.bytes}),
                );
            }
        }
        json!({"streams": out})
    }

    fn body(body: &[u8]) -> Result<serde_json::Map<String, Value>, Option<Page>> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(bad("body", "a JSON object is expected")),
            Err(e) => Err(bad("body", &format!("not JSON: {e}"))),
        }
    }

    fn post_input(&self, body: &[u8]) -> Option<Page> {
        let m = match Self::body(body) {
            Ok(m) => m,
            Err(p) => return p,
        };
        let Some(slot) = m.get("slot").and_then(Value::as_str) else {
            return bad("slot", "a string is required");
        };
        if framecache::slot::validate_id(slot).is_err() {
            return bad("slot", "not a valid slot name");
        }
        let urls: Option<Vec<String>> = m.get("urls").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        });
        let urls = match urls {
            Some(u) if !u.is_empty() && u.len() == m["urls"].as_array().map_or(0, Vec::len) => u,
            _ => return bad("urls", "a non-empty array of URL strings is required"),
        };
        let timeout_ms = match m.get("timeout_ms") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().filter(|&n| n > 0) {
                Some(n) => Some(n),
                None => return bad("timeout_ms", "a positive integer (ms) is expected"),
            },
        };
        let spec = InputSpec { urls, timeout_ms };
        let existed = self.applied().inputs.contains_key(slot);
        if let Err(e) = add_input(&mut self.engine(), slot, &spec) {
            return bad("urls", &e.to_string());
        }
        self.applied().inputs.insert(slot.to_string(), spec);
        page(if existed { 200 } else { 201 }, json!({"slot": slot}))
    }

    fn post_key(&self, body: &[u8]) -> Option<Page> {
        let m = match Self::body(body) {
            Ok(m) => m,
            Err(p) => return p,
        };
        let Some(key) = m.get("key").and_then(Value::as_str) else {
            return bad("key", "a string is required");
        };
        let slot = match m.get("slot") {
            None | Some(Value::Null) => key.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return bad("slot", "a string is expected"),
        };
        let passphrase = match m.get("passphrase") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if (10..=79).contains(&s.len()) => Some(s.clone()),
            Some(_) => return bad("passphrase", "a string of 10 to 79 characters is expected"),
        };
        let spec = KeySpec { slot, passphrase };
        let existed = self.applied().keys.contains_key(key);
        if let Err(e) = add_key(&self.engine(), key, &spec) {
            return bad("key", &e.to_string());
        }
        self.applied().keys.insert(key.to_string(), spec);
        page(if existed { 200 } else { 201 }, json!({"key": key}))
    }

    /// Reads the configuration file again and applies its keys and inputs: new ones are
    /// added, changed ones replaced, ones no longer there removed (their publisher ended);
    /// unchanged ones are not touched, so their streams go on. Other settings need a restart.
    pub fn reload(&self) -> Result<Value, String> {
        let path = self
            .config
            .as_ref()
            .ok_or("serve was started without --config: nothing to reload")?;
        let want = crate::serve::read_applied(path)?;
        let mut have = self.applied();
        let mut e = self.engine();
        let (mut added, mut changed, mut removed, mut unchanged) = (vec![], vec![], vec![], 0);
        for (slot, spec) in &want.inputs {
            match have.inputs.get(slot) {
                Some(h) if h == spec => unchanged += 1,
                h => {
                    add_input(&mut e, slot, spec)
                        .map_err(|err| format!("[[inputs]] {slot}: {err}"))?;
                    if h.is_some() {
                        changed.push(format!("input {slot}"))
                    } else {
                        added.push(format!("input {slot}"))
                    }
                }
            }
        }
        for (key, spec) in &want.keys {
            match have.keys.get(key) {
                Some(h) if h == spec => unchanged += 1,
                h => {
                    add_key(&e, key, spec).map_err(|err| format!("[[keys]] {key}: {err}"))?;
                    if h.is_some() {
                        changed.push(format!("key {key}"))
                    } else {
                        added.push(format!("key {key}"))
                    }
                }
            }
        }
        for slot in have.inputs.keys().filter(|s| !want.inputs.contains_key(*s)) {
            e.remove(slot);
            removed.push(format!("input {slot}"));
            // Engine::remove unregistered the keys of the slot too: those the file keeps
            // come back.
            for (key, spec) in want.keys.iter().filter(|(_, k)| &k.slot == slot) {
                add_key(&e, key, spec).map_err(|err| format!("[[keys]] {key}: {err}"))?;
            }
        }
        for key in have.keys.keys().filter(|k| !want.keys.contains_key(*k)) {
            e.registry().kick(key);
            e.registry().unregister(key);
            removed.push(format!("key {key}"));
        }
        *have = want;
        Ok(json!({"added": added, "changed": changed, "removed": removed, "unchanged": unchanged}))
    }
}

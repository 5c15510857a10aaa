//! The way a pusher gets into a stream key, whatever its protocol: a [`PushGate`] admits or
//! refuses it (unknown key, wrong credential, key in use) and hands out a [`PushSink`] that
//! takes its media until it finishes. The ingest engine implements the gate over its key
//! registry; engines that take pushes in a protocol of their own (WHIP in the WHEP engine)
//! call it without knowing the registry.

use std::sync::Arc;

use crate::media::Media;
use framecache_shm::Result;

/// One admitted pusher's media path. Dropping it without [`PushSink::finish`] releases the key
/// as well, with no reason given.
pub trait PushSink: Send {
    /// One media item (tracks, parameters, access units); an error ends the push.
    fn push(&mut self, m: Media) -> Result<()>;
    /// Ends the push: the slot closes (or passes to the next input), `reason` is reported,
    /// the key is free again.
    fn finish(self: Box<Self>, reason: String);
}

/// A pusher asking for a key.
#[derive(Debug, Clone, Copy)]
pub struct PushRequest<'a> {
    /// The stream key.
    pub key: &'a str,
    /// The credential presented (a bearer token, an SRT passphrase), if any.
    pub credential: Option<&'a str>,
    /// Who asks (an address or a resource id), for events and logs.
    pub peer: &'a str,
    /// The protocol (`whip`, ...), for events, logs and the slot's source type.
    pub protocol: &'a str,
}

/// Why a pusher was refused. Each maps to one answer of the protocol (HTTP: 404, 401, 409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// No such key, and the server does not take unknown keys.
    #[error("unknown stream key {0:?}")]
    UnknownKey(String),
    /// The key needs a credential and none or another was presented.
    #[error("stream key {0:?} needs its credential")]
    Credential(String),
    /// Someone else is pushing to the key.
    #[error("stream key {key:?} is already being pushed by {holder}")]
    Busy {
        /// The key.
        key: String,
        /// Who holds it.
        holder: String,
    },
    /// The slot could not be made (no space, ...).
    #[error("{0}")]
    Failed(String),
}

/// Admits pushers to keys. Cheap to clone; called from any thread.
pub type PushGate = Arc<
    dyn Fn(&PushRequest<'_>) -> std::result::Result<Box<dyn PushSink>, PushRefusal> + Send + Sync,
>;

//! framecache moves live video between processes on one host through shared memory, with no
//! daemon, and carries it in and out over the network.
//!
//! This is the facade for Rust users: the rings at the top level, the engines behind features
//! (all on by default). `framecache = { version = "0.1", default-features = false }` gives the
//! rings alone ([`framecache_shm`] with its few dependencies).
//!
//! - [`ring`]: the frame ring, raw frames with one writer ([`Producer`]) and any number of
//!   read-only readers ([`Consumer`]), each with its own cursor.
//! - [`slot`]: slot ids, the root directory (`$FC_SHM_DIR`, default `/dev/shm/framecache`),
//!   atomic creation, writer liveness and discovery.
//! - [`format`]: pixel formats by FourCC and frame geometry.
//! - [`packet`]: the packet ring, encoded access units of up to 8 streams with their codec
//!   parameters; readers join at a keyframe.
//! - `ts` (feature `media`): the MPEG-TS demuxer and muxer; `media` the other containers.
//! - `ingest` (feature `ingest`): URL in, packet slot out.
//! - `whep` (feature `whep`): browsers watch packet slots over WebRTC.
//! - `cuda` (feature `cuda`): cuframes, GPU frames across processes.
//!
//! The C ABI is the separate crate `framecache-capi` (`libframecache.so`).
//!
//! **Owns**: nothing of its own; it re-exports. **May import**: the framecache library crates.
//!
//! ```no_run
//! use framecache::{Consumer, ConsumerConfig, FrameMeta, PixelFormat, Producer, SlotConfig};
//! use std::time::Duration;
//!
//! let mut p = Producer::create("cam1", &SlotConfig::new(PixelFormat::Uyvy, 1920, 1080))?;
//! let mut frame = p.acquire()?;
//! frame.data().fill(0x80);
//! frame.commit(FrameMeta { pts: 0, ..Default::default() })?;
//!
//! let mut c = Consumer::open("cam1", ConsumerConfig::default())?;
//! let f = c.read(Duration::from_millis(100))?;
//! let first = f.data()[0];
//! assert!(f.is_intact(), "overwritten while we looked");
//! # let _ = first;
//! # Ok::<(), framecache::Error>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]

pub use framecache_shm::*;

#[cfg(feature = "media")]
pub use framecache_media as media;
#[cfg(feature = "media")]
pub use framecache_media::ts;

#[cfg(feature = "ingest")]
pub use framecache_ingest as ingest;

#[cfg(feature = "whep")]
pub use framecache_whep as whep;

#[cfg(feature = "cuda")]
pub use framecache_cuda as cuda;

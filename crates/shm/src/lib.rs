//! framecache-shm: the shared-memory core of framecache, and nothing else.
//!
//! **Owns**: slots ([`slot`]: ids, the root directory, atomic creation, the writer's liveness
//! lock, discovery, stale-file collection), the frame ring ([`ring`]: raw frames, one writer,
//! read-only readers each with its own cursor), the packet ring ([`packet`]: encoded access
//! units with codec parameters, keyframe join), pixel formats and codec ids ([`format`],
//! [`packet`]), the error type and its C codes ([`error`]), cross-process wake-ups ([`futex`])
//! and the clocks the wire format stamps ([`clock`]); one slot lifecycle ([`lifecycle`]: create, close on drop,
//! attach, writer liveness, re-attach, wait) shared by every ring kind.
//!
//! **May import**: only `libc`, `thiserror`, `log` (and `serde`, behind the off-by-default
//! `serde` feature, for listings). No other framecache crate, no async runtime, no network. It
//! never prints: diagnostics go through `log`.
//!
//! ```no_run
//! use framecache_shm::{Consumer, ConsumerConfig, FrameMeta, PixelFormat, Producer, SlotConfig};
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
//! # Ok::<(), framecache_shm::Error>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::print_stderr, clippy::print_stdout))]
#![allow(clippy::needless_range_loop)] // plane loops index several parallel arrays

pub mod clock;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod futex;
pub mod lifecycle;
pub mod packet;
pub mod ring;
pub mod slot;
pub mod testsrc;

pub use error::{Error, Result};
pub use format::{FrameGeometry, PixelFormat};
pub use ring::{
    Consumer, ConsumerConfig, Frame, FrameInfo, FrameMeta, Producer, ReadMode, SlotConfig, StartAt,
    Stats,
};

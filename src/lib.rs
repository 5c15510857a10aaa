//! framecache moves live video between processes on one host through shared memory, with no
//! daemon.
//!
//! - [`ring`]: the frame ring, raw frames with one writer ([`Producer`]) and any number of
//!   read-only readers ([`Consumer`]), each with its own cursor.
//! - [`slot`]: slot ids, the root directory (`$FC_SHM_DIR`, default `/dev/shm/framecache`),
//!   atomic creation, writer liveness and discovery.
//! - [`format`]: pixel formats by FourCC and frame geometry.
//! - [`packet`]: the packet ring, encoded access units of up to 8 streams with their codec
//!   parameters; readers join at a keyframe.
//! - [`capi`]: the C ABI exported in `include/framecache.h`.
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
#![allow(clippy::needless_range_loop)] // plane loops index several parallel arrays

pub mod capi;
pub mod cuda;
pub mod error;
pub mod format;
mod futex;
pub mod ingest;
pub mod packet;
pub mod ring;
pub mod slot;
pub mod testsrc;
pub mod ts;
pub mod whep;

pub use error::{Error, Result};
pub use format::{FrameGeometry, PixelFormat};
pub use ring::{
    Consumer, ConsumerConfig, Frame, FrameInfo, FrameMeta, Producer, ReadMode, SlotConfig, StartAt,
    Stats,
};

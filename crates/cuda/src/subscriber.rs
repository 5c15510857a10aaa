//! The subscribing side: handshake, holds, releases, and re-attaching to a restarted publisher
//! (`docs/CUFRAMES.md` §4-5).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{Backend, DevPtr, Event, Stream};
use super::layout::*;
use super::proto::{self, Msg};
use super::{paths, planes, BackendChoice, Control};
use framecache_shm::error::{self, Error, Result};
use framecache_shm::format::FrameGeometry;
use framecache_shm::packet::{
    PacketInfo, PacketReader, PacketReaderConfig, PacketStart, StreamInfo, FC_PACKET_DISCONTINUITY,
};
use framecache_shm::slot::{self, Mapping};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting subscriber looks at its socket (publisher gone?) and retries attaching.
const SLICE: Duration = Duration::from_millis(50);

/// Settings of a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// Must match the publisher's backend.
    pub backend: BackendChoice,
    /// Root directory (default: [`slot::root_dir`]).
    pub root: Option<PathBuf>,
    /// Protocol versions offered in `HELLO_REQ`; leave at the default 1..=2 (other values
    /// exist for the conformance tests of version negotiation: 1..=1 acts as a v1 subscriber).
    pub proto_range: (u16, u16),
}

impl Default for SubscriberConfig {
    fn default() -> SubscriberConfig {
        SubscriberConfig {
            backend: BackendChoice::Cuda(0),
            root: None,
            proto_range: (1, FC_CUFRAMES_PROTO_MAX as u16),
        }
    }
}

/// A frame held by a subscriber: valid on the stream passed to `acquire` until `release`.
#[derive(Debug, Clone, Copy)]
pub struct Hold {
    /// The frame's metadata.
    pub meta: CuFrameMeta,
    /// Device pointer of each plane (in this process).
    pub planes: [DevPtr; 4],
    /// Pitch of each plane.
    pub pitches: [u32; 4],
    /// Planes in use.
    pub plane_count: u32,
    /// The publisher's ready event for this buffer, opened here (already waited on by the
    /// stream given to `acquire`; other streams may wait on it too).
    pub ready_event: Event,
    /// Published frames this subscriber never got, just before this one.
    pub missed: u64,
    epoch: u64,
    gen: u64,
}

/// Counters of a subscriber (also in its subscriber slot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Frames acquired.
    pub frames: u64,
    /// Published frames never acquired.
    pub missed: u64,
    /// Holds the publisher revoked (`REVOKED` notices received).
    pub revoked: u64,
    /// Releases that found the buffer rewritten.
    pub torn: u64,
    /// Successful attaches (1 + re-attaches to a restarted publisher).
    pub attaches: u64,
    /// Subscriber slot index in the current attachment.
    pub index: u32,
    /// Whether a publisher is attached now.
    pub attached: bool,
    /// Protocol version agreed with the current publisher (0 while detached).
    pub proto_version: u16,
    /// Encoded packets delivered (version 2).
    pub packets: u64,
    /// Packets passed over: fallen more than the ring behind, or waiting for a keyframe.
    pub packets_skipped: u64,
    /// Packets found overwritten while copied (`PacketOverrun`, never delivered).
    pub packet_overruns: u64,
}

struct Attachment {
    backend: Arc<dyn Backend>,
    sock: UnixStream,
    dec: proto::Decoder,
    ctl: Control,
    index: u32,
    epoch: u64,
    /// (mapped buffer, opened ready event) by buffer.
    buffers: Vec<(DevPtr, Event)>,
    /// Our done events by buffer.
    done: Vec<Event>,
    /// Generation held per buffer (`None` = not held by us).
    held: Vec<Option<u64>>,
    holds: usize,
    last_seq: u64,
    detached: bool,
    proto_version: u16,
    /// The packet slot beside the frames (version 2 with `PACKET_RING`).
    packets: Option<PacketReader>,
    /// No packet delivered from this attachment yet (the first after a re-attach is flagged
    /// as a discontinuity).
    packets_fresh: bool,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let size = self.ctl.header.buffer_size;
        for &(p, ev) in &self.buffers {
            self.backend.event_destroy(ev);
            self.backend.close_mem(p, size);
        }
        for &ev in &self.done {
            self.backend.event_destroy(ev);
        }
    }
}

/// The subscribing end of a cuframes key.
///
/// Not `Sync`; one thread acquires and releases.
pub struct Subscriber {
    key: String,
    root: PathBuf,
    cfg: SubscriberConfig,
    backend: Arc<dyn Backend>,
    att: Option<Attachment>,
    /// Attachments of publishers that went away while we still held their frames.
    stale: Vec<Attachment>,
    stats: SubscriberStats,
}

fn from_peer(code: i32, text: String) -> Error {
    match code {
        error::FC_ERR_VERSION => Error::Version {
            found: 0,
            supported: FC_CUFRAMES_PROTO_VERSION,
        },
        error::FC_ERR_BUSY => Error::Rejected(text),
        error::FC_ERR_WRONG_KIND => Error::WrongKind(text),
        error::FC_ERR_TIMEOUT => Error::Timeout,
        _ => Error::Protocol(format!("publisher: {text}")),
    }
}

fn read_msg(sock: &mut UnixStream, dec: &mut proto::Decoder, deadline: Instant) -> Result<Msg> {
    let mut buf = [0u8; 16384];
    loop {
        if let Some(m) = dec.next_msg()? {
            if let Msg::Error { code, text } = m {
                return Err(from_peer(code, text));
            }
            return Ok(m);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| Error::os("socket", e))?;
        match sock.read(&mut buf) {
            Ok(0) => return Err(Error::WriterGone),
            Ok(n) => dec.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::os("read cuframes socket", e)),
        }
    }
}

impl Subscriber {
    /// Attaches to the publisher of `key`. `NotFound` if none is running.
    pub fn open(key: &str, cfg: &SubscriberConfig) -> Result<Subscriber> {
        let root = cfg.root.clone().unwrap_or_else(slot::root_dir);
        paths(&root, key)?;
        let backend = cfg.backend.open()?;
        let mut s = Subscriber {
            key: key.to_string(),
            root,
            cfg: cfg.clone(),
            backend,
            att: None,
            stale: Vec::new(),
            stats: SubscriberStats::default(),
        };
        let att = s.attach(Instant::now() + HANDSHAKE_TIMEOUT)?;
        s.att = Some(att);
        Ok(s)
    }

    /// The backend (for copies and fills in tools and tests).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Geometry of the current publisher's buffers (`None` while detached).
    pub fn geometry(&self) -> Option<FrameGeometry> {
        self.att
            .as_ref()
            .filter(|a| !a.detached)
            .map(|a| a.ctl.geometry)
    }

    fn attach(&mut self, deadline: Instant) -> Result<Attachment> {
        let (ctl_path, sock_path) = paths(&self.root, &self.key)?;
        let mut sock = UnixStream::connect(&sock_path).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => Error::NotFound(self.key.clone()),
            _ => Error::os(&format!("connect {}", sock_path.display()), e),
        })?;
        let deadline = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
        sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| Error::os("socket", e))?;
        let send = |sock: &mut UnixStream, m: Msg| {
            sock.write_all(&m.to_bytes())
                .map_err(|e| Error::os("write cuframes socket", e))
        };
        send(
            &mut sock,
            Msg::HelloReq {
                proto_min: self.cfg.proto_range.0,
                proto_max: self.cfg.proto_range.1,
                capabilities: proto::CAPS,
                pid: std::process::id(),
                backend: self.backend.kind(),
                device_uuid: self.backend.device_uuid(),
            },
        )?;
        let mut dec = proto::Decoder::new();
        let (index, epoch, buffer_count, buffer_size, proto_version, caps) =
            match read_msg(&mut sock, &mut dec, deadline)? {
                Msg::HelloResp {
                    proto_version,
                    sub_index,
                    epoch,
                    backend,
                    buffer_count,
                    buffer_size,
                    capabilities,
                } => {
                    let (lo, hi) = self.cfg.proto_range;
                    if !(lo..=hi).contains(&proto_version)
                        || u32::from(proto_version) > FC_CUFRAMES_PROTO_MAX
                    {
                        return Err(Error::Version {
                            found: proto_version.into(),
                            supported: FC_CUFRAMES_PROTO_MAX,
                        });
                    }
                    if backend != self.backend.kind() {
                        return Err(Error::WrongKind(format!(
                            "publisher backend {backend}, ours {}",
                            self.backend.kind()
                        )));
                    }
                    (
                        sub_index,
                        epoch,
                        buffer_count,
                        buffer_size,
                        proto_version,
                        capabilities,
                    )
                }
                m => {
                    return Err(Error::Protocol(format!(
                        "expected HELLO_RESP, got {}",
                        m.name()
                    )))
                }
            };
        // Version 2: the packet slot beside the frames is announced before BUFFERS.
        let ring = if proto_version >= 2 && caps & proto::CAP_PACKET_RING != 0 {
            match read_msg(&mut sock, &mut dec, deadline)? {
                Msg::PacketRing { name, .. } if name == super::packet_slot_id(&self.key) => {
                    Some(name)
                }
                Msg::PacketRing { name, .. } => {
                    return Err(Error::Protocol(format!(
                        "PACKET_RING names {name:?}, not the packet slot of key {:?}",
                        self.key
                    )))
                }
                m => {
                    return Err(Error::Protocol(format!(
                        "expected PACKET_RING, got {}",
                        m.name()
                    )))
                }
            }
        } else {
            None
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&ctl_path)
            .map_err(|e| Error::os(&format!("open {}", ctl_path.display()), e))?;
        let len = file.metadata().map_err(|e| Error::os("stat", e))?.len();
        if len < FC_CUFRAMES_HEADER_SIZE as u64 {
            return Err(Error::Truncated(format!(
                "{} is {len} bytes",
                ctl_path.display()
            )));
        }
        let map = Mapping::map(&file, len as usize, true)?;
        let ctl = Control::new(file, map)?;
        let h = &ctl.header;
        if h.epoch != epoch
            || h.buffer_count != buffer_count
            || h.buffer_size != buffer_size
            || index >= h.max_subscribers
        {
            return Err(Error::Protocol(
                "control block does not match the publisher's HELLO_RESP (restarted meanwhile?)"
                    .into(),
            ));
        }
        let mut att = Attachment {
            backend: self.backend.clone(),
            sock,
            dec,
            index,
            epoch,
            buffers: Vec::new(),
            done: Vec::new(),
            held: vec![None; buffer_count as usize],
            holds: 0,
            last_seq: 0,
            detached: false,
            proto_version,
            packets: None,
            packets_fresh: true,
            ctl,
        };
        let list = match read_msg(&mut att.sock, &mut att.dec, deadline)? {
            Msg::Buffers(list) if list.len() == buffer_count as usize => list,
            m => {
                return Err(Error::Protocol(format!(
                    "expected BUFFERS, got {}",
                    m.name()
                )))
            }
        };
        for (mh, eh) in &list {
            let p = self.backend.import_mem(mh, buffer_size)?;
            match self.backend.import_event(eh) {
                Ok(ev) => att.buffers.push((p, ev)),
                Err(e) => {
                    self.backend.close_mem(p, buffer_size);
                    return Err(e);
                }
            }
        }
        let mut handles = Vec::new();
        for _ in 0..buffer_count {
            let ev = self.backend.event_create()?;
            att.done.push(ev);
            handles.push(self.backend.export_event(ev)?);
        }
        send(&mut att.sock, Msg::Subscribe(handles))?;
        match read_msg(&mut att.sock, &mut att.dec, deadline)? {
            Msg::Ready { .. } => {}
            m => return Err(Error::Protocol(format!("expected READY, got {}", m.name()))),
        }
        if let Some(name) = ring {
            // Created before the control block and removed after it (§10.1): it is there.
            att.packets = Some(PacketReader::open_in(
                &self.root,
                &name,
                PacketReaderConfig {
                    start: PacketStart::Keyframe,
                },
            )?);
        }
        att.sock
            .set_nonblocking(true)
            .map_err(|e| Error::os("socket", e))?;
        self.stats.attaches += 1;
        self.stats.index = index;
        Ok(att)
    }

    /// Reads what the publisher sent since; false once it is gone.
    fn poll_socket(att: &mut Attachment, stats: &mut SubscriberStats) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match att.sock.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => att.dec.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        loop {
            match att.dec.next_msg() {
                Ok(Some(Msg::Revoked { .. })) => stats.revoked += 1,
                Ok(Some(Msg::Bye { .. })) | Ok(Some(Msg::Error { .. })) | Err(_) => return false,
                Ok(Some(_)) => return false, // nothing else is valid once active
                Ok(None) => return true,
            }
        }
    }

    fn detach(&mut self) {
        if let Some(mut a) = self.att.take() {
            a.detached = true;
            if a.holds > 0 {
                self.stale.push(a);
            }
        }
    }

    /// The newest frame not yet taken, waiting up to `timeout`. `stream` is made to wait for
    /// the publisher's writes (no CPU wait). A publisher that went away is re-attached when it
    /// returns; `WriterGone` if none is back within `timeout`.
    pub fn acquire(&mut self, stream: Stream, timeout: Duration) -> Result<Hold> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.ensure_attached(deadline)?;
            let att = self.att.as_mut().expect("attached");
            if !Self::poll_socket(att, &mut self.stats) {
                self.detach();
                continue;
            }
            if let Some(h) = Self::try_take(att, stream, &mut self.stats)? {
                return Ok(h);
            }
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            let att = self.att.as_ref().expect("attached");
            let seen = att.ctl.notify().load(Ordering::Acquire);
            if att.ctl.head(off::LATEST).load(Ordering::Acquire) >> 6 <= att.last_seq {
                framecache_shm::futex::wait(att.ctl.notify(), seen, SLICE.min(left));
            }
        }
    }

    /// The header of the publisher, attaching first (waiting up to `timeout`) if needed;
    /// `WriterGone` if none is there in time.
    pub fn info(&mut self, timeout: Duration) -> Result<CuframesHeader> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.ensure_attached(deadline)?;
            let att = self.att.as_mut().expect("attached");
            if Self::poll_socket(att, &mut self.stats) {
                return Ok(att.ctl.header);
            }
            self.detach();
        }
    }

    /// Attaches (again) if not attached, retrying until `deadline` (`None` = forever).
    fn ensure_attached(&mut self, deadline: Option<Instant>) -> Result<()> {
        while self.att.is_none() {
            // attach() bounds its handshake by HANDSHAKE_TIMEOUT anyway; that is "forever" there.
            let d = deadline.unwrap_or_else(|| Instant::now() + HANDSHAKE_TIMEOUT);
            match self.attach(d) {
                Ok(a) => self.att = Some(a),
                Err(Error::NotFound(_))
                | Err(Error::WriterGone)
                | Err(Error::Timeout)
                | Err(Error::Protocol(_)) => {
                    let left = remaining(deadline);
                    if left.is_zero() {
                        return Err(Error::WriterGone);
                    }
                    std::thread::sleep(SLICE.min(left));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn try_take(
        att: &mut Attachment,
        stream: Stream,
        stats: &mut SubscriberStats,
    ) -> Result<Option<Hold>> {
        let ctl = &att.ctl;
        let bit = 1u64 << att.index;
        for _ in 0..64 {
            let l = ctl.head(off::LATEST).load(Ordering::Acquire);
            let (seq, i) = split_latest(l);
            if l == 0 || seq <= att.last_seq {
                return Ok(None);
            }
            if i >= ctl.n() {
                return Err(Error::Corrupt(format!("latest names buffer {i}")));
            }
            let holders = ctl.slot(i, off::SLOT_HOLDERS);
            if att.held[i as usize].is_some() {
                // We still hold an older frame of this buffer: the publisher revoked it and
                // wrote this one. The old hold is dead (its release reports Overwritten); this
                // new one takes over the bit.
                att.held[i as usize] = None;
                att.holds -= 1;
                holders.fetch_and(!bit, Ordering::SeqCst);
            }
            holders.fetch_or(bit, Ordering::SeqCst);
            ctl.slot(i, off::SLOT_READERS)
                .fetch_or(bit, Ordering::SeqCst);
            let g = ctl.slot(i, off::SLOT_SEQ).load(Ordering::SeqCst);
            if !g.is_multiple_of(2) {
                holders.fetch_and(!bit, Ordering::SeqCst);
                continue;
            }
            let meta = ctl.read_meta(i);
            if meta.seq != seq || ctl.slot(i, off::SLOT_SEQ).load(Ordering::Acquire) != g {
                holders.fetch_and(!bit, Ordering::SeqCst);
                continue;
            }
            let (base, ready) = att.buffers[i as usize];
            if let Err(e) = att.backend.stream_wait(stream, ready) {
                holders.fetch_and(!bit, Ordering::SeqCst);
                return Err(e);
            }
            let missed = if att.last_seq == 0 {
                0
            } else {
                seq - att.last_seq - 1
            };
            att.last_seq = seq;
            att.held[i as usize] = Some(g);
            att.holds += 1;
            let s = att.index;
            ctl.sub(s, off::SUB_FRAMES).fetch_add(1, Ordering::Relaxed);
            ctl.sub(s, off::SUB_MISSED)
                .fetch_add(missed, Ordering::Relaxed);
            ctl.sub(s, off::SUB_LAST_SEQ).store(seq, Ordering::Relaxed);
            stats.frames += 1;
            stats.missed += missed;
            let geo = &ctl.geometry;
            return Ok(Some(Hold {
                meta,
                planes: planes(base, geo),
                pitches: geo.strides,
                plane_count: geo.plane_count,
                ready_event: ready,
                missed,
                epoch: att.epoch,
                gen: g,
            }));
        }
        // The publisher rewrote the newest buffer 64 times while we looked: try again later.
        Ok(None)
    }

    /// Ends a hold after the work queued on `stream`: records our done event there (the
    /// publisher's next write of the buffer waits for it on the GPU). `Overwritten` if the
    /// publisher revoked the hold meanwhile (discard what was computed from the frame);
    /// `WriterGone` if the publisher left.
    pub fn release(&mut self, hold: &Hold, stream: Stream) -> Result<()> {
        let i = hold.meta.buffer as usize;
        if let Some(att) = self.att.as_mut().filter(|a| a.epoch == hold.epoch) {
            if att.held.get(i).copied().flatten() != Some(hold.gen) {
                att.ctl
                    .sub(att.index, off::SUB_TORN)
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.torn += 1;
                return Err(Error::Overwritten);
            }
            att.backend.record(att.done[i], stream)?;
            let g2 = att
                .ctl
                .slot(i as u32, off::SLOT_SEQ)
                .load(Ordering::Acquire);
            att.ctl
                .slot(i as u32, off::SLOT_HOLDERS)
                .fetch_and(!(1u64 << att.index), Ordering::Release);
            att.held[i] = None;
            att.holds -= 1;
            if g2 != hold.gen {
                att.ctl
                    .sub(att.index, off::SUB_TORN)
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.torn += 1;
                return Err(Error::Overwritten);
            }
            return Ok(());
        }
        if let Some(k) = self.stale.iter().position(|a| a.epoch == hold.epoch) {
            let a = &mut self.stale[k];
            if a.held.get(i).copied().flatten() == Some(hold.gen) {
                a.held[i] = None;
                a.holds -= 1;
            }
            if a.holds == 0 {
                self.stale.swap_remove(k);
            }
            return Err(Error::WriterGone);
        }
        Err(Error::InvalidArg(
            "release of a frame this subscriber does not hold".into(),
        ))
    }

    /// Counters.
    pub fn stats(&self) -> SubscriberStats {
        let mut s = self.stats;
        s.attached = self.att.is_some();
        s.proto_version = self.att.as_ref().map_or(0, |a| a.proto_version);
        s
    }

    /// The streams of the packet slot beside the frames, attaching first (waiting up to
    /// `timeout`) if needed. `NoPacketRing` if the publisher has none (or speaks version 1).
    pub fn packet_streams(&mut self, timeout: Duration) -> Result<Vec<StreamInfo>> {
        self.info(timeout)?;
        let att = self.att.as_ref().expect("attached by info");
        Ok(Self::ring(att, &self.key)?.streams())
    }

    /// Codec parameters of packet stream `stream`, generation `gen` (0 = current; a packet's
    /// `params_gen` names the ones that apply to it): `(generation, bytes)`. `NoCodecParams`
    /// if there are none or that generation was overwritten; `NoPacketRing` without a packet
    /// slot; `WriterGone` while detached.
    pub fn codec_params(&self, stream: u32, gen: u32) -> Result<(u32, Vec<u8>)> {
        let att = self.att.as_ref().ok_or(Error::WriterGone)?;
        Self::ring(att, &self.key)?.codec_params(stream, gen)
    }

    fn ring<'a>(att: &'a Attachment, key: &str) -> Result<&'a PacketReader> {
        att.packets
            .as_ref()
            .ok_or_else(|| no_ring(key, att.proto_version))
    }

    /// The next encoded packet of the packet slot beside the frames, copied into `buf` (which
    /// then holds exactly the payload), waiting up to `timeout`. Starts at a keyframe; `PacketOverrun` when the
    /// packet was overwritten while copied (nothing delivered; the next one is a keyframe).
    /// A publisher that went away is re-attached when it returns (its first packet then
    /// carries `FC_PACKET_DISCONTINUITY`); `WriterGone` if none is back within `timeout`,
    /// `NoPacketRing` if the publisher has no packet slot.
    pub fn next_packet(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<PacketInfo> {
        let info = self.packet_with(timeout, |r, t| r.next_vec(buf, t))?;
        buf.truncate(info.size as usize);
        Ok(info)
    }

    /// As [`Subscriber::next_packet`] into a fixed buffer: `BufferTooSmall { need, .. }`
    /// leaves the packet for a retry with a larger one.
    pub fn next_packet_copy(&mut self, buf: &mut [u8], timeout: Duration) -> Result<PacketInfo> {
        self.packet_with(timeout, |r, t| r.next_copy(buf, t))
    }

    fn packet_with(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut PacketReader, Duration) -> Result<PacketInfo>,
    ) -> Result<PacketInfo> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.ensure_attached(deadline)?;
            let att = self.att.as_mut().expect("attached");
            let gone = !Self::poll_socket(att, &mut self.stats);
            let Some(r) = att.packets.as_mut() else {
                if gone {
                    self.detach();
                    continue;
                }
                return Err(no_ring(&self.key, att.proto_version));
            };
            // A publisher that left may have left packets in the ring: those are delivered
            // first (without waiting), as from any packet slot whose writer closed.
            let before = r.stats();
            let wait = if gone {
                Duration::ZERO
            } else {
                SLICE.min(remaining(deadline))
            };
            let got = read(r, wait);
            let after = r.stats();
            self.stats.packets_skipped += after.packets_skipped - before.packets_skipped;
            self.stats.packet_overruns += after.overruns - before.overruns;
            match got {
                // After the publisher left, only what its own ring still held counts.
                Ok(mut info) if !(gone && after.reattached != before.reattached) => {
                    if std::mem::take(&mut att.packets_fresh) && self.stats.attaches > 1 {
                        info.flags |= FC_PACKET_DISCONTINUITY;
                    }
                    self.stats.packets += 1;
                    return Ok(info);
                }
                Ok(_) | Err(Error::Timeout) | Err(Error::WriterGone) if gone => {
                    self.detach();
                    continue;
                }
                Err(Error::WriterGone) => {
                    self.detach();
                    continue;
                }
                Ok(_) | Err(Error::Timeout) => {}
                Err(e) => return Err(e),
            }
            if remaining(deadline).is_zero() {
                return Err(Error::Timeout);
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(a) = self.att.as_mut() {
            let _ = a.sock.set_nonblocking(false);
            let _ = a.sock.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = a.sock.write_all(&Msg::Bye { reason: 0 }.to_bytes());
        }
    }
}

fn no_ring(key: &str, version: u16) -> Error {
    Error::NoPacketRing(if version < 2 {
        format!(
            "cuframes key {key}: the publisher speaks protocol version {version}, without packets"
        )
    } else {
        format!("cuframes key {key}: the publisher declared no packet streams")
    })
}

/// Time left until `deadline` (`None` = never).
fn remaining(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

//! The publishing side: the buffer pool, the control block, and a thread that runs the socket
//! handshakes (`docs/CUFRAMES.md` §4-5).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::{Backend, DevPtr, Event, Stream};
use super::layout::*;
use super::proto::{self, Handle, Msg};
use super::{paths, planes, BackendChoice, Control, Policy};
use framecache_shm::error::{Error, Result};
use framecache_shm::format::{FrameGeometry, PixelFormat};
use framecache_shm::packet::{Packet, PacketSlotConfig, PacketWriter, StreamConfig};
use framecache_shm::slot::{self, monotonic_ns, realtime_ns};

/// How long a subscriber may take for its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending outgoing bytes per connection beyond which `REVOKED` notices are dropped.
const MAX_OUT: usize = 64 * 1024;

/// Settings of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Pixel format of every frame.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Buffers in the pool (2..=64, default 8).
    pub buffers: u32,
    /// Subscriber slots (1..=64, default 8).
    pub max_subscribers: u32,
    /// What to do when every buffer is held.
    pub policy: Policy,
    /// GPU or host memory.
    pub backend: BackendChoice,
    /// Root directory (default: [`slot::root_dir`]).
    pub root: Option<PathBuf>,
    /// Unit of `pts` and `duration` as (numerator, denominator) seconds; (0, 0) = unknown.
    pub time_base: (u32, u32),
    /// Nominal frame rate as (numerator, denominator); (0, 0) = unknown or variable.
    pub rate: (u32, u32),
    /// Encoded streams published beside the frames (protocol version 2, `docs/CUFRAMES.md`
    /// §10): 1..=8 streams make a packet slot `cuframes-KEY-packets`; empty = frames only.
    pub packet_streams: Vec<StreamConfig>,
    /// Payload bytes of that packet slot (0 = the packet ring's default, 32 MiB; a multiple of
    /// 4096). A packet may take a quarter of it.
    pub packet_payload_size: u64,
    /// Highest protocol version answered (default 2). Lower it only to act as a version-1
    /// publisher in conformance tests.
    #[doc(hidden)]
    pub proto_max: u16,
}

impl PublisherConfig {
    /// Defaults for `format` at `width`x`height` on CUDA device 0.
    pub fn new(format: PixelFormat, width: u32, height: u32) -> PublisherConfig {
        PublisherConfig {
            format,
            width,
            height,
            buffers: 8,
            max_subscribers: 8,
            policy: Policy::Revoke,
            backend: BackendChoice::Cuda(0),
            root: None,
            time_base: (0, 0),
            rate: (0, 0),
            packet_streams: Vec::new(),
            packet_payload_size: 0,
            proto_max: FC_CUFRAMES_PROTO_MAX as u16,
        }
    }
}

/// Id of the packet slot beside the frames of `key` (`docs/CUFRAMES.md` §10.1).
pub fn packet_slot_id(key: &str) -> String {
    format!("cuframes-{key}-packets")
}

/// A buffer handed to the caller to write the next frame into.
#[derive(Debug, Clone, Copy)]
pub struct BufferRef {
    /// Buffer index.
    pub index: u32,
    /// Device pointer of each plane.
    pub planes: [DevPtr; 4],
    /// Pitch of each plane.
    pub pitches: [u32; 4],
    /// Planes in use.
    pub plane_count: u32,
    /// Start of the allocation.
    pub base: DevPtr,
    /// Bytes of the allocation.
    pub size: u64,
}

/// Counters of a publisher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Frames published.
    pub published: u64,
    /// Frames skipped (skip policy).
    pub skipped: u64,
    /// Holds revoked (revoke policy).
    pub revoked: u64,
    /// Subscribers attached now.
    pub subscribers: u32,
    /// Buffers held by at least one subscriber now.
    pub held: u32,
}

/// One attached (or attaching) subscriber, as the publishing thread and `acquire` share it.
struct SubEntry {
    /// Its done events by buffer, opened in our process (empty until SUBSCRIBE).
    done: Vec<Event>,
    caps: u64,
    /// Messages for the server thread to send (REVOKED notices).
    outbox: Vec<u8>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    ctl: Control,
    buffers: Vec<(DevPtr, Event)>,
    handles: Vec<(Handle, Handle)>,
    subs: Mutex<Vec<Option<SubEntry>>>,
    stop: AtomicBool,
    epoch: u64,
    ctl_path: PathBuf,
    sock_path: PathBuf,
    /// Highest protocol version answered.
    proto_max: u16,
    /// The packet slot's id and stream count, when streams were declared.
    packet_ring: Option<(String, u32)>,
    /// `1 + seq` of the newest keyframe of the packet slot's primary stream (0 = none yet),
    /// for `PACKET_RING.initial_packet_seq`.
    last_keyframe: AtomicU64,
}

impl Shared {
    fn subs(&self) -> MutexGuard<'_, Vec<Option<SubEntry>>> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets subscriber `s`: its holds and reader marks go, its events are destroyed.
    fn drop_subscriber(&self, s: u32) {
        let mut subs = self.subs();
        let bit = !(1u64 << s);
        for i in 0..self.ctl.n() {
            self.ctl
                .slot(i, off::SLOT_HOLDERS)
                .fetch_and(bit, Ordering::SeqCst);
            self.ctl
                .slot(i, off::SLOT_READERS)
                .fetch_and(bit, Ordering::SeqCst);
        }
        if let Some(e) = subs[s as usize].take() {
            for ev in e.done {
                self.backend.event_destroy(ev);
            }
        }
        self.ctl.sub_state(s).store(SUB_FREE, Ordering::Release);
    }
}

/// The publishing end of a cuframes key. `acquire` → write on your stream → `publish`.
///
/// Not `Sync`: one thread publishes (the socket thread inside is the library's own).
pub struct Publisher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pending: Option<u32>,
    next_seq: u64,
    policy: Policy,
    /// The encoded streams beside the frames (version 2). Declared after `shared` so it is
    /// dropped (closed, removed) after the control block is gone, as §10.1 orders.
    packets: Option<PacketWriter>,
}

impl Publisher {
    /// Creates the pool, the control block and the socket for `key`.
    pub fn create(key: &str, cfg: &PublisherConfig) -> Result<Publisher> {
        let root = cfg.root.clone().unwrap_or_else(slot::root_dir);
        let (ctl_path, sock_path) = paths(&root, key)?;
        if !(FC_CUFRAMES_MIN_BUFFERS..=FC_CUFRAMES_MAX_BUFFERS).contains(&cfg.buffers) {
            return Err(Error::InvalidArg(format!(
                "buffers {} (2..=64)",
                cfg.buffers
            )));
        }
        if !(1..=FC_CUFRAMES_MAX_SUBSCRIBERS).contains(&cfg.max_subscribers) {
            return Err(Error::InvalidArg(format!(
                "max_subscribers {} (1..=64)",
                cfg.max_subscribers
            )));
        }
        let (g, buffer_size) = pool_geometry(cfg.format, cfg.width, cfg.height)?;
        let backend = cfg.backend.open()?;
        // Never 0, so a zeroed header is never mistaken for a publisher's.
        let epoch = slot::random_u64() | 1;

        // The pool first: a GPU out of memory must not leave a control block behind.
        let mut pool = Pool {
            backend: backend.clone(),
            buffers: Vec::new(),
            size: buffer_size,
        };
        let mut handles = Vec::new();
        for _ in 0..cfg.buffers {
            let p = backend.alloc(buffer_size)?;
            let ev = match backend.event_create() {
                Ok(ev) => ev,
                Err(e) => {
                    backend.free(p, buffer_size);
                    return Err(e);
                }
            };
            pool.buffers.push((p, ev));
            handles.push((backend.export_mem(p)?, backend.export_event(ev)?));
        }

        // The packet slot before the control block: a subscriber that finds the control block
        // finds the packet slot (§10.1).
        let packets = if cfg.packet_streams.is_empty() {
            None
        } else {
            let id = packet_slot_id(key);
            slot::validate_id(&id).map_err(|_| {
                Error::InvalidArg(format!(
                    "key {key:?}: a publisher with packet streams takes keys of at most 47 characters (its packet slot is {id:?})"
                ))
            })?;
            let mut pc = PacketSlotConfig::new(cfg.packet_streams.clone());
            if cfg.packet_payload_size != 0 {
                pc.payload_size = cfg.packet_payload_size;
            }
            pc.source_type = "cuframes".into();
            pc.labels = vec![("cuframes_key".into(), key.into())];
            Some(PacketWriter::create_in(&root, &id, &pc)?)
        };
        let n = cfg.buffers;
        let m = cfg.max_subscribers;
        let size = file_size(n, m);
        let policy = match cfg.policy {
            Policy::Revoke => FC_CUFRAMES_POLICY_REVOKE,
            Policy::Skip => FC_CUFRAMES_POLICY_SKIP,
        };
        let header = CuframesHeader {
            magic: CUFRAMES_MAGIC,
            proto_version: FC_CUFRAMES_PROTO_VERSION,
            header_size: FC_CUFRAMES_HEADER_SIZE as u32,
            file_size: size,
            buffer_count: n,
            max_subscribers: m,
            slot_desc_size: FC_CUFRAMES_SLOT_DESC_SIZE as u32,
            sub_slot_size: FC_CUFRAMES_SUB_SLOT_SIZE as u32,
            slots_offset: FC_CUFRAMES_HEADER_SIZE as u32,
            subs_offset: (FC_CUFRAMES_HEADER_SIZE + FC_CUFRAMES_SLOT_DESC_SIZE * n as usize) as u32,
            format: cfg.format.fourcc(),
            width: cfg.width,
            height: cfg.height,
            plane_count: g.plane_count,
            pitches: g.strides,
            plane_offsets: g.offsets.map(u64::from),
            buffer_size,
            backend: backend.kind(),
            publisher_pid: std::process::id(),
            device_uuid: backend.device_uuid(),
            epoch,
            policy,
            reserved0: 0,
            key: {
                let mut k = [0u8; 64];
                slot::put_cstr(&mut k, key);
                k
            },
            time_base_num: cfg.time_base.0,
            time_base_den: cfg.time_base.1,
            rate_num: cfg.rate.0,
            rate_den: cfg.rate.1,
            reserved1: [0; 16],
            state: CU_STATE_LIVE,
            notify: 0,
            latest: 0,
            published: 0,
            skipped: 0,
            revoked: 0,
            reserved2: [0; 216],
        };
        let created = slot::create(
            &root,
            &ctl_path,
            size,
            slot::DEFAULT_MODE,
            |f| {
                let mut b = [0u8; FC_CUFRAMES_HEADER_SIZE];
                use std::os::unix::fs::FileExt;
                let _ = f.read_exact_at(&mut b, 0);
                CuframesHeader::read(&b)
                    .map(|h| h.publisher_pid)
                    .unwrap_or(0)
            },
            |bytes| {
                bytes.fill(0);
                // SAFETY: bytes is at least a header long (size computed above).
                unsafe {
                    std::ptr::write_unaligned(bytes.as_mut_ptr() as *mut CuframesHeader, header)
                };
                Ok(())
            },
        )?;
        let ctl = Control::new(created.file, created.map)?;
        // A socket file left by a dead publisher: the control block's lock is ours now, so
        // nobody else serves this key.
        let _ = std::fs::remove_file(&sock_path);
        let listener = match UnixListener::bind(&sock_path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&ctl_path);
                return Err(Error::os(&format!("listen on {}", sock_path.display()), e));
            }
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::os("socket", e))?;
        // Success: the pool guard gives its buffers up (and frees nothing on drop).
        let buffers = std::mem::take(&mut pool.buffers);
        let shared = Arc::new(Shared {
            backend,
            ctl,
            buffers,
            handles,
            subs: Mutex::new((0..m).map(|_| None).collect()),
            stop: AtomicBool::new(false),
            epoch,
            ctl_path,
            sock_path,
            proto_max: cfg.proto_max.max(1),
            packet_ring: packets
                .as_ref()
                .map(|_| (packet_slot_id(key), cfg.packet_streams.len() as u32)),
            last_keyframe: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cuframes-{key}"))
            .spawn(move || serve(sh, listener))
            .map_err(|e| Error::os("spawn", e))?;
        Ok(Publisher {
            shared,
            thread: Some(thread),
            pending: None,
            next_seq: 1,
            policy: cfg.policy,
            packets,
        })
    }

    fn packet_writer(&mut self) -> Result<&mut PacketWriter> {
        let key = self.key();
        self.packets.as_mut().ok_or_else(|| {
            Error::NoPacketRing(format!("cuframes key {key} declared no packet streams"))
        })
    }

    fn key(&self) -> String {
        slot::get_cstr(&self.shared.ctl.header.key)
            .unwrap_or_default()
            .to_string()
    }

    /// Publishes an encoded packet (an Annex-B access unit, an AAC or Opus frame) into the
    /// packet slot beside the frames and returns its packet seq. `NoPacketRing` if no streams
    /// were declared; `Oversized` for a packet larger than a quarter of the payload ring
    /// (nothing is published).
    pub fn publish_packet(&mut self, p: &Packet) -> Result<u64> {
        let w = self.packet_writer()?;
        let seq = w.publish(p)?;
        if let Some(k) = w.last_keyframe() {
            self.shared.last_keyframe.store(k + 1, Ordering::Release);
        }
        Ok(seq)
    }

    /// Sets the codec parameters of packet stream `stream` (H.264/HEVC: Annex-B parameter
    /// sets; AAC: AudioSpecificConfig; Opus: OpusHead); returns their generation.
    pub fn set_codec_params(&mut self, stream: u32, data: &[u8]) -> Result<u32> {
        self.packet_writer()?.set_codec_params(stream, data)
    }

    /// The packet slot's id, when packet streams were declared.
    pub fn packet_slot(&self) -> Option<&str> {
        self.shared.packet_ring.as_ref().map(|(id, _)| id.as_str())
    }

    /// Layout of every buffer.
    pub fn geometry(&self) -> FrameGeometry {
        self.shared.ctl.geometry
    }

    /// The backend (to write frames with `fill`/`copy_from_host`, or to create streams).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// The seq the next published frame will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// This start's epoch.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// A free buffer for the next frame, with `stream` already made to wait for every
    /// subscriber that read it before. Never blocks on a subscriber's hold: when every buffer
    /// is held, the policy revokes the oldest hold or returns [`Error::NoBuffer`]. It blocks
    /// only while the GPU has not finished the frame last written into the chosen buffer
    /// (N - 1 frames ago, with the reads queued before it): the device's back-pressure, which
    /// bounds the work in flight to the ring's depth.
    pub fn acquire(&mut self, stream: Stream) -> Result<BufferRef> {
        if self.pending.is_some() {
            return Err(Error::State("acquire twice without publish"));
        }
        let shared = self.shared.clone();
        let sh = &*shared;
        let ctl = &sh.ctl;
        let newest = match ctl.head(off::LATEST).load(Ordering::Acquire) {
            0 => u32::MAX,
            v => split_latest(v).1,
        };
        // Candidates: every buffer but the newest, oldest frame first.
        let mut order: Vec<(u64, u32)> = (0..ctl.n())
            .filter(|&i| i != newest)
            .map(|i| (ctl.read_meta(i).seq, i))
            .collect();
        order.sort_unstable();
        let mut chosen = None;
        for &(_, i) in &order {
            if ctl.slot(i, off::SLOT_HOLDERS).load(Ordering::Relaxed) != 0 {
                continue;
            }
            let seq = ctl.slot(i, off::SLOT_SEQ);
            seq.fetch_add(1, Ordering::SeqCst);
            if ctl.slot(i, off::SLOT_HOLDERS).load(Ordering::SeqCst) == 0 {
                chosen = Some(i);
                break;
            }
            // A subscriber raced in: give the buffer back unchanged.
            seq.fetch_add(1, Ordering::SeqCst);
        }
        let i = match chosen {
            Some(i) => i,
            None if self.policy == Policy::Skip => {
                ctl.head(off::SKIPPED).fetch_add(1, Ordering::Relaxed);
                return Err(Error::NoBuffer);
            }
            None => {
                let (_, i) = order[0];
                ctl.slot(i, off::SLOT_SEQ).fetch_add(1, Ordering::SeqCst);
                let h = ctl.slot(i, off::SLOT_HOLDERS).swap(0, Ordering::SeqCst);
                let seq = ctl.read_meta(i).seq;
                let mut subs = sh.subs();
                for s in 0..64u32 {
                    if h & (1 << s) == 0 {
                        continue;
                    }
                    ctl.head(off::REVOKED).fetch_add(1, Ordering::Relaxed);
                    if (s as usize) < subs.len() {
                        ctl.sub(s, off::SUB_REVOKED).fetch_add(1, Ordering::Relaxed);
                        if let Some(e) = subs[s as usize].as_mut() {
                            if e.caps & proto::CAP_REVOKE_NOTICES != 0 && e.outbox.len() < MAX_OUT {
                                Msg::Revoked { buffer: i, seq }.encode(&mut e.outbox);
                            }
                        }
                    }
                }
                i
            }
        };
        // Back-pressure from the device, not from readers: the previous frame written into this
        // buffer (N - 1 frames ago) must be done on the GPU, so a publisher that submits faster
        // than its GPU works keeps at most N - 1 frames in flight instead of queueing without
        // bound (each frame's wait, and its latency, would grow with the queue).
        if let Err(e) = sh.backend.event_wait(sh.buffers[i as usize].1) {
            self.abort(i);
            return Err(e);
        }
        // The GPU waits for every reader since the last write; the CPU does not.
        {
            let subs = sh.subs();
            let r = ctl.slot(i, off::SLOT_READERS).swap(0, Ordering::SeqCst);
            for s in 0..subs.len() {
                if r & (1 << s) == 0 {
                    continue;
                }
                if let Some(ev) = subs[s].as_ref().and_then(|e| e.done.get(i as usize)) {
                    if let Err(e) = sh.backend.stream_wait(stream, *ev) {
                        self.abort(i);
                        return Err(e);
                    }
                }
            }
        }
        self.pending = Some(i);
        let base = sh.buffers[i as usize].0;
        let g = &ctl.geometry;
        Ok(BufferRef {
            index: i,
            planes: planes(base, g),
            pitches: g.strides,
            plane_count: g.plane_count,
            base,
            size: ctl.header.buffer_size,
        })
    }

    fn abort(&mut self, i: u32) {
        // Back to even with the old meta: the buffer holds what it held (or nothing usable,
        // which the seq change already tells readers).
        self.shared
            .ctl
            .slot(i, off::SLOT_SEQ)
            .fetch_add(1, Ordering::SeqCst);
        self.pending = None;
    }

    /// Publishes the acquired buffer after the work queued on `stream`: records the ready event
    /// there, then makes the frame the newest. Returns its seq.
    pub fn publish(&mut self, stream: Stream, pts: i64, duration: i64, flags: u32) -> Result<u64> {
        let i = self
            .pending
            .ok_or(Error::State("publish without acquire"))?;
        let shared = self.shared.clone();
        let sh = &*shared;
        let ctl = &sh.ctl;
        if let Err(e) = sh.backend.record(sh.buffers[i as usize].1, stream) {
            self.abort(i);
            return Err(e);
        }
        let seq = self.next_seq;
        let g = &ctl.geometry;
        ctl.write_meta(
            i,
            &CuFrameMeta {
                seq,
                pts,
                duration,
                publish_ns: monotonic_ns(),
                flags,
                buffer: i,
                width: g.width,
                height: g.height,
                format: g.format.fourcc(),
                reserved: [0; 12],
            },
        );
        ctl.slot(i, off::SLOT_SEQ).fetch_add(1, Ordering::Release);
        ctl.head(off::LATEST)
            .store(seq << 6 | u64::from(i), Ordering::Release);
        ctl.notify().store(seq as u32, Ordering::Release);
        ctl.head(off::PUBLISHED).fetch_add(1, Ordering::Relaxed);
        framecache_shm::futex::wake_all(ctl.notify());
        self.next_seq += 1;
        self.pending = None;
        Ok(seq)
    }

    /// Counters.
    pub fn stats(&self) -> PublisherStats {
        let ctl = &self.shared.ctl;
        PublisherStats {
            published: ctl.head(off::PUBLISHED).load(Ordering::Relaxed),
            skipped: ctl.head(off::SKIPPED).load(Ordering::Relaxed),
            revoked: ctl.head(off::REVOKED).load(Ordering::Relaxed),
            subscribers: (0..ctl.header.max_subscribers)
                .filter(|&s| ctl.sub_state(s).load(Ordering::Acquire) == SUB_ACTIVE)
                .count() as u32,
            held: (0..ctl.n())
                .filter(|&i| ctl.slot(i, off::SLOT_HOLDERS).load(Ordering::Acquire) != 0)
                .count() as u32,
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let sh = &self.shared;
        sh.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        sh.ctl.mark_closed();
        let _ = std::fs::remove_file(&sh.sock_path);
        let _ = std::fs::remove_file(&sh.ctl_path);
        for s in 0..sh.ctl.header.max_subscribers {
            sh.drop_subscriber(s);
        }
        for &(p, ev) in &sh.buffers {
            sh.backend.event_destroy(ev);
            sh.backend.free(p, sh.ctl.header.buffer_size);
        }
    }
}

/// Frees a partly built pool when creation fails half way.
struct Pool {
    backend: Arc<dyn Backend>,
    buffers: Vec<(DevPtr, Event)>,
    size: u64,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for &(p, ev) in &self.buffers {
            self.backend.event_destroy(ev);
            self.backend.free(p, self.size);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ConnState {
    Accepted,
    AwaitSubscribe,
    Active,
    Closing,
}

struct Conn {
    sock: UnixStream,
    dec: proto::Decoder,
    state: ConnState,
    slot: Option<u32>,
    out: Vec<u8>,
    deadline: Instant,
    pid: u32,
}

/// The socket thread: accepts subscribers, runs their handshakes, notices when they go.
fn serve(sh: Arc<Shared>, listener: UnixListener) {
    let mut conns: Vec<Conn> = Vec::new();
    while !sh.stop.load(Ordering::Acquire) {
        let mut fds = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for c in &conns {
            let mut ev = libc::POLLIN;
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.sock.as_raw_fd(),
                events: ev,
                revents: 0,
            });
        }
        // Short timeout: REVOKED notices queued by acquire() and the stop flag are checked
        // between polls.
        // SAFETY: fds is a valid array of its length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if fds[0].revents & libc::POLLIN != 0 {
            while let Ok((sock, _)) = listener.accept() {
                if sock.set_nonblocking(true).is_ok() {
                    conns.push(Conn {
                        sock,
                        dec: proto::Decoder::new(),
                        state: ConnState::Accepted,
                        slot: None,
                        out: Vec::new(),
                        deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                        pid: 0,
                    });
                }
            }
        }
        let now = Instant::now();
        for c in conns.iter_mut() {
            if c.state != ConnState::Closing {
                drive(&sh, c, now);
            }
        }
        conns.retain_mut(|c| {
            if c.state == ConnState::Closing {
                let _ = c.sock.write_all(&c.out);
                if let Some(s) = c.slot {
                    sh.drop_subscriber(s);
                }
                false
            } else {
                true
            }
        });
    }
    for c in conns.iter_mut() {
        let _ = c.sock.set_nonblocking(false);
        let _ = c.sock.set_write_timeout(Some(Duration::from_millis(100)));
        c.out.clear();
        Msg::Bye { reason: 1 }.encode(&mut c.out);
        let _ = c.sock.write_all(&c.out);
    }
}

fn fail(c: &mut Conn, code: i32, text: String) {
    Msg::Error { code, text }.encode(&mut c.out);
    c.state = ConnState::Closing;
}

/// One step of a connection: read what arrived, act on each message, flush what is queued.
fn drive(sh: &Shared, c: &mut Conn, now: Instant) {
    let mut buf = [0u8; 16384];
    loop {
        match c.sock.read(&mut buf) {
            Ok(0) => {
                c.state = ConnState::Closing;
                return;
            }
            Ok(n) => c.dec.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                c.state = ConnState::Closing;
                return;
            }
        }
    }
    loop {
        let msg = match c.dec.next_msg() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => return fail(c, e.code(), e.to_string()),
        };
        handle(sh, c, msg);
        if c.state == ConnState::Closing {
            return;
        }
    }
    if c.state != ConnState::Active && now > c.deadline {
        return fail(
            c,
            framecache_shm::error::FC_ERR_TIMEOUT,
            "handshake took too long".into(),
        );
    }
    if let Some(s) = c.slot {
        if let Some(e) = sh.subs()[s as usize].as_mut() {
            if c.out.len() < MAX_OUT {
                c.out.append(&mut e.outbox);
            } else {
                e.outbox.clear();
            }
        }
    }
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                c.state = ConnState::Closing;
                return;
            }
        }
    }
}

fn handle(sh: &Shared, c: &mut Conn, msg: Msg) {
    use framecache_shm::error::*;
    let ctl = &sh.ctl;
    match (&c.state, msg) {
        (
            ConnState::Accepted,
            Msg::HelloReq {
                proto_min,
                proto_max,
                capabilities,
                pid,
                backend,
                ..
            },
        ) => {
            let Some(version) = proto::negotiate(proto_min, proto_max, sh.proto_max) else {
                return fail(
                    c,
                    FC_ERR_VERSION,
                    format!(
                        "publisher speaks cuframes protocol {FC_CUFRAMES_PROTO_VERSION}..{}, subscriber {proto_min}..{proto_max}",
                        sh.proto_max
                    ),
                );
            };
            if backend != sh.backend.kind() {
                return fail(
                    c,
                    FC_ERR_WRONG_KIND,
                    format!(
                        "publisher uses backend {}, subscriber {backend}",
                        sh.backend.kind()
                    ),
                );
            }
            let mut subs = sh.subs();
            let Some(s) = subs.iter().position(|e| e.is_none()) else {
                drop(subs);
                return fail(
                    c,
                    FC_ERR_BUSY,
                    format!(
                        "all {} subscriber slots are taken",
                        ctl.header.max_subscribers
                    ),
                );
            };
            let mut caps = capabilities & proto::CAPS;
            if version < 2 || sh.packet_ring.is_none() {
                caps &= !proto::CAP_PACKET_RING;
            }
            subs[s] = Some(SubEntry {
                done: Vec::new(),
                caps,
                outbox: Vec::new(),
            });
            drop(subs);
            let s = s as u32;
            c.slot = Some(s);
            c.pid = pid;
            for o in [
                off::SUB_FRAMES,
                off::SUB_MISSED,
                off::SUB_REVOKED,
                off::SUB_TORN,
                off::SUB_LAST_SEQ,
            ] {
                ctl.sub(s, o).store(0, Ordering::Relaxed);
            }
            ctl.set_sub_identity(s, pid, 0);
            ctl.sub_state(s).store(SUB_HANDSHAKING, Ordering::Release);
            Msg::HelloResp {
                proto_version: version,
                sub_index: s,
                capabilities: caps,
                epoch: sh.epoch,
                backend: sh.backend.kind(),
                buffer_count: ctl.n(),
                buffer_size: ctl.header.buffer_size,
            }
            .encode(&mut c.out);
            if let Some((name, streams)) = sh
                .packet_ring
                .as_ref()
                .filter(|_| caps & proto::CAP_PACKET_RING != 0)
            {
                Msg::PacketRing {
                    initial_packet_seq: sh
                        .last_keyframe
                        .load(Ordering::Acquire)
                        .checked_sub(1)
                        .unwrap_or(u64::MAX),
                    stream_count: *streams,
                    name: name.clone(),
                }
                .encode(&mut c.out);
            }
            Msg::Buffers(sh.handles.clone()).encode(&mut c.out);
            c.state = ConnState::AwaitSubscribe;
        }
        (ConnState::AwaitSubscribe, Msg::Subscribe(handles)) => {
            if handles.len() != ctl.n() as usize {
                return fail(
                    c,
                    FC_ERR_PROTOCOL,
                    format!(
                        "SUBSCRIBE with {} events for {} buffers",
                        handles.len(),
                        ctl.n()
                    ),
                );
            }
            let mut done = Vec::new();
            for h in &handles {
                match sh.backend.import_event(h) {
                    Ok(ev) => done.push(ev),
                    Err(e) => {
                        for ev in done {
                            sh.backend.event_destroy(ev);
                        }
                        return fail(c, e.code(), format!("opening a done event: {e}"));
                    }
                }
            }
            let s = c.slot.expect("slot assigned at hello");
            if let Some(e) = sh.subs()[s as usize].as_mut() {
                e.done = done;
            }
            ctl.set_sub_identity(s, c.pid, realtime_ns());
            ctl.sub_state(s).store(SUB_ACTIVE, Ordering::Release);
            Msg::Ready {
                latest: ctl.head(off::LATEST).load(Ordering::Acquire),
            }
            .encode(&mut c.out);
            c.state = ConnState::Active;
        }
        (_, Msg::Bye { .. }) => c.state = ConnState::Closing,
        (_, Msg::Error { .. }) => c.state = ConnState::Closing,
        (state, m) => {
            let text = format!("unexpected {} in state {state:?}", m.name());
            fail(c, FC_ERR_PROTOCOL, text)
        }
    }
}

//! RTMP publishers after their publish was accepted: the hot path of the RTMP server.
//!
//! [`Publisher`] is sans-IO: bytes read from the socket go in, media go into the key's slot,
//! Acknowledgements come out. It reads chunks with [`ChunkReader`] and rewrites video to
//! Annex-B in place. A message whose chunks all arrived in one read is joined in the read
//! buffer; one cut by the end of a read is copied into its message buffer first. Then it is
//! copied into the ring.
//!
//! [`Pump`] is one thread that reads every publishing socket. With more than a couple of
//! publishers it reads them all on a fixed tick (the server's `read_interval`) instead of
//! waking on every arriving message: a 5 Mbit/s stream sends ~80 messages a second, and at that
//! rate the wake-ups, not the bytes, are what an ingest server spends its CPU on. One wake-up
//! per tick serves all publishers, and each slot's readers are woken once per tick; the cost is
//! at most one tick of added latency. With a zero interval, or publishers that send fewer
//! messages than a timer's wake-up costs, it waits in `epoll` and reads each publisher as its
//! data arrives. All publishers are read into one buffer of the pump, which stays in cache from
//! one publisher to the next.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::push::PushSession;
use framecache_media::chunk::{ChunkError, ChunkReader, Message};
use framecache_media::flv::FlvToMedia;
use framecache_media::Media;
use framecache_shm::error::{Error, Result};

/// A publisher that sends nothing for this long is dropped.
pub(crate) const PUBLISH_IDLE: Duration = Duration::from_secs(20);
/// Read buffer of one publisher read as its data arrives, and of the setup phase.
const READ_BUF: usize = 64 * 1024;
/// The pump's read buffer, shared by all its publishers: one buffer that stays in cache,
/// rather than one per publisher that is cold by the next tick (with 32 publishers, 2 MiB of
/// buffers the kernel copies into). Large enough for a tick of a high-bitrate stream.
const PUMP_BUF: usize = 256 * 1024;
/// What a pumped publisher keeps between ticks: the unparsed tail, less than a chunk header.
const TAIL_BUF: usize = 64;
/// Most bytes taken from one socket per tick, so one fast publisher cannot starve the rest.
const MAX_PER_TICK: usize = 8 << 20;

pub(crate) const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_AUDIO: u8 = 8;
const MSG_VIDEO: u8 = 9;
const MSG_COMMAND_AMF3: u8 = 17;
const MSG_COMMAND_AMF0: u8 = 20;

/// One accepted publish: the key's session and the FLV → media conversion.
pub(crate) struct Publish {
    pub session: PushSession,
    pub conv: FlvToMedia,
    /// Track and parameter events of the current tag (kept to reuse the allocation).
    pub media: Vec<Media>,
    reported_errors: u64,
}

impl Publish {
    pub fn new(session: PushSession) -> Publish {
        Publish {
            session,
            conv: FlvToMedia::new(),
            media: Vec::with_capacity(2),
            reported_errors: 0,
        }
    }

    /// One tag body given by value (rml_rtmp's events during setup).
    pub fn tag(&mut self, video: bool, body: &[u8], ts: u32) -> Result<()> {
        self.conv.tag(video, body, ts, &mut self.media);
        self.report();
        for m in self.media.drain(..) {
            self.session.push(m)?;
        }
        Ok(())
    }

    /// One tag body the publisher owns: the frame goes into the slot without a copy.
    pub fn tag_in_place(&mut self, video: bool, body: &mut [u8], ts: u32) -> Result<()> {
        let frame = self.conv.tag_in_place(video, body, ts, &mut self.media);
        self.report();
        for m in self.media.drain(..) {
            self.session.push(m)?;
        }
        if let Some(f) = frame {
            self.session.push_frame(f)?;
        }
        Ok(())
    }

    /// Logs the first few refused tags, then every 100th, and counts them as dropped.
    fn report(&mut self) {
        let errors = self.conv.errors;
        if errors <= self.reported_errors {
            return;
        }
        if self.reported_errors < 5 || errors.is_multiple_of(100) {
            log::warn!(
                "rtmp: key {:?}: dropped a tag: {}",
                self.session.key(),
                self.conv.last_error.as_deref().unwrap_or("?")
            );
        }
        self.session
            .stats()
            .dropped
            .fetch_add(errors - self.reported_errors, Ordering::Relaxed);
        self.reported_errors = errors;
    }

    /// Ends the publish (slot closed, key released) with `reason`.
    pub fn finish(self, reason: String) {
        self.session.finish(reason);
    }
}

/// A connection's inbound chunk stream: the reader, and the bytes it left unparsed (less than
/// a chunk header) at the front of a buffer with room after them to read into. The setup
/// phase (in `rtmp.rs`) and the [`Publisher`] after it read through the same one.
pub(crate) struct ChunkInput {
    reader: ChunkReader,
    buf: Vec<u8>,
    filled: usize,
}

impl Default for ChunkInput {
    fn default() -> ChunkInput {
        ChunkInput {
            reader: ChunkReader::new(),
            buf: vec![0u8; READ_BUF],
            filled: 0,
        }
    }
}

impl ChunkInput {
    /// Where the next read goes.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    /// Bytes consumed by the reader since the start of the chunk stream.
    pub fn consumed(&self) -> u64 {
        self.reader.consumed()
    }

    /// Takes `n` bytes read into [`ChunkInput::space`] and hands each complete message to
    /// `f`, until the input runs out or `f` says stop (false).
    pub fn filled(
        &mut self,
        n: usize,
        mut f: impl FnMut(Message<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.filled += n;
        let mut at = 0;
        loop {
            let (used, msg) = self
                .reader
                .read(&mut self.buf[at..self.filled])
                .map_err(|e: ChunkError| Error::Protocol(e.to_string()))?;
            at += used;
            let Some(m) = msg else { break };
            if !f(m)? {
                break;
            }
        }
        // Keep the unparsed tail (part of a chunk header) at the front.
        self.buf.copy_within(at..self.filled, 0);
        self.filled -= at;
        Ok(())
    }

    /// Makes `shared` the read buffer, the unparsed tail moved to its front, so that the
    /// publishers one thread reads in turn share one buffer; [`ChunkInput::restore`] gives it
    /// back.
    pub fn lend(&mut self, shared: &mut Vec<u8>) {
        self.swap_buffer(shared);
    }

    /// Undoes [`ChunkInput::lend`]: the tail goes back to this input's own buffer, which
    /// from then on is only big enough for a tail (the setup phase's buffer is not needed).
    pub fn restore(&mut self, shared: &mut Vec<u8>) {
        // The tail is normally part of a chunk header, but a reader that stopped early (the
        // publish ended mid-read) leaves whatever followed: the buffer holds it all.
        let need = self.filled.max(TAIL_BUF);
        if shared.len() > need || shared.len() < self.filled {
            *shared = vec![0u8; need];
        }
        self.swap_buffer(shared);
    }

    /// Reads into `other` from now on, the unparsed tail carried over to its front.
    fn swap_buffer(&mut self, other: &mut Vec<u8>) {
        std::mem::swap(&mut self.buf, other);
        self.buf[..self.filled].copy_from_slice(&other[..self.filled]);
    }

    /// [`ChunkInput::filled`] for bytes read elsewhere.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        mut f: impl FnMut(Message<'_>) -> Result<bool>,
    ) -> Result<()> {
        while !bytes.is_empty() {
            let space = self.space();
            let n = space.len().min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.filled(n, &mut f)?;
        }
        Ok(())
    }
}

/// The publishing side of one RTMP connection, from the first byte after the publish was
/// accepted (sans-IO).
pub(crate) struct Publisher {
    input: ChunkInput,
    publish: Publish,
    /// The peer's window: acknowledge every this many bytes (none until it says).
    window: Option<u32>,
    acked: u64,
    out: Vec<u8>,
    last_data: Instant,
    /// Audio and video messages taken so far (the pump's arrival rate estimate).
    media_msgs: u64,
}

/// Why a publisher's connection ends.
pub(crate) type End = String;

impl Publisher {
    /// Continues a connection whose chunk stream `input` has read so far; `window` is the
    /// acknowledgement window the peer set, if any.
    pub fn new(input: ChunkInput, mut publish: Publish, window: Option<u32>) -> Publisher {
        publish.session.set_defer_wake(true);
        Publisher {
            acked: input.consumed(),
            input,
            publish,
            window,
            out: Vec::new(),
            last_data: Instant::now(),
            media_msgs: 0,
        }
    }

    /// Where the next read goes.
    pub fn space(&mut self) -> &mut [u8] {
        self.input.space()
    }

    /// Takes `n` bytes read into [`Publisher::space`]: media into the slot, Acknowledgements
    /// queued. `Ok(Some(why))` when the peer ended the publish.
    pub fn filled(&mut self, n: usize) -> Result<Option<End>> {
        if n > 0 {
            self.last_data = Instant::now();
        }
        let Publisher {
            input,
            publish,
            window,
            media_msgs,
            ..
        } = self;
        let mut end = None;
        input.filled(n, |m| {
            match m.type_id {
                MSG_AUDIO | MSG_VIDEO => {
                    *media_msgs += 1;
                    publish.tag_in_place(m.type_id == MSG_VIDEO, m.payload, m.timestamp)?
                }
                MSG_WINDOW_ACK_SIZE => set_window_ack_size(window, m.payload),
                MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => {
                    let p = if m.type_id == MSG_COMMAND_AMF3 {
                        m.payload.get(1..).unwrap_or_default()
                    } else {
                        &m.payload[..]
                    };
                    if let Some(name @ ("deleteStream" | "FCUnpublish" | "closeStream")) =
                        command_name(p)
                    {
                        end = Some(format!("publisher sent {name}"));
                    }
                }
                _ => {} // metadata, pings, acknowledgements: nothing to do
            }
            Ok(end.is_none())
        })?;
        if let Some(w) = self.window {
            let consumed = self.input.consumed();
            if consumed - self.acked >= u64::from(w) {
                self.acked = consumed;
                self.out.extend_from_slice(&ack(consumed as u32));
            }
        }
        Ok(end)
    }

    /// Wakes the slot's readers once for everything since the last call.
    pub fn flush(&mut self) {
        self.publish.session.flush();
    }

    /// Bytes to send to the peer (Acknowledgements); the caller sends and clears them.
    pub fn outbound(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Nothing arrived for [`PUBLISH_IDLE`].
    pub fn idle(&self) -> bool {
        self.last_data.elapsed() > PUBLISH_IDLE
    }

    /// Ends the publish with `reason`.
    pub fn finish(self, reason: String) {
        self.publish.finish(reason);
    }
}

/// Applies a Window Acknowledgement Size message to `window`: the peer's window, or none (no
/// acknowledgements) when it says 0. A payload shorter than 4 bytes changes nothing.
pub(crate) fn set_window_ack_size(window: &mut Option<u32>, payload: &[u8]) {
    if let Some(b) = payload.get(..4) {
        let w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        *window = (w > 0).then_some(w);
    }
}

/// The name of an AMF0 command (its first value, a string).
fn command_name(p: &[u8]) -> Option<&str> {
    if p.len() < 3 || p[0] != 0x02 {
        return None;
    }
    let n = usize::from(u16::from_be_bytes([p[1], p[2]]));
    std::str::from_utf8(p.get(3..3 + n)?).ok()
}

/// An Acknowledgement (type 3) with a full header on chunk stream 2: nothing else is sent on
/// the connection once it publishes, so no header compression state matters.
fn ack(sequence: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = 0x02;
    b[6] = 4; // length
    b[7] = 3; // type
    b[12..].copy_from_slice(&sequence.to_be_bytes());
    b
}

/// A publisher handed to the pump with its socket.
pub(crate) struct PumpConn {
    pub sock: TcpStream,
    pub peer: SocketAddr,
    pub publisher: Publisher,
}

impl PumpConn {
    /// Reads what arrived since the last tick into `buf` (the pump's shared buffer);
    /// `Some(why)` when the connection ends.
    fn tick(&mut self, buf: &mut Vec<u8>) -> Option<End> {
        self.publisher.input.lend(buf);
        let end = self.read();
        self.publisher.input.restore(buf);
        self.publisher.flush();
        let out = self.publisher.outbound();
        if !out.is_empty() {
            match self.sock.write(out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Some(e.to_string()),
            }
        }
        if end.is_none() && self.publisher.idle() {
            return Some("idle timeout".into());
        }
        end
    }

    /// Reads the socket until it is empty (or [`MAX_PER_TICK`]), media into the slot.
    fn read(&mut self) -> Option<End> {
        let mut total = 0;
        loop {
            let space = self.publisher.space();
            let room = space.len();
            match self.sock.read(space) {
                Ok(0) => return Some("publisher closed".to_string()),
                Ok(n) => {
                    total += n;
                    match self.publisher.filled(n) {
                        // A short read emptied the socket: the next read would only say
                        // EAGAIN (a system call per publisher per tick saved).
                        Ok(None) if n < room => return None,
                        Ok(None) if total < MAX_PER_TICK => {}
                        Ok(None) => return None,
                        Ok(Some(why)) => return Some(why),
                        Err(e) => return Some(e.to_string()),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Some(e.to_string()),
            }
        }
    }
}

/// The thread that reads all handed-over publishers every `interval`, or with a zero interval
/// each as its data arrives (one `epoll` for all of them). Dropping it ends their publishes and
/// joins the thread.
pub(crate) struct Pump {
    tx: Option<mpsc::Sender<Box<PumpConn>>>,
    /// Wakes the thread when it waits in epoll: a new publisher, or the end.
    bell: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Pump {
    /// Starts the thread (idle, without wake-ups, until the first publisher).
    pub fn start(interval: Duration) -> Result<Pump> {
        let (tx, rx) = mpsc::channel();
        let ep = Epoll::new()?;
        let bell = Arc::new(eventfd()?);
        ep.add(bell.as_raw_fd(), BELL)?;
        let b = bell.clone();
        let thread = std::thread::Builder::new()
            .name("fc-rtmp-pump".into())
            .spawn(move || run(rx, interval, ep, b))
            .map_err(Error::Io)?;
        Ok(Pump {
            tx: Some(tx),
            bell,
            thread: Some(thread),
        })
    }

    /// Hands a publisher over; it is read from the next tick (or its next data) on.
    pub fn add(&self, c: PumpConn) {
        if let Some(Err(mpsc::SendError(c))) = self.tx.as_ref().map(|tx| tx.send(Box::new(c))) {
            c.publisher.finish("server stopped".into());
            return;
        }
        self.ring();
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an eventfd of ours; 8 bytes from a valid buffer.
        unsafe { libc::write(self.bell.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.tx = None;
        self.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The epoll token of the pump's eventfd (publishers' tokens are their file descriptors).
const BELL: u64 = u64::MAX;
/// While reading on arrival, every publisher is also looked at this often, for the idle timeout
/// of one that sends nothing; and the pump chooses between arrival and ticks this often.
const SWEEP: Duration = Duration::from_secs(1);

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain system call; the fd is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::os("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A level-triggered epoll set.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Result<Epoll> {
        // SAFETY: plain system call; the fd is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Error::os("epoll_create1", std::io::Error::last_os_error()));
        }
        // SAFETY: a new fd of ours.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, token: u64) -> Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd, fd and event.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(Error::os("epoll_ctl", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn remove(&self, fd: RawFd) {
        // SAFETY: valid epoll fd; a stale fd only makes the call fail.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Ready tokens into `out` (cleared first), waiting up to `timeout` (None: until one is).
    fn wait(&self, out: &mut Vec<u64>, timeout: Option<Duration>) {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: valid epoll fd and buffer of 64 events.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                evs.as_mut_ptr(),
                evs.len() as i32,
                timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32),
            )
        };
        out.clear();
        out.extend(evs[..n.max(0) as usize].iter().map(|e| e.u64));
    }
}

/// Reads one publisher (a panic in its media path ends it, not the server); `Some(why)` when
/// it ended.
fn tick_guarded(c: &mut PumpConn, buf: &mut Vec<u8>) -> Option<End> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.tick(buf)));
    r.unwrap_or_else(|_| {
        // It may have panicked while it held the shared buffer: a new one.
        *buf = vec![0u8; PUMP_BUF];
        Some("internal error (panic) on its input".into())
    })
}

/// A timer's wake-up costs about as much CPU as this many wake-ups by arriving data (measured
/// on a VM with one 5 Mbit/s publisher: ~110 µs a tick read every 20 ms, ~70 µs an arrival).
const TIMER_WAKE_COST: f64 = 1.5;

/// The pump's thread. With a zero read interval it waits in `epoll` on every publisher and
/// reads each as its data arrives, waking its slot's readers once per read: one wake-up serves
/// every publisher that is ready, and nothing hands work between threads (an async task per
/// publisher costs a reactor wake-up and a worker wake-up per message). With an interval it
/// ticks: every publisher read once per interval, on a fixed grid, one wake-up for all, unless
/// the publishers send so few messages that waking on their arrival costs less than the timer
/// (one publisher at a 20 ms interval, say): then it reads them on arrival, which adds no
/// latency. It decides again each second from the last second's message rate.
fn run(rx: mpsc::Receiver<Box<PumpConn>>, interval: Duration, ep: Epoll, bell: Arc<OwnedFd>) {
    let mut conns: HashMap<u64, Box<PumpConn>> = HashMap::new();
    let mut buf = vec![0u8; PUMP_BUF];
    let mut ready = Vec::new();
    let mut next = Instant::now();
    let mut on_arrival = true;
    let mut second = Instant::now();
    let mut msgs = 0u64; // media messages read this second
    let end = |c: Box<PumpConn>, why: End, ep: &Epoll| {
        ep.remove(c.sock.as_raw_fd());
        log::info!("rtmp: {}: publish ended: {why}", c.peer);
        c.publisher.finish(why);
    };
    // Reads publisher `k`, counting its messages; drops it when it ended.
    let read = |conns: &mut HashMap<u64, Box<PumpConn>>, buf: &mut Vec<u8>, msgs: &mut u64, k| {
        let Some(c) = conns.get_mut(&k) else { return };
        let before = c.publisher.media_msgs;
        let r = tick_guarded(c, buf);
        *msgs += c.publisher.media_msgs - before;
        if let Some(why) = r {
            let c = conns.remove(&k).expect("present");
            end(c, why, &ep);
        }
    };
    loop {
        // New publishers (and the end, when the sender is gone).
        loop {
            match rx.try_recv() {
                Ok(c) => {
                    let fd = c.sock.as_raw_fd();
                    match ep.add(fd, fd as u64) {
                        Ok(()) => {
                            conns.insert(fd as u64, c);
                        }
                        Err(e) => c.publisher.finish(e.to_string()),
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    for (_, c) in conns.drain() {
                        c.publisher.finish("server stopped".into());
                    }
                    return;
                }
            }
        }
        if on_arrival {
            // With no publisher this waits for the bell alone, without wake-ups.
            let timeout = if conns.is_empty() { None } else { Some(SWEEP) };
            ep.wait(&mut ready, timeout);
            for &t in &ready {
                if t == BELL {
                    let mut b = [0u8; 8];
                    // SAFETY: our eventfd; reading resets it.
                    unsafe { libc::read(bell.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
                } else {
                    read(&mut conns, &mut buf, &mut msgs, t);
                }
            }
            next = Instant::now();
        } else {
            let keys: Vec<u64> = conns.keys().copied().collect();
            for k in keys {
                read(&mut conns, &mut buf, &mut msgs, k);
            }
            // Ticks on a fixed grid; after a stall, the next tick is one interval from now.
            next += interval;
            let now = Instant::now();
            if next <= now {
                next = now + interval;
            }
            std::thread::sleep(next - now);
        }
        let took = second.elapsed();
        if took >= SWEEP {
            if on_arrival {
                // A publisher that sends nothing is still looked at, for its idle timeout.
                let keys: Vec<u64> = conns.keys().copied().collect();
                for k in keys {
                    read(&mut conns, &mut buf, &mut msgs, k);
                }
            }
            let per_tick = msgs as f64 / took.as_secs_f64() * interval.as_secs_f64();
            on_arrival = interval.is_zero() || per_tick < TIMER_WAKE_COST;
            second = Instant::now();
            msgs = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two chunk streams read in turn through one shared buffer, in pieces that leave parts of
    /// chunk headers unparsed between reads: each input keeps its own tail, and both read what
    /// rml_rtmp wrote.
    #[test]
    fn inputs_share_one_buffer() {
        let wire = |seed: u8| {
            let msgs: Vec<(u32, Vec<u8>)> = (0..20u32)
                .map(|i| {
                    let len = (1000 + i * 997) as usize;
                    (i * 33, (0..len).map(|k| (k as u8) ^ seed).collect())
                })
                .collect();
            let wire = framecache_testkit::rml_video_wire(4096, &msgs);
            (wire, msgs.into_iter().map(|m| m.1).collect::<Vec<_>>())
        };
        let (wa, want_a) = wire(0);
        let (wb, want_b) = wire(0x5A);
        let mut inputs = [ChunkInput::default(), ChunkInput::default()];
        let mut got = [Vec::new(), Vec::new()];
        let mut shared = vec![0u8; PUMP_BUF];
        // Odd piece sizes, so reads end inside chunk headers.
        let (mut at, step) = ([0usize, 0], [5003usize, 7919]);
        while at[0] < wa.len() || at[1] < wb.len() {
            for (k, w) in [&wa, &wb].into_iter().enumerate() {
                let piece = &w[at[k]..(at[k] + step[k]).min(w.len())];
                at[k] += piece.len();
                inputs[k].lend(&mut shared);
                let space = inputs[k].space();
                space[..piece.len()].copy_from_slice(piece);
                let out = &mut got[k];
                inputs[k]
                    .filled(piece.len(), |m| {
                        if m.type_id == 9 {
                            out.push(m.payload.to_vec());
                        }
                        Ok(true)
                    })
                    .unwrap();
                inputs[k].restore(&mut shared);
                assert_eq!(shared.len(), PUMP_BUF);
                assert!(inputs[k].buf.len() == TAIL_BUF && inputs[k].filled < TAIL_BUF);
            }
        }
        assert_eq!(got[0], want_a);
        assert_eq!(got[1], want_b);
    }

    /// A reader that stopped early (the publish ended mid-read) may leave a tail far larger
    /// than a chunk header; giving the shared buffer back keeps it whole instead of panicking
    /// (it did: the pump thread, and every publisher it read, died).
    #[test]
    fn a_large_unparsed_tail_survives_giving_the_buffer_back() {
        let mut shared = vec![0u8; PUMP_BUF];
        let mut input = ChunkInput::default();
        input.lend(&mut shared);
        let tail: Vec<u8> = (0..32311u32).map(|i| i as u8).collect();
        input.space()[..tail.len()].copy_from_slice(&tail);
        input.filled = tail.len();
        input.restore(&mut shared);
        assert_eq!(shared.len(), PUMP_BUF);
        assert_eq!(&input.buf[..input.filled], &tail[..]);
        input.lend(&mut shared);
        assert_eq!(&input.buf[..input.filled], &tail[..]);
        input.restore(&mut shared);
        assert_eq!(&input.buf[..input.filled], &tail[..]);
    }

    #[test]
    fn command_names_and_acks() {
        let mut p = vec![0x02, 0, 12];
        p.extend_from_slice(b"deleteStream");
        p.extend_from_slice(&[0x00, 0x40, 0x10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(command_name(&p), Some("deleteStream"));
        assert_eq!(command_name(&[0x02, 0, 9, b'x']), None);
        assert_eq!(command_name(&[0x00, 0, 0]), None);
        // The Acknowledgement parses back with our own reader.
        let mut a = ack(123_456).to_vec();
        let mut r = ChunkReader::new();
        let (n, m) = r.read(&mut a).unwrap();
        let m = m.unwrap();
        assert_eq!((n, m.type_id, m.stream_id), (16, 3, 0));
        assert_eq!(m.payload, &123_456u32.to_be_bytes());
    }
}

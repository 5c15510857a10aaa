//! RTMP publishers after their publish was accepted: the hot path of the RTMP server.
//!
//! [`Publisher`] is sans-IO: bytes read from the socket go in, media go into the key's slot,
//! Acknowledgements come out. It reads chunks with [`ChunkReader`] and rewrites video to
//! Annex-B in place. A message whose chunks all arrived in one read is joined in the read
//! buffer; one cut by the end of a read is copied into its message buffer first. Then it is
//! copied into the ring.
//!
//! [`Pump`] is one thread that reads every publishing socket on a fixed tick (the server's
//! `read_interval`) instead of waking on every arriving message: a 5 Mbit/s stream sends ~80
//! messages a second, and at that rate the wake-ups, not the bytes, are what an ingest server
//! spends its CPU on. One wake-up per tick serves all publishers, and each slot's readers are
//! woken once per tick. The cost is at most one tick of added latency. All publishers are read
//! into one buffer of the pump, which stays in cache from one publisher to the next.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
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
            ..
        } = self;
        let mut end = None;
        input.filled(n, |m| {
            match m.type_id {
                MSG_AUDIO | MSG_VIDEO => {
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

/// The thread that reads all handed-over publishers every `interval`. Dropping it ends their
/// publishes and joins the thread.
pub(crate) struct Pump {
    tx: Option<mpsc::Sender<Box<PumpConn>>>,
    thread: Option<JoinHandle<()>>,
}

impl Pump {
    /// Starts the thread (idle, without wake-ups, until the first publisher).
    pub fn start(interval: Duration) -> Result<Pump> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fc-rtmp-pump".into())
            .spawn(move || run(rx, interval))
            .map_err(Error::Io)?;
        Ok(Pump {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands a publisher over; it is read from the next tick on.
    pub fn add(&self, c: PumpConn) {
        if let Some(Err(mpsc::SendError(c))) = self.tx.as_ref().map(|tx| tx.send(Box::new(c))) {
            c.publisher.finish("server stopped".into());
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: mpsc::Receiver<Box<PumpConn>>, interval: Duration) {
    let mut conns: Vec<Box<PumpConn>> = Vec::new();
    let mut buf = vec![0u8; PUMP_BUF];
    let mut next = Instant::now();
    loop {
        if conns.is_empty() {
            match rx.recv() {
                Ok(c) => conns.push(c),
                Err(_) => return,
            }
            next = Instant::now();
        }
        loop {
            match rx.try_recv() {
                Ok(c) => conns.push(c),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    for c in conns.drain(..) {
                        c.publisher.finish("server stopped".into());
                    }
                    return;
                }
            }
        }
        let mut i = 0;
        while i < conns.len() {
            // A panic in one publisher's media path ends that publisher, not the server.
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conns[i].tick(&mut buf)));
            let end = r.unwrap_or_else(|_| {
                // It may have panicked while it held the shared buffer: a new one.
                buf = vec![0u8; PUMP_BUF];
                Some("internal error (panic) on its input".into())
            });
            match end {
                None => i += 1,
                Some(why) => {
                    let c = conns.swap_remove(i);
                    log::info!("rtmp: {}: publish ended: {why}", c.peer);
                    c.publisher.finish(why);
                }
            }
        }
        // Ticks on a fixed grid; after a stall, the next tick is one interval from now.
        next += interval;
        let now = Instant::now();
        if next <= now {
            next = now + interval;
        }
        std::thread::sleep(next - now);
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

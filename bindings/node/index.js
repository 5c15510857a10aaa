'use strict';
// framecache for Node: frame and packet slots over libframecache's C ABI through koffi.
// Waiting reads run on koffi's worker pool (the event loop keeps running); frames read with
// `read()` are zero-copy views of the shared memory, valid until the next read: check
// `frame.intact()` after using one, or use `readCopy()`.

const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const koffi = require('koffi');

function candidates() {
  if (process.env.FRAMECACHE_LIB) return [process.env.FRAMECACHE_LIB];
  const out = [];
  try {
    const dir = execFileSync('pkg-config', ['--variable=libdir', 'framecache'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dir) out.push(path.join(dir, 'libframecache.so'));
  } catch (_) { /* no pkg-config entry */ }
  const top = path.resolve(__dirname, '..', '..');
  for (const profile of ['release', 'debug']) out.push(path.join(top, 'target', profile, 'libframecache.so'));
  out.push('libframecache.so.0');
  return out;
}

function loadLibrary() {
  const tried = [];
  for (const c of candidates()) {
    tried.push(c);
    if (path.isAbsolute(c) && !fs.existsSync(c)) continue;
    try { return { lib: koffi.load(c), path: c }; } catch (_) { /* next */ }
  }
  const e = new Error(`libframecache.so not found (tried: ${tried.join(', ')}). Install it (capi/install.sh), build it (cargo build -p framecache-capi), or set FRAMECACHE_LIB.`);
  e.code = 'FC_NO_LIBRARY';
  throw e;
}

const { lib, path: libraryPath } = loadLibrary();

// Zero-copy views need external ArrayBuffers, which Electron forbids (its V8 memory cage):
// koffi.view throws there. Then every read copies the bytes into a buffer of its own with
// memcpy (about 0.1 ms per 1080p frame, against ~2 ms for koffi.decode), and `zeroCopy` says so.
// FRAMECACHE_NODE_COPY=1 forces the copies.
const memcpy = koffi.load('libc.so.6').func('void *memcpy(void *dst, const void *src, size_t n)');
let zeroCopy = process.env.FRAMECACHE_NODE_COPY === '1' ? false : null;
function bytesAt(ptr, size) {
  if (zeroCopy !== false) {
    try {
      const v = new Uint8Array(koffi.view(ptr, size));
      zeroCopy = true;
      return v;
    } catch (e) {
      if (zeroCopy === true) throw e; // views worked before: a real error
      zeroCopy = false;
    }
  }
  const copy = Buffer.allocUnsafe(size);
  if (size > 0) memcpy(copy, ptr, size);
  return new Uint8Array(copy.buffer, copy.byteOffset, size);
}

const u32x4 = koffi.array('uint32_t', 4);
const fc_slot_config = koffi.struct('fc_slot_config', {
  struct_size: 'uint32_t', fourcc: 'uint32_t', width: 'uint32_t', height: 'uint32_t',
  fps_num: 'uint32_t', fps_den: 'uint32_t', depth: 'uint32_t', mode: 'uint32_t',
  row_align: 'uint32_t', flags: 'uint32_t', source_type: 'const char *', labels: 'const char *',
});
const fc_slot_status = koffi.struct('fc_slot_status', {
  struct_size: 'uint32_t', kind: 'uint32_t', id: koffi.array('char', 72, 'String'),
  source_type: koffi.array('char', 16, 'String'), fourcc: 'uint32_t', width: 'uint32_t',
  height: 'uint32_t', fps_num: 'uint32_t', fps_den: 'uint32_t', depth: 'uint32_t',
  writer_pid: 'uint32_t', writer_alive: 'uint32_t', frame_size: 'uint64_t',
  frames_written: 'uint64_t', epoch_ns: 'uint64_t', last_publish_ns: 'uint64_t',
  stream_count: 'uint32_t', codecs: koffi.array('uint32_t', 8), bytes_published: 'uint64_t',
});
const fc_consumer_config = koffi.struct('fc_consumer_config', { struct_size: 'uint32_t', mode: 'uint32_t', start: 'uint32_t' });
const fc_frame = koffi.struct('fc_frame', {
  struct_size: 'uint32_t', fourcc: 'uint32_t', width: 'uint32_t', height: 'uint32_t',
  plane_count: 'uint32_t', flags: 'uint32_t', strides: u32x4, offsets: u32x4, data: 'void *',
  size: 'uint64_t', seq: 'uint64_t', pts: 'int64_t', capture_ns: 'uint64_t',
  publish_ns: 'uint64_t', skipped: 'uint64_t',
});
const fc_consumer_counters = koffi.struct('fc_consumer_counters', {
  struct_size: 'uint32_t', writer_alive: 'uint32_t', frames_read: 'uint64_t',
  frames_skipped: 'uint64_t', overwritten: 'uint64_t', reattached: 'uint64_t',
  writer_frames: 'uint64_t', latency_last_ns: 'uint64_t', latency_avg_ns: 'uint64_t',
  latency_max_ns: 'uint64_t',
});
const fc_stream_info = koffi.struct('fc_stream_info', {
  struct_size: 'uint32_t', codec: 'uint32_t', media: 'uint32_t', timebase_num: 'uint32_t',
  timebase_den: 'uint32_t', width: 'uint32_t', height: 'uint32_t', fps_num: 'uint32_t',
  fps_den: 'uint32_t', sample_rate: 'uint32_t', channels: 'uint32_t', params_gen: 'uint32_t',
  tag: koffi.array('char', 16),
});
const fc_packet_slot_config = koffi.struct('fc_packet_slot_config', {
  struct_size: 'uint32_t', stream_count: 'uint32_t', streams: 'fc_stream_info *',
  payload_size: 'uint64_t', desc_count: 'uint32_t', params_capacity: 'uint32_t',
  mode: 'uint32_t', flags: 'uint32_t', source_type: 'const char *', labels: 'const char *',
});
const fc_packet = koffi.struct('fc_packet', {
  struct_size: 'uint32_t', stream: 'uint32_t', flags: 'uint32_t', params_gen: 'uint32_t',
  pts: 'int64_t', dts: 'int64_t', data: 'void *', size: 'uint64_t', seq: 'uint64_t',
  publish_ns: 'uint64_t', skipped: 'uint64_t', pos: 'uint64_t',
});
const fc_packet_reader_config = koffi.struct('fc_packet_reader_config', { struct_size: 'uint32_t', start: 'uint32_t' });
const fc_ingest_event = koffi.struct('fc_ingest_event', {
  struct_size: 'uint32_t', kind: 'uint32_t', input: 'const char *', reason: 'const char *',
  stream_count: 'uint32_t', codecs: koffi.array('uint32_t', 8), width: 'uint32_t',
  height: 'uint32_t', sample_rate: 'uint32_t', channels: 'uint32_t',
  // Since 0.2.
  slot: 'const char *', priority: 'uint32_t', stream: 'uint32_t', size: 'uint64_t',
  pts: 'int64_t', dts: 'int64_t', keyframe: 'uint32_t',
});
const fc_ingest_stats = koffi.struct('fc_ingest_stats', {
  struct_size: 'uint32_t', connected: 'uint32_t', bytes: 'uint64_t', packets: 'uint64_t',
  dropped: 'uint64_t', bitrate: 'uint64_t', last_packet_ns: 'uint64_t', reconnects: 'uint64_t',
  current_input: 'uint32_t', reserved: 'uint32_t',
});
const fc_whep_config = koffi.struct('fc_whep_config', {
  struct_size: 'uint32_t', max_viewers_per_stream: 'uint32_t', max_viewers_total: 'uint32_t',
  retry_after_s: 'uint32_t', ice_gather_timeout_ms: 'uint32_t', connect_timeout_ms: 'uint32_t',
  disconnect_timeout_ms: 'uint32_t', reserved: 'uint32_t', root: 'const char *',
  token: 'const char *', allowed_origins: 'const char *', ice_ip: 'const char *', ingest: 'void *',
});
const fc_whep_stats = koffi.struct('fc_whep_stats', {
  struct_size: 'uint32_t', reserved: 'uint32_t', viewers: 'uint64_t', peer_connections: 'uint64_t',
  feeds: 'uint64_t', offers: 'uint64_t', units: 'uint64_t', bytes: 'uint64_t',
  ring_skipped: 'uint64_t', viewer_skipped: 'uint64_t', publishers: 'uint64_t',
});
const IngestEventFn = koffi.proto('void fc_ingest_event_fn(void *user, const fc_ingest_event *event)');
const LogFn = koffi.proto('void fc_log_fn(void *user, int level, const char *target, const char *message)');
koffi.opaque('fc_ingest');
koffi.opaque('fc_whep');
koffi.opaque('fc_producer');
koffi.opaque('fc_consumer');
koffi.opaque('fc_packet_writer');
koffi.opaque('fc_packet_reader');

const C = {
  strerror: lib.func('const char *fc_strerror(int code)'),
  lastError: lib.func('const char *fc_last_error(void)'),
  version: lib.func('const char *fc_version(void)'),
  producerCreate: lib.func('int fc_producer_create(const char *slot, const fc_slot_config *config, _Out_ fc_producer **out)'),
  producerWrite: lib.func('int fc_producer_write(fc_producer *p, const uint8_t *data, size_t size, int64_t pts, uint64_t capture_ns, _Out_ uint64_t *seq)'),
  producerClose: lib.func('void fc_producer_close(fc_producer *p)'),
  slotInfo: lib.func('int fc_slot_info(const char *slot, _Inout_ fc_slot_status *out)'),
  consumerOpen: lib.func('int fc_consumer_open(const char *slot, const fc_consumer_config *config, _Out_ fc_consumer **out)'),
  consumerRead: lib.func('int fc_consumer_read(fc_consumer *c, _Inout_ fc_frame *frame, int timeout_ms)'),
  consumerCheck: lib.func('int fc_consumer_check(fc_consumer *c, const fc_frame *frame)'),
  consumerReadCopy: lib.func('int fc_consumer_read_copy(fc_consumer *c, _Out_ uint8_t *buf, size_t cap, _Inout_ fc_frame *frame, int timeout_ms)'),
  consumerStats: lib.func('int fc_consumer_stats(fc_consumer *c, _Inout_ fc_consumer_counters *stats)'),
  consumerClose: lib.func('void fc_consumer_close(fc_consumer *c)'),
  packetWriterCreate: lib.func('int fc_packet_writer_create(const char *slot, const fc_packet_slot_config *config, _Out_ fc_packet_writer **out)'),
  packetSetCodecParams: lib.func('int fc_packet_set_codec_params(fc_packet_writer *w, uint32_t stream, const uint8_t *data, size_t size, _Out_ uint32_t *gen)'),
  packetPublish: lib.func('int fc_packet_publish(fc_packet_writer *w, const fc_packet *packet, _Out_ uint64_t *seq)'),
  packetWriterClose: lib.func('void fc_packet_writer_close(fc_packet_writer *w)'),
  packetReaderOpen: lib.func('int fc_packet_reader_open(const char *slot, const fc_packet_reader_config *config, _Out_ fc_packet_reader **out)'),
  packetStreamCount: lib.func('int fc_packet_stream_count(fc_packet_reader *r, _Out_ uint32_t *count)'),
  packetGetStream: lib.func('int fc_packet_get_stream(fc_packet_reader *r, uint32_t index, _Inout_ fc_stream_info *out)'),
  packetNext: lib.func('int fc_packet_next(fc_packet_reader *r, _Inout_ fc_packet *packet, int timeout_ms)'),
  packetCheck: lib.func('int fc_packet_check(fc_packet_reader *r, const fc_packet *packet)'),
  packetGetCodecParams: lib.func('int fc_packet_get_codec_params(fc_packet_reader *r, uint32_t stream, uint32_t gen, _Out_ uint8_t *buf, size_t cap, _Out_ size_t *size, _Out_ uint32_t *gen_out)'),
  packetReaderClose: lib.func('void fc_packet_reader_close(fc_packet_reader *r)'),
  ingestCreate: lib.func('int fc_ingest_create(_Out_ fc_ingest **out)'),
  ingestDestroy: lib.func('void fc_ingest_destroy(fc_ingest *e)'),
  ingestSetCallback: lib.func('int fc_ingest_set_callback(fc_ingest *e, fc_ingest_event_fn *cb, void *user)'),
  ingestSetStreamCallback: lib.func('int fc_ingest_set_stream_callback(fc_ingest *e, const char *slot, fc_ingest_event_fn *cb, void *user)'),
  ingestObserve: lib.func('int fc_ingest_observe(fc_ingest *e, uint32_t kinds)'),
  ingestListen: lib.func('int fc_ingest_listen(fc_ingest *e, const char *url, _Out_ uint8_t *bound, size_t bound_len)'),
  ingestRegisterKey: lib.func('int fc_ingest_register_key(fc_ingest *e, const char *key, const char *slot, const char *passphrase)'),
  ingestUnregisterKey: lib.func('int fc_ingest_unregister_key(fc_ingest *e, const char *key)'),
  ingestAdd: lib.func('int fc_ingest_add(fc_ingest *e, const char *slot, const char **urls, size_t count)'),
  ingestRemove: lib.func('int fc_ingest_remove(fc_ingest *e, const char *slot)'),
  ingestSetPlayAccess: lib.func('int fc_ingest_set_play_access(fc_ingest *e, int enabled, const char *token, uint32_t max_per_stream, uint32_t max_total)'),
  ingestSetPlayToken: lib.func('int fc_ingest_set_play_token(fc_ingest *e, const char *slot, const char *token)'),
  ingestGetStats: lib.func('int fc_ingest_get_stats(fc_ingest *e, const char *name, _Inout_ fc_ingest_stats *out)'),
  whepCreate: lib.func('int fc_whep_create(const fc_whep_config *config, _Out_ fc_whep **out)'),
  whepDestroy: lib.func('void fc_whep_destroy(fc_whep *w)'),
  whepListen: lib.func('int fc_whep_listen(fc_whep *w, const char *addr, _Out_ uint8_t *bound, size_t bound_len)'),
  whepCloseStream: lib.func('int fc_whep_close_stream(fc_whep *w, const char *stream, _Out_ size_t *removed)'),
  whepSetStreamToken: lib.func('int fc_whep_set_stream_token(fc_whep *w, const char *stream, const char *token)'),
  whepGetStats: lib.func('int fc_whep_get_stats(fc_whep *w, const char *stream, _Inout_ fc_whep_stats *out)'),
  whepSetIngest: lib.func('int fc_whep_set_ingest(fc_whep *w, fc_ingest *ingest)'),
  setLogCallback: lib.func('int fc_set_log_callback(int min_level, fc_log_fn *cb, void *user)'),
};

const ERRORS = {
  '-1': 'FC_ERR_INVALID_ARG', '-2': 'FC_ERR_NOT_FOUND', '-3': 'FC_ERR_BUSY', '-4': 'FC_ERR_TIMEOUT',
  '-5': 'FC_ERR_WRITER_GONE', '-6': 'FC_ERR_OVERWRITTEN', '-7': 'FC_ERR_BAD_MAGIC', '-8': 'FC_ERR_VERSION',
  '-9': 'FC_ERR_CORRUPT', '-10': 'FC_ERR_TRUNCATED', '-11': 'FC_ERR_BAD_SLOT_ID', '-12': 'FC_ERR_PERMISSION',
  '-13': 'FC_ERR_NO_SPACE', '-14': 'FC_ERR_IO', '-15': 'FC_ERR_BUFFER_TOO_SMALL',
  '-16': 'FC_ERR_UNSUPPORTED_FORMAT', '-17': 'FC_ERR_PANIC', '-18': 'FC_ERR_STATE',
  '-19': 'FC_ERR_WRONG_KIND', '-20': 'FC_ERR_OVERSIZED', '-21': 'FC_ERR_NO_PACKET_RING',
  '-22': 'FC_ERR_NO_CODEC_PARAMS', '-23': 'FC_ERR_PACKET_OVERRUN', '-24': 'FC_ERR_BAD_URL',
  '-25': 'FC_ERR_REJECTED', '-26': 'FC_ERR_PROTOCOL', '-27': 'FC_ERR_NO_LIBRARY', '-28': 'FC_ERR_NO_CUDA',
  '-29': 'FC_ERR_NO_BUFFER',
};

/** A framecache error: `code` is the FC_ERR_* name, `errno` its value. */
class FramecacheError extends Error {
  constructor(errno, detail) {
    const code = ERRORS[String(errno)] || `FC_ERR_${-errno}`;
    super(`${code}: ${detail || C.strerror(errno)}`);
    this.name = 'FramecacheError';
    this.code = code;
    this.errno = errno;
  }
}

// fc_last_error is per thread: it is read right after synchronous calls only.
function check(rc) {
  if (rc !== 0) throw new FramecacheError(rc, C.lastError());
  return rc;
}

function checkAsync(rc) {
  if (rc !== 0) throw new FramecacheError(rc, null);
  return rc;
}

function callAsync(fn, ...args) {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err, rc) => (err ? reject(err) : resolve(rc)));
  });
}

function slotId(slot) {
  if (typeof slot !== 'string') throw new FramecacheError(-1, `slot id must be a string, not ${typeof slot}`);
  return slot;
}

const FOURCC = {
  uyvy422: 1498831189, yuyv422: 844715353, nv12: 842094158, yuv420p: 808596553,
  p010le: 808530000, v210: 808530550, bgra: 1095911234, rgb24: 859981650,
};
const FORMAT_NAMES = Object.fromEntries(Object.entries(FOURCC).map(([k, v]) => [v, k]));
const CODEC = { h264: 1, hevc: 2, aac: 3, opus: 4, mp2: 5, mp3: 6, ac3: 7, data: 8 };
const MODES = { sequential: 0, latest: 1 };
const STARTS = { newest: 0, oldest: 1, next: 2 };
const PACKET_STARTS = { keyframe: 0, oldest_keyframe: 1, next: 2 };

// Handles not closed explicitly are closed when collected (a safety net, not the way).
const finalizer = new FinalizationRegistry(({ close, handle }) => close(handle));

class Handle {
  constructor(handle, close) {
    this._h = handle;
    this._close = close;
    finalizer.register(this, { close, handle }, this);
  }
  _handle() {
    if (!this._h) throw new FramecacheError(-18, `${this.constructor.name} is closed`);
    return this._h;
  }
  /** Releases the handle (idempotent); views it handed out become invalid. */
  close() {
    const h = this._h;
    this._h = null;
    if (h) {
      finalizer.unregister(this);
      this._close(h);
    }
  }
}
if (Symbol.dispose) Handle.prototype[Symbol.dispose] = Handle.prototype.close;

class Frame {
  constructor(f, data, consumer) {
    this.seq = Number(f.seq);
    this.pts = Number(f.pts);
    this.captureNs = f.capture_ns;
    this.publishNs = f.publish_ns;
    this.skipped = Number(f.skipped);
    this.flags = f.flags;
    this.width = f.width;
    this.height = f.height;
    this.fourcc = f.fourcc;
    this.format = FORMAT_NAMES[f.fourcc] || `0x${f.fourcc.toString(16)}`;
    this.strides = Array.from(f.strides).slice(0, f.plane_count);
    this.offsets = Array.from(f.offsets).slice(0, f.plane_count);
    /** The frame's bytes (planes at `offsets`, rows `strides` apart). */
    this.data = data;
    this._f = f;
    this._consumer = consumer;
  }
  /** Whether the frame was not overwritten since it was read (always true for copies). */
  intact() {
    if (!this._consumer) return true;
    const rc = C.consumerCheck(this._consumer._handle(), this._f);
    if (rc === -6) return false;
    check(rc);
    return true;
  }
}

// A read first tries without waiting, on this thread: a frame that is already there costs one
// FFI call (~1 µs) instead of a round trip through koffi's worker pool (~45 µs on a 2-core
// VM, two thread hand-offs). Only a read that has to wait goes to the pool.
async function readNow(fn, handle, out, ms) {
  const rc = fn(handle, out, 0);
  if (rc !== -4 || ms === 0) return rc;
  return callAsync(fn, handle, out, ms);
}

function timeoutMs(opts) {
  const t = opts && opts.timeoutMs;
  return t === undefined ? 1000 : t < 0 ? -1 : Math.floor(t);
}

/** What slot `slot` is (its frame slot, else its packet slot). */
function info(slot) {
  const s = { struct_size: koffi.sizeof(fc_slot_status) };
  check(C.slotInfo(slotId(slot), s));
  return {
    id: s.id, kind: s.kind === 1 ? 'frames' : 'packets', format: FORMAT_NAMES[s.fourcc],
    width: s.width, height: s.height, fps: [s.fps_num, s.fps_den], depth: s.depth,
    writerPid: s.writer_pid, writerAlive: s.writer_alive === 1, frameSize: Number(s.frame_size),
    framesWritten: Number(s.frames_written), codecs: Array.from(s.codecs).slice(0, s.stream_count),
  };
}

/** A reader of frame slot `slot` (under $FC_SHM_DIR). */
class Consumer extends Handle {
  constructor(slot, { mode = 'sequential', start = 'newest' } = {}) {
    if (!(mode in MODES) || !(start in STARTS)) throw new FramecacheError(-1, `mode ${mode} / start ${start}`);
    const out = [null];
    check(C.consumerOpen(slotId(slot), { struct_size: koffi.sizeof(fc_consumer_config), mode: MODES[mode], start: STARTS[start] }, out));
    super(out[0], C.consumerClose);
    this.slot = slot;
  }
  /** The next frame as a zero-copy view (valid until the next read), waiting on a worker thread. */
  async read(opts) {
    const f = { struct_size: koffi.sizeof(fc_frame) };
    checkAsync(await readNow(C.consumerRead, this._handle(), f, timeoutMs(opts)));
    const data = bytesAt(f.data, Number(f.size));
    return new Frame(f, data, this);
  }
  /** The next frame copied into a buffer of its own (never a frame overwritten during the copy). */
  async readCopy(opts) {
    for (;;) {
      const size = (this._size = this._size || info(this.slot).frameSize);
      const buf = Buffer.allocUnsafe(size); // entirely written by the copy, or dropped
      const f = { struct_size: koffi.sizeof(fc_frame) };
      const rc = await callAsync(C.consumerReadCopy, this._handle(), buf, buf.length, f, timeoutMs(opts));
      if (rc === -15) { this._size = 0; continue; } // a new writer with larger frames
      checkAsync(rc);
      return new Frame(f, new Uint8Array(buf.buffer, buf.byteOffset, Number(f.size)), null);
    }
  }
  /** The reader's counters. */
  stats() {
    const s = { struct_size: koffi.sizeof(fc_consumer_counters) };
    check(C.consumerStats(this._handle(), s));
    delete s.struct_size;
    return s;
  }
  /** Frames until the writer is gone. */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      try {
        yield await this.read({ timeoutMs: this.iterTimeoutMs === undefined ? 5000 : this.iterTimeoutMs });
      } catch (e) {
        if (e.code === 'FC_ERR_WRITER_GONE') return;
        throw e;
      }
    }
  }
}

/** The writer of frame slot `slot`. */
class Producer extends Handle {
  constructor(slot, { format, width, height, fpsNum = 30, fpsDen = 1, depth = 0, keep = false }) {
    const fourcc = typeof format === 'string' ? FOURCC[format] : format;
    if (fourcc === undefined) throw new FramecacheError(-16, `unknown format ${format}`);
    const out = [null];
    check(C.producerCreate(slotId(slot), {
      struct_size: koffi.sizeof(fc_slot_config), fourcc, width, height, fps_num: fpsNum,
      fps_den: fpsDen, depth, flags: keep ? 1 : 0,
    }, out));
    super(out[0], C.producerClose);
  }
  /** Copies one whole frame into the ring and publishes it; returns its sequence number. */
  write(data, pts = 0) {
    const seq = [0];
    check(C.producerWrite(this._handle(), data, data.byteLength, pts, 0, seq));
    return Number(seq[0]);
  }
}

/** A reader of packet slot `slot`. */
class PacketReader extends Handle {
  constructor(slot, { start = 'keyframe' } = {}) {
    if (!(start in PACKET_STARTS)) throw new FramecacheError(-1, `start ${start}`);
    const out = [null];
    check(C.packetReaderOpen(slotId(slot), { struct_size: koffi.sizeof(fc_packet_reader_config), start: PACKET_STARTS[start] }, out));
    super(out[0], C.packetReaderClose);
  }
  /** The slot's streams. */
  streams() {
    const n = [0];
    check(C.packetStreamCount(this._handle(), n));
    const out = [];
    for (let i = 0; i < n[0]; i++) {
      const s = { struct_size: koffi.sizeof(fc_stream_info) };
      check(C.packetGetStream(this._handle(), i, s));
      out.push({ codec: s.codec, media: s.media, timebase: [s.timebase_num, s.timebase_den], width: s.width, height: s.height, sampleRate: s.sample_rate, channels: s.channels, paramsGen: s.params_gen });
    }
    return out;
  }
  /** The next packet; `data` is a zero-copy view valid until the next read. */
  async read(opts) {
    const p = { struct_size: koffi.sizeof(fc_packet) };
    checkAsync(await readNow(C.packetNext, this._handle(), p, timeoutMs(opts)));
    const data = bytesAt(p.data, Number(p.size));
    const r = this;
    return {
      stream: p.stream, pts: Number(p.pts), dts: Number(p.dts), keyframe: (p.flags & 1) !== 0,
      seq: Number(p.seq), paramsGen: p.params_gen, data,
      intact() { const rc = C.packetCheck(r._handle(), p); if (rc === -23) return false; check(rc); return true; },
    };
  }
  /** [generation, Buffer] of a stream's codec parameters (gen 0 = the latest). */
  codecParams(stream, gen = 0) {
    const size = [0];
    const g = [0];
    const rc = C.packetGetCodecParams(this._handle(), stream, gen, null, 0, size, g);
    if (rc !== 0 && rc !== -15) check(rc);
    const buf = Buffer.alloc(Number(size[0]));
    check(C.packetGetCodecParams(this._handle(), stream, gen, buf, buf.length, size, g));
    return [g[0], buf];
  }
  async *[Symbol.asyncIterator]() {
    for (;;) {
      try { yield await this.read({ timeoutMs: 5000 }); } catch (e) { if (e.code === 'FC_ERR_WRITER_GONE') return; throw e; }
    }
  }
}

/** The writer of packet slot `slot` with `streams` ({codec: 'h264' | number, timebase, width, height, sampleRate, channels}). */
class PacketWriter extends Handle {
  constructor(slot, streams, { payloadSize = 0, keep = false } = {}) {
    const infos = streams.map((s) => ({
      struct_size: koffi.sizeof(fc_stream_info),
      codec: typeof s.codec === 'string' ? CODEC[s.codec] : s.codec,
      timebase_num: (s.timebase || [1, 90000])[0], timebase_den: (s.timebase || [1, 90000])[1],
      width: s.width || 0, height: s.height || 0, sample_rate: s.sampleRate || 0, channels: s.channels || 0,
    }));
    const arr = koffi.alloc(fc_stream_info, infos.length);
    koffi.encode(arr, koffi.array(fc_stream_info, infos.length), infos);
    const out = [null];
    try {
      check(C.packetWriterCreate(slotId(slot), {
        struct_size: koffi.sizeof(fc_packet_slot_config), stream_count: infos.length, streams: arr,
        payload_size: payloadSize, flags: keep ? 1 : 0,
      }, out));
    } finally {
      koffi.free(arr);
    }
    super(out[0], C.packetWriterClose);
  }
  setCodecParams(stream, data) {
    const g = [0];
    check(C.packetSetCodecParams(this._handle(), stream, data, data.byteLength, g));
    return g[0];
  }
  publish(stream, data, { pts, dts = pts, keyframe = false }) {
    const seq = [0];
    const buf = Buffer.from(data.buffer ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : data);
    check(C.packetPublish(this._handle(), {
      struct_size: koffi.sizeof(fc_packet), stream, flags: keyframe ? 1 : 0, pts, dts,
      data: buf, size: buf.length,
    }, seq));
    return Number(seq[0]);
  }
}

const INGEST_EVENTS = {
  1: 'connected', 2: 'disconnected', 3: 'mediaInfo', 4: 'inputFailed', 5: 'refused', 6: 'packet',
};

/** An `fc_ingest_event` as a plain object (valid after the callback returns). */
function ingestEvent(ev) {
  const e = koffi.decode(ev, fc_ingest_event);
  return {
    kind: INGEST_EVENTS[e.kind] || e.kind, slot: e.slot, input: e.input, reason: e.reason,
    codecs: Array.from(e.codecs).slice(0, e.stream_count), width: e.width, height: e.height,
    sampleRate: e.sample_rate, channels: e.channels, priority: e.priority, stream: e.stream,
    size: Number(e.size), pts: Number(e.pts), dts: Number(e.dts), keyframe: e.keyframe === 1,
  };
}

function bound(buf) {
  const n = buf.indexOf(0);
  return buf.subarray(0, n < 0 ? buf.length : n).toString();
}

/**
 * The ingest engine: push listeners (`rtmp://ADDR:PORT`, `rtmps://`, `srt://`), stream keys and
 * pull inputs into packet slots. Events arrive on the event loop through `onEvent` (the engine
 * calls from its own threads; koffi queues the calls to the JS thread).
 */
class Ingest extends Handle {
  constructor() {
    const out = [null];
    check(C.ingestCreate(out));
    super(out[0], C.ingestDestroy);
    this._cb = null;
    this._streamCbs = new Map();
  }
  /**
   * Calls `fn(event)` for each event of every slot: {kind, slot, input, reason, ...}. Kinds:
   * connected, disconnected, mediaInfo; with `observe()`, also inputFailed, refused, packet.
   */
  onEvent(fn) {
    const cb = koffi.register((user, ev) => fn(ingestEvent(ev)), koffi.pointer(IngestEventFn));
    check(C.ingestSetCallback(this._handle(), cb, null));
    if (this._cb) koffi.unregister(this._cb);
    this._cb = cb;
  }
  /** Calls `fn(event)` for the events of `slot` alone (beside `onEvent`); `null` stops. */
  onStreamEvent(slot, fn) {
    const cb = fn ? koffi.register((user, ev) => fn(ingestEvent(ev)), koffi.pointer(IngestEventFn)) : null;
    try {
      check(C.ingestSetStreamCallback(this._handle(), slot, cb, null));
    } catch (e) {
      if (cb) koffi.unregister(cb);
      throw e;
    }
    if (this._streamCbs.has(slot)) koffi.unregister(this._streamCbs.get(slot));
    if (cb) this._streamCbs.set(slot, cb); else this._streamCbs.delete(slot);
  }
  /**
   * Which events the callbacks get beyond connected/disconnected/mediaInfo: `failures`
   * (inputFailed, refused) and `packets` (one event per published packet: {slot, stream, size,
   * keyframe, pts, dts}; off again with `packets: false`).
   */
  observe({ failures = false, packets = false } = {}) {
    let kinds = (1 << 1) | (1 << 2) | (1 << 3);
    if (failures) kinds |= (1 << 4) | (1 << 5);
    if (packets) kinds |= 1 << 6;
    check(C.ingestObserve(this._handle(), kinds));
  }
  /** Starts a listener; returns the bound address (port 0 picks one). */
  listen(url) {
    const buf = Buffer.alloc(128);
    check(C.ingestListen(this._handle(), url, buf, buf.length));
    return bound(buf);
  }
  /** RTMP play of listeners started afterwards: on/off, the viewer token (`?token=`), caps (0 = none). */
  setPlayAccess({ enabled = true, token = null, maxPerStream = 0, maxTotal = 0 } = {}) {
    check(C.ingestSetPlayAccess(this._handle(), enabled ? 1 : 0, token, maxPerStream, maxTotal));
  }
  /** The viewer token of one slot for RTMP play (beside the global one); `null` removes it. */
  setPlayToken(slot, token) { check(C.ingestSetPlayToken(this._handle(), slot, token)); }
  registerKey(key, slot, passphrase = null) { check(C.ingestRegisterKey(this._handle(), key, slot, passphrase)); }
  unregisterKey(key) { check(C.ingestUnregisterKey(this._handle(), key)); }
  /** Pulls `urls` (failover order) into `slot`. */
  add(slot, urls) { check(C.ingestAdd(this._handle(), slot, urls, urls.length)); }
  remove(slot) { check(C.ingestRemove(this._handle(), slot)); }
  /** Counters of a stream key or pull slot. */
  stats(name) {
    const s = { struct_size: koffi.sizeof(fc_ingest_stats) };
    check(C.ingestGetStats(this._handle(), name, s));
    return {
      connected: s.connected === 1, bytes: Number(s.bytes), packets: Number(s.packets),
      dropped: Number(s.dropped), bitrate: Number(s.bitrate), reconnects: Number(s.reconnects),
      currentInput: s.current_input,
    };
  }
  close() {
    super.close(); // stops the engine's threads first: no event can come after this
    if (this._cb) { koffi.unregister(this._cb); this._cb = null; }
    for (const cb of this._streamCbs.values()) koffi.unregister(cb);
    this._streamCbs.clear();
  }
}

/** The WHEP engine: browsers watch packet slots (`POST /whep/SLOT`). */
class Whep extends Handle {
  constructor({ ingest = null, token = null, allowedOrigins = null, maxViewersPerStream = 0, maxViewersTotal = 0 } = {}) {
    const out = [null];
    check(C.whepCreate({
      struct_size: koffi.sizeof(fc_whep_config), max_viewers_per_stream: maxViewersPerStream,
      max_viewers_total: maxViewersTotal, token, allowed_origins: allowedOrigins,
      ingest: ingest ? ingest._handle() : null,
    }, out));
    super(out[0], C.whepDestroy);
  }
  /** Serves WHEP over HTTP on `addr` ("127.0.0.1:0" picks a port); returns the bound address. */
  listen(addr) {
    const buf = Buffer.alloc(128);
    check(C.whepListen(this._handle(), addr, buf, buf.length));
    return bound(buf);
  }
  closeStream(stream) { const n = [0]; check(C.whepCloseStream(this._handle(), stream, n)); return Number(n[0]); }
  /** The viewer token of one stream (beside the engine's token); `null` removes it. */
  setStreamToken(stream, token) { check(C.whepSetStreamToken(this._handle(), stream, token)); }
  /**
   * Takes WHIP publishers (`POST /whip/KEY`, OBS and browsers) into `ingest`'s stream keys, as
   * its RTMP and SRT listeners do (unknown key 404, passphrase as bearer token or 401, one
   * publisher per key or 409); `null` turns WHIP off.
   */
  acceptWhip(ingest) { check(C.whepSetIngest(this._handle(), ingest ? ingest._handle() : null)); }
  stats(stream = null) {
    const s = { struct_size: koffi.sizeof(fc_whep_stats) };
    check(C.whepGetStats(this._handle(), stream, s));
    delete s.struct_size; delete s.reserved;
    return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, Number(v)]));
  }
}

let logCb = null;
/** Routes the library's log to `fn(level, target, message)` (1 error … 5 trace; null = silent). */
function setLogger(fn, minLevel = 3) {
  const old = logCb;
  logCb = fn ? koffi.register((user, level, target, message) => fn(level, target, message), koffi.pointer(LogFn)) : null;
  check(C.setLogCallback(fn ? minLevel : 0, logCb, null));
  if (old) koffi.unregister(old);
}

module.exports = {
  Ingest, Whep, setLogger,
  Consumer, Producer, Frame, PacketReader, PacketWriter, FramecacheError, FOURCC, CODEC, info,
  version: () => C.version(), libraryPath,
  /** true once a read gave a zero-copy view, false where views are forbidden (Electron) and reads copy. */
  get zeroCopy() { return zeroCopy; },
};

"""framecache for Python: frames as numpy arrays over shared memory, without a copy.

A thin layer over libframecache's C ABI (ctypes: nothing to compile at install). Reads release
the GIL while they wait. Frames read with `Consumer.read` are zero-copy, read-only views valid
until the next read on that consumer: check `frame.intact()` after using one, or use
`read_copy` for a frame of your own.

    import framecache
    with framecache.Consumer("cam1") as c:
        for frame in c:                 # waits for each frame; ends when the writer leaves
            luma = frame.array[:, :, 1]  # UYVY: (height, width, 2)
            if frame.intact():
                print(frame.seq, luma.mean())
"""

import ctypes

import numpy as np

from . import _lib
from ._lib import LibraryNotFound

__all__ = [
    "Consumer", "Producer", "Frame", "PacketReader", "PacketWriter", "Packet", "Error",
    "info", "list_slots",
    "LibraryNotFound", "version", "FOURCC", "CODEC",
]

FOURCC = {
    "uyvy422": 1498831189, "yuyv422": 844715353, "nv12": 842094158, "yuv420p": 808596553,
    "p010le": 808530000, "v210": 808530550, "bgra": 1095911234, "rgb24": 859981650,
}
CODEC = {"h264": 1, "hevc": 2, "aac": 3, "opus": 4, "mp2": 5, "mp3": 6, "ac3": 7, "data": 8}
_FORMAT_NAMES = {v: k for k, v in FOURCC.items()}
_MODES = {"sequential": 0, "latest": 1}
_STARTS = {"newest": 0, "oldest": 1, "next": 2}
_PACKET_STARTS = {"keyframe": 0, "oldest_keyframe": 1, "next": 2}
_FOREVER = -1


def version():
    """The library's version, e.g. "0.1.0"."""
    return _lib.version().decode()


# ------------------------------------------------------------------------------------ errors

class Error(Exception):
    """A framecache error: `code` is the FC_ERR_* name, `errno` its value, the message is the
    library's detail (fc_last_error)."""

    def __init__(self, errno, message):
        self.errno = errno
        self.code = _lib.ERROR_NAMES.get(errno, "FC_ERR_%d" % -errno)
        super().__init__("%s: %s" % (self.code, message))


class InvalidArgument(Error, ValueError):
    """FC_ERR_INVALID_ARG, FC_ERR_BAD_SLOT_ID, FC_ERR_UNSUPPORTED_FORMAT."""


class NotFound(Error, LookupError):
    """FC_ERR_NOT_FOUND, FC_ERR_NO_PACKET_RING, FC_ERR_NO_CODEC_PARAMS."""


class Busy(Error):
    """FC_ERR_BUSY: another live writer owns the slot."""


class Timeout(Error, TimeoutError):
    """FC_ERR_TIMEOUT: nothing arrived in time."""


class WriterGone(Error, EOFError):
    """FC_ERR_WRITER_GONE: the writer left and nothing remains to read."""


class Overwritten(Error):
    """FC_ERR_OVERWRITTEN, FC_ERR_PACKET_OVERRUN: overwritten while it was used."""


class Closed(Error):
    """The handle was closed (FC_ERR_STATE)."""


_CLASSES = {
    -1: InvalidArgument, -11: InvalidArgument, -16: InvalidArgument, -2: NotFound,
    -21: NotFound, -22: NotFound, -3: Busy, -4: Timeout, -5: WriterGone, -6: Overwritten,
    -23: Overwritten,
}


def _check(rc):
    if rc != 0:
        detail = (_lib.last_error() or b"").decode(errors="replace")
        raise _CLASSES.get(rc, Error)(rc, detail or _lib.strerror(rc).decode())
    return rc


def _codec_params(get, handle, stream, gen):
    """(generation, bytes) from a C getter of codec parameters (packet slots and cuframes share
    its signature): asks the size first, then copies."""
    size, g = ctypes.c_size_t(), ctypes.c_uint32()
    rc = get(handle, stream, gen, None, 0, ctypes.byref(size), ctypes.byref(g))
    if rc not in (0, -15):
        _check(rc)
    buf = ctypes.create_string_buffer(max(size.value, 1))
    _check(get(handle, stream, gen, buf, size.value, ctypes.byref(size), ctypes.byref(g)))
    return g.value, buf.raw[: size.value]


def _timeout_ms(timeout):
    if timeout is None:
        return _FOREVER
    return max(0, int(timeout * 1000))


def _slot(name):
    if not isinstance(name, str):
        raise InvalidArgument(-1, "slot id must be a str, not %s" % type(name).__name__)
    return name.encode()


class _Handle:
    """An owned C handle: closed by close(), the context manager, or (as a safety net) when
    the object is collected."""

    _close = None

    def __init__(self, handle):
        self._h = handle

    def _handle(self):
        if not self._h:
            raise Closed(-18, "%s is closed" % type(self).__name__)
        return self._h

    def close(self):
        """Releases the handle (idempotent). Views it handed out become invalid."""
        h, self._h = self._h, None
        if h:
            type(self)._close(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


# ------------------------------------------------------------------------------------- slots

def _status(s):
    d = {k: getattr(s, k) for k, _ in s._fields_ if k not in ("struct_size", "id", "source_type", "codecs")}
    d["id"] = s.id.decode(errors="replace")
    d["source_type"] = s.source_type.decode(errors="replace")
    d["kind"] = "frames" if s.kind == 1 else "packets"
    d["format"] = _FORMAT_NAMES.get(s.fourcc)
    d["codecs"] = list(s.codecs[: s.stream_count])
    return d


def info(slot):
    """What the slot is (its frame slot, else its packet slot), as a dict."""
    s = _lib.sized(_lib.SlotStatus)
    _check(_lib.slot_info(_slot(slot), ctypes.byref(s)))
    return _status(s)


def list_slots():
    """Every readable slot under the root ($FC_SHM_DIR, default /dev/shm/framecache)."""
    n = ctypes.c_size_t()
    _check(_lib.slot_list(None, 0, ctypes.byref(n)))
    while True:
        arr = (_lib.SlotStatus * max(n.value, 1))()
        arr[0].struct_size = ctypes.sizeof(_lib.SlotStatus)
        cap = len(arr)
        _check(_lib.slot_list(arr, cap, ctypes.byref(n)))
        if n.value <= cap:
            return [_status(arr[i]) for i in range(n.value)]


# ------------------------------------------------------------------------------------ frames

def _plane_layouts(fourcc, width, height):
    """Per plane of a format: (shape, bytes per element, strides in bytes after the row
    pitch); None for formats without a per-pixel layout here (v210, ...)."""
    name = _FORMAT_NAMES.get(fourcc)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return {
        "uyvy422": [((height, width, 2), 1, (2, 1))],
        "yuyv422": [((height, width, 2), 1, (2, 1))],
        "bgra": [((height, width, 4), 1, (4, 1))],
        "rgb24": [((height, width, 3), 1, (3, 1))],
        "nv12": [((height, width), 1, (1,)), ((ch, cw, 2), 1, (2, 1))],
        "yuv420p": [((height, width), 1, (1,)), ((ch, cw), 1, (1,)), ((ch, cw), 1, (1,))],
        "p010le": [((height, width), 2, (2,)), ((ch, cw, 2), 2, (4, 2))],
    }.get(name)


def _planes(fourcc, width, height, strides, offsets, buf):
    """Per-plane numpy views of a frame laid out as described, over the uint8 buffer `buf`
    (read-only when `buf` is); the bytes as they are for formats without a layout."""
    layouts = _plane_layouts(fourcc, width, height)
    if layouts is None:
        return [buf]
    return [
        np.ndarray(shape, dtype=np.uint8 if itemsize == 1 else np.dtype("<u2"), buffer=buf,
                   offset=offsets[p], strides=(strides[p],) + elem)
        for p, (shape, itemsize, elem) in enumerate(layouts)
    ]


class Frame:
    """One frame: `array` (packed formats: height x width x channels; others: the frame's
    bytes), `planes` (one array per plane), and what the writer said of it."""

    def __init__(self, c, buf, consumer=None):
        self.seq = c.seq
        self.pts = c.pts
        self.capture_ns = c.capture_ns
        self.publish_ns = c.publish_ns
        self.skipped = c.skipped
        self.flags = c.flags
        self.width = c.width
        self.height = c.height
        self.fourcc = c.fourcc
        self.format = _FORMAT_NAMES.get(c.fourcc, "0x%08x" % c.fourcc)
        self.strides = tuple(c.strides[: c.plane_count])
        self.offsets = tuple(c.offsets[: c.plane_count])
        self.data = buf
        self.planes = _planes(c.fourcc, c.width, c.height, c.strides, c.offsets, buf)
        self.array = self.planes[0] if len(self.planes) == 1 else buf
        self._consumer = consumer
        self._c = c

    def intact(self):
        """Whether the frame was not overwritten since it was read (always true for copies).
        Check it after using a zero-copy frame: a result computed from an overwritten frame
        is to be thrown away."""
        if self._consumer is None:
            return True
        rc = _lib.consumer_check(self._consumer._handle(), ctypes.byref(self._c))
        if rc == -6:
            return False
        _check(rc)
        return True

    def __dlpack__(self, *args, **kwargs):
        """DLPack export (CPU) of `array`, for numpy.from_dlpack, torch.from_dlpack, ..."""
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __repr__(self):
        return "<framecache.Frame seq=%d %s %dx%d pts=%d>" % (
            self.seq, self.format, self.width, self.height, self.pts)


class Consumer(_Handle):
    """A reader of frame slot `slot` (under $FC_SHM_DIR): `mode` "sequential" (every frame,
    counting skips when it falls a ring behind) or "latest"; `start` "newest", "oldest" or
    "next". `timeout` (seconds, None = forever) is the wait of iteration."""

    _close = _lib.consumer_close

    def __init__(self, slot, mode="sequential", start="newest", timeout=1.0):
        if mode not in _MODES or start not in _STARTS:
            raise InvalidArgument(-1, "mode %r / start %r" % (mode, start))
        cfg = _lib.sized(_lib.ConsumerConfig, mode=_MODES[mode], start=_STARTS[start])
        h = ctypes.c_void_p()
        _check(_lib.consumer_open(_slot(slot), ctypes.byref(cfg), ctypes.byref(h)))
        super().__init__(h.value)
        self.slot = slot
        self.timeout = timeout
        self._frame_size = None

    def read(self, timeout=None):
        """The next frame as a zero-copy, read-only view (valid until the next read or close),
        waiting up to `timeout` seconds (None = forever). Raises Timeout or WriterGone."""
        c = _lib.sized(_lib.CFrame)
        _check(_lib.consumer_read(self._handle(), ctypes.byref(c), _timeout_ms(timeout)))
        raw = (ctypes.c_uint8 * c.size).from_address(ctypes.addressof(c.data.contents))
        buf = np.frombuffer(raw, dtype=np.uint8)
        buf.flags.writeable = False
        return Frame(c, buf, consumer=self)

    def read_copy(self, timeout=None):
        """The next frame copied into an array of its own (validated: a frame overwritten
        during the copy is never returned)."""
        h = self._handle()
        if self._frame_size is None:
            self._frame_size = info(self.slot)["frame_size"]
        while True:
            c = _lib.sized(_lib.CFrame)
            buf = np.empty(self._frame_size, dtype=np.uint8)
            rc = _lib.consumer_read_copy(h, buf.ctypes.data, buf.size, ctypes.byref(c),
                                         _timeout_ms(timeout))
            if rc == -15:  # a new writer re-created the slot with larger frames
                self._frame_size = info(self.slot)["frame_size"]
                continue
            _check(rc)
            return Frame(c, buf[: c.size])

    def stats(self):
        """The reader's counters, as a dict."""
        s = _lib.sized(_lib.ConsumerCounters)
        _check(_lib.consumer_stats(self._handle(), ctypes.byref(s)))
        return {k: getattr(s, k) for k, _ in s._fields_ if k != "struct_size"}

    def __iter__(self):
        """Frames until the writer is gone (each waits up to `timeout`; Timeout propagates)."""
        while True:
            try:
                yield self.read(self.timeout)
            except WriterGone:
                return


def _tight_planes(fourcc, width, height):
    """(stride, rows) of each plane with tight rows (row_align 1), as the library lays out."""
    name = _FORMAT_NAMES.get(fourcc)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return {
        "uyvy422": [(2 * width, height)], "yuyv422": [(2 * width, height)],
        "bgra": [(4 * width, height)], "rgb24": [(3 * width, height)],
        "nv12": [(width, height), (2 * cw, ch)],
        "yuv420p": [(width, height), (cw, ch), (cw, ch)],
        "p010le": [(2 * width, height), (4 * cw, ch)],
    }.get(name)


class Producer(_Handle):
    """The writer of frame slot `slot` (created now; a live writer's slot gives Busy). `format`
    is a name of FOURCC (e.g. "uyvy422", "nv12") or a FourCC value. The slot is removed when
    the producer closes, unless `keep`."""

    _close = _lib.producer_close

    def __init__(self, slot, format, width, height, fps=30, depth=0, keep=False):
        fourcc = FOURCC.get(format, format) if isinstance(format, str) else format
        if not isinstance(fourcc, int):
            raise InvalidArgument(-16, "unknown format %r" % (format,))
        num, den = (fps.numerator, fps.denominator) if hasattr(fps, "numerator") else (fps, 1)
        cfg = _lib.sized(_lib.SlotConfig, fourcc=fourcc, width=width, height=height,
                         fps_num=int(num), fps_den=int(den), depth=depth,
                         flags=1 if keep else 0)
        h = ctypes.c_void_p()
        _check(_lib.producer_create(_slot(slot), ctypes.byref(cfg), ctypes.byref(h)))
        super().__init__(h.value)
        self.fourcc, self.width, self.height = fourcc, width, height
        self._acquired = None
        planes = _tight_planes(fourcc, width, height)
        #: (offset, stride, rows) of each plane in the frame's bytes, as `acquire` lays them.
        self.layout = None
        if planes:
            off, self.layout = 0, []
            for stride, rows in planes:
                self.layout.append((off, stride, rows))
                off += stride * rows

    def write(self, frame, pts=0, capture_ns=0):
        """Copies one whole frame (any array or buffer of exactly the frame's bytes) into the
        ring and publishes it; returns its sequence number."""
        a = np.ascontiguousarray(frame).view(np.uint8).reshape(-1)
        seq = ctypes.c_uint64()
        _check(_lib.producer_write(self._handle(), a.ctypes.data, a.size, pts, capture_ns,
                                   ctypes.byref(seq)))
        return seq.value

    def acquire(self):
        """The next frame's memory in the ring, writable, as an array shaped like
        `Frame.array` (planes in `.planes` of the returned holder's `frame`). Fill it, then
        call `commit`. Acquiring again abandons the frame."""
        data, size = _lib.c_u8p(), ctypes.c_size_t()
        _check(_lib.producer_acquire(self._handle(), ctypes.byref(data), ctypes.byref(size)))
        raw = (ctypes.c_uint8 * size.value).from_address(ctypes.addressof(data.contents))
        buf = np.frombuffer(raw, dtype=np.uint8)
        if self.layout and sum(s * r for _, s, r in self.layout) == size.value:
            offsets = [o for o, _, _ in self.layout] + [0] * (4 - len(self.layout))
            strides = [s for _, s, _ in self.layout] + [0] * (4 - len(self.layout))
            views = _planes(self.fourcc, self.width, self.height, strides, offsets, buf)
        else:
            views = [buf]
        self._frame = buf
        self._acquired = views
        return views[0] if len(views) == 1 else buf

    @property
    def planes(self):
        """Per-plane writable views of the acquired frame."""
        return self._acquired

    @property
    def frame_bytes(self):
        """The acquired frame's bytes, flat and writable (planes at `layout`'s offsets)."""
        return self._frame

    def commit(self, pts=0, capture_ns=0, flags=0):
        """Publishes the acquired frame; returns its sequence number."""
        seq = ctypes.c_uint64()
        self._acquired = self._frame = None
        _check(_lib.producer_commit(self._handle(), pts, capture_ns, flags, ctypes.byref(seq)))
        return seq.value


# ----------------------------------------------------------------------------------- packets

class Packet:
    """One packet: `data` (memoryview of its bytes), `stream`, `pts`, `dts`, `keyframe`, `seq`,
    `params_gen` (the codec parameters' generation it needs)."""

    def __init__(self, c, data, reader=None):
        self.stream, self.pts, self.dts, self.flags = c.stream, c.pts, c.dts, c.flags
        self.keyframe = bool(c.flags & 1)
        self.seq, self.params_gen, self.skipped = c.seq, c.params_gen, c.skipped
        self.data = data
        self._reader, self._c = reader, c

    def intact(self):
        """Whether the packet was not overwritten since it was read (true for copies)."""
        if self._reader is None:
            return True
        rc = _lib.packet_check(self._reader._handle(), ctypes.byref(self._c))
        if rc == -23:
            return False
        _check(rc)
        return True


class PacketReader(_Handle):
    """A reader of packet slot `slot`: `start` "keyframe" (the latest keyframe),
    "oldest_keyframe" or "next"."""

    _close = _lib.packet_reader_close

    def __init__(self, slot, start="keyframe", timeout=1.0):
        if start not in _PACKET_STARTS:
            raise InvalidArgument(-1, "start %r" % (start,))
        cfg = _lib.sized(_lib.PacketReaderConfig, start=_PACKET_STARTS[start])
        h = ctypes.c_void_p()
        _check(_lib.packet_reader_open(_slot(slot), ctypes.byref(cfg), ctypes.byref(h)))
        super().__init__(h.value)
        self.timeout = timeout

    def streams(self):
        """The slot's streams, as dicts."""
        n = ctypes.c_uint32()
        _check(_lib.packet_stream_count(self._handle(), ctypes.byref(n)))
        out = []
        for i in range(n.value):
            s = _lib.sized(_lib.StreamInfo)
            _check(_lib.packet_get_stream(self._handle(), i, ctypes.byref(s)))
            d = {k: getattr(s, k) for k, _ in s._fields_ if k not in ("struct_size", "tag")}
            d["tag"] = s.tag.decode(errors="replace")
            out.append(d)
        return out

    def read(self, timeout=None):
        """The next packet, zero-copy (its `data` valid until the next read)."""
        c = _lib.sized(_lib.CPacket)
        _check(_lib.packet_next(self._handle(), ctypes.byref(c), _timeout_ms(timeout)))
        raw = (ctypes.c_uint8 * c.size).from_address(ctypes.addressof(c.data.contents))
        return Packet(c, memoryview(raw).toreadonly(), reader=self)

    def read_copy(self, timeout=None):
        """The next packet with bytes of its own."""
        p = self.read(timeout)
        data = bytes(p.data)
        if not p.intact():
            raise Overwritten(-23, "packet %d was overwritten while it was copied" % p.seq)
        return Packet(p._c, memoryview(data))

    def codec_params(self, stream, gen=0):
        """(generation, bytes) of a stream's codec parameters (gen 0 = the latest)."""
        return _codec_params(_lib.packet_get_codec_params, self._handle(), stream, gen)

    def __iter__(self):
        while True:
            try:
                yield self.read(self.timeout)
            except WriterGone:
                return


class PacketWriter(_Handle):
    """The writer of packet slot `slot` with `streams`: dicts with `codec` (a name of CODEC or
    its value) and optionally `timebase` (num, den), `width`, `height`, `sample_rate`,
    `channels`."""

    _close = _lib.packet_writer_close

    def __init__(self, slot, streams, payload_size=0, keep=False):
        arr = (_lib.StreamInfo * len(streams))()
        for i, s in enumerate(streams):
            codec = s["codec"]
            tb = s.get("timebase", (1, 90000))
            arr[i] = _lib.sized(
                _lib.StreamInfo, codec=CODEC.get(codec, codec) if isinstance(codec, str) else codec,
                timebase_num=tb[0], timebase_den=tb[1], width=s.get("width", 0),
                height=s.get("height", 0), sample_rate=s.get("sample_rate", 0),
                channels=s.get("channels", 0))
        cfg = _lib.sized(_lib.PacketSlotConfig, stream_count=len(streams), streams=arr,
                         payload_size=payload_size, flags=1 if keep else 0)
        h = ctypes.c_void_p()
        _check(_lib.packet_writer_create(_slot(slot), ctypes.byref(cfg), ctypes.byref(h)))
        super().__init__(h.value)

    def set_codec_params(self, stream, data):
        """Sets a stream's codec parameters (SPS/PPS, AudioSpecificConfig, ...); returns their
        generation."""
        b = bytes(data)
        g = ctypes.c_uint32()
        _check(_lib.packet_set_codec_params(self._handle(), stream, b, len(b), ctypes.byref(g)))
        return g.value

    def publish(self, stream, data, pts, dts=None, keyframe=False):
        """Publishes one access unit; returns its sequence number."""
        b = bytes(data)
        buf = ctypes.create_string_buffer(b, len(b))
        c = _lib.sized(_lib.CPacket, stream=stream, flags=1 if keyframe else 0, pts=pts,
                       dts=pts if dts is None else dts,
                       data=ctypes.cast(buf, _lib.c_u8p), size=len(b))
        seq = ctypes.c_uint64()
        _check(_lib.packet_publish(self._handle(), ctypes.byref(c), ctypes.byref(seq)))
        return seq.value

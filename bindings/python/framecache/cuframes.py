"""cuframes from Python: GPU frames of another process, handed to PyTorch, CuPy, numpy, ...
through DLPack without a copy.

    from framecache.cuframes import Subscriber
    with Subscriber("cam0") as sub:             # backend="host" on a machine without a GPU
        with sub.acquire() as frame:            # held until the block ends (release)
            y = torch.from_dlpack(frame.planes[0])   # (H, W) uint8 on cuda:N, no copy
            uv = torch.from_dlpack(frame.planes[1])  # (H/2, W/2, 2) for NV12
            ...                                      # queue the work, then release

A plane is valid until its frame is released: a tensor made from it must not be used after
that (copy it, e.g. `y.clone()`, to keep it). On the CUDA backend, `acquire` makes the default
stream wait for the publisher's writes, and a consumer that passes its own stream to
`__dlpack__` (as `torch.from_dlpack` does) gets a wait on the frame's ready event on that
stream; `release(stream)` tells the publisher when the work queued there is done. The host
backend (memfd buffers) runs the same protocol and exports CPU tensors.
"""

import ctypes

from . import _lib
from . import _check, _codec_params, _Handle, _plane_layouts, _FORMAT_NAMES, _timeout_ms
from . import Overwritten, WriterGone
from . import Packet

__all__ = ["Subscriber", "GpuFrame", "Plane", "cuda_available"]

_BACKENDS = {"cuda": 1, "host": 2}
_KDL_CPU, _KDL_CUDA = 1, 2


def cuda_available():
    """Whether this machine can run the CUDA backend (a driver and a device)."""
    return _lib.cuframes_cuda_available() == 1


# DLPack (https://dmlc.github.io/dlpack/latest/c_api.html), the legacy and the versioned form.
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _Deleter)]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", _DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", _Deleter), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


_FLAG_READ_ONLY = 1

# What a handed-out tensor keeps alive, by the address of its managed struct, until the
# consumer (or the capsule, if never consumed) calls the deleter.
_alive = {}


@_Deleter
def _delete(ptr):
    _alive.pop(ptr, None)


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_is_valid.restype = ctypes.c_int
_capsule_is_valid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_NAME = b"dltensor"
_NAME_VERSIONED = b"dltensor_versioned"


def _capsule_destructor(name):
    # A capsule never consumed still owns its tensor (a consumer renames it "used_...").
    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def destroy(capsule):
        if _capsule_is_valid(capsule, name):
            _delete(_capsule_pointer(capsule, name))
    return destroy


_destroy = _capsule_destructor(_NAME)
_destroy_versioned = _capsule_destructor(_NAME_VERSIONED)

_cuda = None


def _stream_wait(stream, event):
    """`cuStreamWaitEvent(stream, event)` through the driver (loaded once)."""
    global _cuda
    if _cuda is None:
        _cuda = ctypes.CDLL("libcuda.so.1")
        _cuda.cuStreamWaitEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        _cuda.cuStreamWaitEvent.restype = ctypes.c_int
    rc = _cuda.cuStreamWaitEvent(stream, event, 0)
    if rc != 0:
        raise RuntimeError("cuStreamWaitEvent failed: CUresult %d" % rc)


class Plane:
    """One plane of a held frame: `ptr` (device or host address), `shape`, `strides` (bytes),
    `dtype` ("uint8" or "uint16"); exported with `__dlpack__`."""

    def __init__(self, frame, ptr, shape, strides, itemsize):
        self._frame = frame
        self.ptr = ptr
        self.shape = shape
        self.strides = strides
        self.dtype = "uint8" if itemsize == 1 else "uint16"
        self._itemsize = itemsize

    def __dlpack_device__(self):
        f = self._frame
        return (_KDL_CUDA, f._device) if f._cuda else (_KDL_CPU, 0)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        f = self._frame
        if f._released:
            raise Overwritten(-6, "the frame was released; acquire another")
        if copy:
            raise BufferError("framecache planes are exported without a copy (copy=True)")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError("the plane lives on %r, not %r" % (self.__dlpack_device__(),
                                                                 tuple(dl_device)))
        if f._cuda and stream is not None and stream != -1 and stream != 1 and f._event:
            # 1 = the legacy default stream, which acquire already made wait.
            _stream_wait(stream, f._event)
        n = len(self.shape)
        shape = (ctypes.c_int64 * n)(*self.shape)
        strides = (ctypes.c_int64 * n)(*(s // self._itemsize for s in self.strides))
        t = _DLTensor(data=self.ptr, ndim=n, shape=shape, strides=strides, byte_offset=0)
        t.device = _DLDevice(*self.__dlpack_device__())
        t.dtype = _DLDataType(code=1, bits=8 * self._itemsize, lanes=1)  # kDLUInt
        if max_version is not None and max_version[0] >= 1:
            m = _DLManagedTensorVersioned(version=_DLPackVersion(1, 0), deleter=_delete,
                                          flags=_FLAG_READ_ONLY, dl_tensor=t)
            name, destroy = _NAME_VERSIONED, _destroy_versioned
        else:
            m = _DLManagedTensor(dl_tensor=t, deleter=_delete)
            name, destroy = _NAME, _destroy
        addr = ctypes.addressof(m)
        _alive[addr] = (m, shape, strides, self)
        return _capsule_new(addr, name, ctypes.cast(destroy, ctypes.c_void_p))


class GpuFrame:
    """A frame held from a publisher: `planes` (one `Plane` per plane, DLPack-exportable),
    `seq`, `pts`, `publish_ns`, `missed`, `width`, `height`, `format`, `pitches`. Release it
    (`release()`, or leave its `with` block) when the work on it is queued."""

    def __init__(self, sub, c, cuda, device):
        self._sub = sub
        self._c = c
        self._cuda = cuda
        self._device = device
        self._event = c.ready_event
        self._released = False
        self.seq = c.seq
        self.pts = c.pts
        self.publish_ns = c.publish_ns
        self.missed = c.missed
        self.width = c.width
        self.height = c.height
        self.format = _FORMAT_NAMES.get(c.format, "0x%08x" % c.format)
        self.pitches = tuple(c.pitches[: c.plane_count])
        layouts = _plane_layouts(c.format, c.width, c.height)
        if layouts is None or len(layouts) != c.plane_count:
            raise _lib_error("cuframes format %s has no plane layout here" % self.format)
        self.planes = [
            Plane(self, c.planes[p], shape, (c.pitches[p],) + elem, itemsize)
            for p, (shape, itemsize, elem) in enumerate(layouts)
        ]

    def release(self, stream=None):
        """Gives the frame back after the work queued on `stream` (CUDA stream handle, None =
        the default stream). True if the frame stayed valid while held; False if the publisher
        revoked the hold (this subscriber was too slow): what was computed from it is to be
        thrown away. Releasing twice does nothing."""
        if self._released:
            return True
        self._released = True
        rc = _lib.cuframes_subscriber_release(self._sub._handle(), ctypes.byref(self._c),
                                              stream)
        if rc in (-6, -5):  # revoked, or the publisher left: the frame cannot be trusted
            return False
        _check(rc)
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return "<framecache.cuframes.GpuFrame seq=%d %s %dx%d on %s>" % (
            self.seq, self.format, self.width, self.height,
            "cuda:%d" % self._device if self._cuda else "cpu")


def _lib_error(msg):
    from . import InvalidArgument
    return InvalidArgument(-1, msg)


class Subscriber(_Handle):
    """Attaches to the cuframes publisher of `key`: `backend` "cuda" (device ordinal `device`)
    or "host"; `root` None = the default root (`$FC_SHM_DIR`)."""

    _close = _lib.cuframes_subscriber_close

    def __init__(self, key, backend="cuda", device=0, root=None):
        if backend not in _BACKENDS:
            raise _lib_error("backend %r (cuda or host)" % (backend,))
        cfg = _lib.sized(_lib.CuframesSubscriberConfig, backend=_BACKENDS[backend],
                         device=device, root=root.encode() if root else None)
        h = ctypes.c_void_p()
        _check(_lib.cuframes_subscriber_open(key.encode(), ctypes.byref(cfg), ctypes.byref(h)))
        super().__init__(h.value)
        self._packet_buf_size = 1 << 20
        self._cuda = backend == "cuda"
        self._device = device if self._cuda else 0

    def acquire(self, timeout=1.0):
        """Holds the newest frame not yet taken, waiting up to `timeout` seconds (None =
        forever). Raises Timeout, or WriterGone once the publisher left."""
        c = _lib.sized(_lib.CuframesFrame)
        _check(_lib.cuframes_subscriber_acquire(self._handle(), None, _timeout_ms(timeout),
                                                ctypes.byref(c)))
        return GpuFrame(self, c, self._cuda, self._device)

    def info(self, timeout=1.0):
        """What the publisher serves: format, size, pitches, buffers, backend, rates."""
        i = _lib.sized(_lib.CuframesInfo)
        _check(_lib.cuframes_subscriber_get_info(self._handle(), _timeout_ms(timeout),
                                                 ctypes.byref(i)))
        return {
            "format": _FORMAT_NAMES.get(i.format, "0x%08x" % i.format), "width": i.width,
            "height": i.height, "pitches": tuple(i.pitches[: i.plane_count]),
            "buffers": i.buffers, "backend": {1: "cuda", 2: "host"}.get(i.backend, i.backend),
            "time_base": (i.time_base_num, i.time_base_den), "rate": (i.rate_num, i.rate_den),
            "publisher_pid": i.publisher_pid,
        }

    def packet_streams(self, timeout=1.0):
        """The streams of the encoded packet slot beside the frames (protocol version 2), as
        dicts; raises NotFound (`code` "FC_ERR_NO_PACKET_RING") when the publisher has none."""
        i = _lib.sized(_lib.CuframesInfo)
        _check(_lib.cuframes_subscriber_get_info(self._handle(), _timeout_ms(timeout),
                                                 ctypes.byref(i)))
        out = []
        for k in range(i.packet_stream_count):
            s = _lib.sized(_lib.StreamInfo)
            _check(_lib.cuframes_subscriber_get_packet_stream(self._handle(), k,
                                                              _timeout_ms(timeout),
                                                              ctypes.byref(s)))
            d = {f: getattr(s, f) for f, _ in s._fields_ if f not in ("struct_size", "tag")}
            d["tag"] = s.tag.decode(errors="replace")
            out.append(d)
        if not out:
            # Let the library say why (a v1 publisher, or one without streams).
            self.next_packet(timeout=0)
        return out

    def next_packet(self, timeout=1.0):
        """The next encoded packet beside the frames, copied: a `framecache.Packet` (`data`,
        `stream`, `pts`, `dts`, `keyframe`, `seq`, `params_gen`). A new subscriber starts at a
        keyframe. Raises Timeout, WriterGone, NotFound (`code` "FC_ERR_NO_PACKET_RING"), or
        Overwritten (`code` "FC_ERR_PACKET_OVERRUN": nothing delivered; the next packet is
        a keyframe)."""
        c = _lib.sized(_lib.CPacket)
        size = self._packet_buf_size
        while True:
            buf = ctypes.create_string_buffer(size)
            rc = _lib.cuframes_subscriber_next_packet(self._handle(), buf, size,
                                                      ctypes.byref(c), _timeout_ms(timeout))
            if rc == -15 and size < (1 << 30):  # too small: the packet waits for a larger buffer
                size *= 4
                self._packet_buf_size = size
                continue
            _check(rc)
            return Packet(c, memoryview(buf.raw[: c.size]))

    def packets(self, timeout=1.0):
        """Packets until the publisher is gone."""
        while True:
            try:
                yield self.next_packet(timeout)
            except WriterGone:
                return

    def codec_params(self, stream, gen=0):
        """(generation, bytes) of a packet stream's codec parameters (gen 0 = the current;
        a packet's `params_gen` names the ones it needs)."""
        return _codec_params(_lib.cuframes_subscriber_get_codec_params, self._handle(), stream,
                             gen)

    def stats(self):
        s = _lib.sized(_lib.CuframesSubscriberStats)
        _check(_lib.cuframes_subscriber_get_stats(self._handle(), ctypes.byref(s)))
        return {k: getattr(s, k) for k, _ in s._fields_ if k != "struct_size"}

    def __iter__(self):
        """Frames until the publisher is gone (each to be released by the caller)."""
        while True:
            try:
                yield self.acquire()
            except WriterGone:
                return

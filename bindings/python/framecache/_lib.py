"""The C ABI of libframecache, through ctypes: finding the library, the structs, the errors.

ctypes releases the GIL for the length of every foreign call, so a read that waits for a frame
lets the other threads of the process run.
"""

import ctypes
import ctypes.util
import os
import subprocess
from pathlib import Path

c_u8p = ctypes.POINTER(ctypes.c_uint8)


class SlotConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("fourcc", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("fps_num", ctypes.c_uint32),
        ("fps_den", ctypes.c_uint32),
        ("depth", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("row_align", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("source_type", ctypes.c_char_p),
        ("labels", ctypes.c_char_p),
    ]


class SlotStatus(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("id", ctypes.c_char * 72),
        ("source_type", ctypes.c_char * 16),
        ("fourcc", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("fps_num", ctypes.c_uint32),
        ("fps_den", ctypes.c_uint32),
        ("depth", ctypes.c_uint32),
        ("writer_pid", ctypes.c_uint32),
        ("writer_alive", ctypes.c_uint32),
        ("frame_size", ctypes.c_uint64),
        ("frames_written", ctypes.c_uint64),
        ("epoch_ns", ctypes.c_uint64),
        ("last_publish_ns", ctypes.c_uint64),
        ("stream_count", ctypes.c_uint32),
        ("codecs", ctypes.c_uint32 * 8),
        ("bytes_published", ctypes.c_uint64),
    ]


class ConsumerConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("start", ctypes.c_uint32),
    ]


class CFrame(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("fourcc", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("plane_count", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("strides", ctypes.c_uint32 * 4),
        ("offsets", ctypes.c_uint32 * 4),
        ("data", c_u8p),
        ("size", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("pts", ctypes.c_int64),
        ("capture_ns", ctypes.c_uint64),
        ("publish_ns", ctypes.c_uint64),
        ("skipped", ctypes.c_uint64),
    ]


class ConsumerCounters(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("writer_alive", ctypes.c_uint32),
        ("frames_read", ctypes.c_uint64),
        ("frames_skipped", ctypes.c_uint64),
        ("overwritten", ctypes.c_uint64),
        ("reattached", ctypes.c_uint64),
        ("writer_frames", ctypes.c_uint64),
        ("latency_last_ns", ctypes.c_uint64),
        ("latency_avg_ns", ctypes.c_uint64),
        ("latency_max_ns", ctypes.c_uint64),
    ]


class StreamInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("codec", ctypes.c_uint32),
        ("media", ctypes.c_uint32),
        ("timebase_num", ctypes.c_uint32),
        ("timebase_den", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("fps_num", ctypes.c_uint32),
        ("fps_den", ctypes.c_uint32),
        ("sample_rate", ctypes.c_uint32),
        ("channels", ctypes.c_uint32),
        ("params_gen", ctypes.c_uint32),
        ("tag", ctypes.c_char * 16),
    ]


class PacketSlotConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("stream_count", ctypes.c_uint32),
        ("streams", ctypes.POINTER(StreamInfo)),
        ("payload_size", ctypes.c_uint64),
        ("desc_count", ctypes.c_uint32),
        ("params_capacity", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("source_type", ctypes.c_char_p),
        ("labels", ctypes.c_char_p),
    ]


class CPacket(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("stream", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("params_gen", ctypes.c_uint32),
        ("pts", ctypes.c_int64),
        ("dts", ctypes.c_int64),
        ("data", c_u8p),
        ("size", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("publish_ns", ctypes.c_uint64),
        ("skipped", ctypes.c_uint64),
        ("pos", ctypes.c_uint64),
    ]


class PacketReaderConfig(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("start", ctypes.c_uint32)]


class CuframesSubscriberConfig(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("backend", ctypes.c_uint32),
        ("device", ctypes.c_int32),
        ("root", ctypes.c_char_p),
        ("cuda_context", ctypes.c_void_p),
    ]


class CuframesFrame(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("plane_count", ctypes.c_uint32),
        ("token", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("pts", ctypes.c_int64),
        ("duration", ctypes.c_int64),
        ("publish_ns", ctypes.c_uint64),
        ("missed", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("buffer", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("format", ctypes.c_uint32),
        ("pitches", ctypes.c_uint32 * 4),
        ("planes", ctypes.c_uint64 * 4),
        ("ready_event", ctypes.c_void_p),
    ]


class CuframesInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("format", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("plane_count", ctypes.c_uint32),
        ("pitches", ctypes.c_uint32 * 4),
        ("buffers", ctypes.c_uint32),
        ("backend", ctypes.c_uint32),
        ("policy", ctypes.c_uint32),
        ("time_base_num", ctypes.c_uint32),
        ("time_base_den", ctypes.c_uint32),
        ("rate_num", ctypes.c_uint32),
        ("rate_den", ctypes.c_uint32),
        ("publisher_pid", ctypes.c_uint32),
        ("epoch", ctypes.c_uint64),
        # 0.2: protocol version 2, the packet slot beside the frames
        ("proto_version", ctypes.c_uint32),
        ("packet_stream_count", ctypes.c_uint32),
    ]


class CuframesSubscriberStats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("attached", ctypes.c_uint32),
        ("frames", ctypes.c_uint64),
        ("missed", ctypes.c_uint64),
        ("revoked", ctypes.c_uint64),
        ("torn", ctypes.c_uint64),
        ("attaches", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("packets_skipped", ctypes.c_uint64),
        ("packet_overruns", ctypes.c_uint64),
    ]


def sized(struct_type, **fields):
    """A struct of the C ABI with `struct_size` set (the library reads the rest as defaults)."""
    return struct_type(struct_size=ctypes.sizeof(struct_type), **fields)


# FC_ERR_* codes by value, as the header names them.
ERROR_NAMES = {
    0: "FC_OK", -1: "FC_ERR_INVALID_ARG", -2: "FC_ERR_NOT_FOUND", -3: "FC_ERR_BUSY",
    -4: "FC_ERR_TIMEOUT", -5: "FC_ERR_WRITER_GONE", -6: "FC_ERR_OVERWRITTEN",
    -7: "FC_ERR_BAD_MAGIC", -8: "FC_ERR_VERSION", -9: "FC_ERR_CORRUPT", -10: "FC_ERR_TRUNCATED",
    -11: "FC_ERR_BAD_SLOT_ID", -12: "FC_ERR_PERMISSION", -13: "FC_ERR_NO_SPACE",
    -14: "FC_ERR_IO", -15: "FC_ERR_BUFFER_TOO_SMALL", -16: "FC_ERR_UNSUPPORTED_FORMAT",
    -17: "FC_ERR_PANIC", -18: "FC_ERR_STATE", -19: "FC_ERR_WRONG_KIND", -20: "FC_ERR_OVERSIZED",
    -21: "FC_ERR_NO_PACKET_RING", -22: "FC_ERR_NO_CODEC_PARAMS", -23: "FC_ERR_PACKET_OVERRUN",
    -24: "FC_ERR_BAD_URL", -25: "FC_ERR_REJECTED", -26: "FC_ERR_PROTOCOL",
    -27: "FC_ERR_NO_LIBRARY", -28: "FC_ERR_NO_CUDA", -29: "FC_ERR_NO_BUFFER",
}


class LibraryNotFound(ImportError):
    """libframecache.so could not be found (see `find_library`)."""


def _candidates():
    env = os.environ.get("FRAMECACHE_LIB")
    if env:
        yield Path(env)
        return
    try:
        libdir = subprocess.run(
            ["pkg-config", "--variable=libdir", "framecache"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        if libdir:
            yield Path(libdir) / "libframecache.so"
    except (OSError, subprocess.CalledProcessError):
        pass
    # A build tree: bindings/python/framecache/ -> the workspace's target/.
    top = Path(__file__).resolve().parents[3]
    for profile in ("release", "debug"):
        yield top / "target" / profile / "libframecache.so"
    found = ctypes.util.find_library("framecache")
    if found:
        yield Path(found)


def find_library():
    """Where libframecache.so is: `$FRAMECACHE_LIB`, else the installed prefix (pkg-config),
    else a build tree beside this package, else the system's library path."""
    tried = []
    for c in _candidates():
        tried.append(str(c))
        if not c.is_absolute() or c.exists():
            try:
                return ctypes.CDLL(str(c)), str(c)
            except OSError:
                continue
    raise LibraryNotFound(
        "libframecache.so not found (tried: %s). Install it (capi/install.sh), build it "
        "(cargo build -p framecache-capi), or set FRAMECACHE_LIB to its path." % ", ".join(tried)
    )


lib, path = find_library()


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


vp = ctypes.c_void_p
cint = ctypes.c_int
strerror = _fn("fc_strerror", ctypes.c_char_p, cint)
last_error = _fn("fc_last_error", ctypes.c_char_p)
version = _fn("fc_version", ctypes.c_char_p)
producer_create = _fn("fc_producer_create", cint, ctypes.c_char_p, ctypes.POINTER(SlotConfig),
                      ctypes.POINTER(vp))
producer_write = _fn("fc_producer_write", cint, vp, vp, ctypes.c_size_t, ctypes.c_int64,
                     ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64))
producer_acquire = _fn("fc_producer_acquire", cint, vp, ctypes.POINTER(c_u8p),
                       ctypes.POINTER(ctypes.c_size_t))
producer_commit = _fn("fc_producer_commit", cint, vp, ctypes.c_int64, ctypes.c_uint64,
                      ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64))
producer_close = _fn("fc_producer_close", None, vp)
slot_info = _fn("fc_slot_info", cint, ctypes.c_char_p, ctypes.POINTER(SlotStatus))
slot_list = _fn("fc_slot_list", cint, ctypes.POINTER(SlotStatus), ctypes.c_size_t,
                ctypes.POINTER(ctypes.c_size_t))
consumer_open = _fn("fc_consumer_open", cint, ctypes.c_char_p, ctypes.POINTER(ConsumerConfig),
                    ctypes.POINTER(vp))
consumer_read = _fn("fc_consumer_read", cint, vp, ctypes.POINTER(CFrame), cint)
consumer_check = _fn("fc_consumer_check", cint, vp, ctypes.POINTER(CFrame))
consumer_read_copy = _fn("fc_consumer_read_copy", cint, vp, vp, ctypes.c_size_t,
                         ctypes.POINTER(CFrame), cint)
consumer_stats = _fn("fc_consumer_stats", cint, vp, ctypes.POINTER(ConsumerCounters))
consumer_close = _fn("fc_consumer_close", None, vp)
packet_writer_create = _fn("fc_packet_writer_create", cint, ctypes.c_char_p,
                           ctypes.POINTER(PacketSlotConfig), ctypes.POINTER(vp))
packet_set_codec_params = _fn("fc_packet_set_codec_params", cint, vp, ctypes.c_uint32, vp,
                              ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint32))
packet_publish = _fn("fc_packet_publish", cint, vp, ctypes.POINTER(CPacket),
                     ctypes.POINTER(ctypes.c_uint64))
packet_writer_close = _fn("fc_packet_writer_close", None, vp)
packet_reader_open = _fn("fc_packet_reader_open", cint, ctypes.c_char_p,
                         ctypes.POINTER(PacketReaderConfig), ctypes.POINTER(vp))
packet_stream_count = _fn("fc_packet_stream_count", cint, vp, ctypes.POINTER(ctypes.c_uint32))
packet_get_stream = _fn("fc_packet_get_stream", cint, vp, ctypes.c_uint32,
                        ctypes.POINTER(StreamInfo))
packet_next = _fn("fc_packet_next", cint, vp, ctypes.POINTER(CPacket), cint)
packet_check = _fn("fc_packet_check", cint, vp, ctypes.POINTER(CPacket))
packet_get_codec_params = _fn("fc_packet_get_codec_params", cint, vp, ctypes.c_uint32,
                              ctypes.c_uint32, vp, ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_uint32))
packet_reader_close = _fn("fc_packet_reader_close", None, vp)
cuframes_cuda_available = _fn("fc_cuframes_cuda_available", cint)
cuframes_subscriber_open = _fn("fc_cuframes_subscriber_open", cint, ctypes.c_char_p,
                               ctypes.POINTER(CuframesSubscriberConfig), ctypes.POINTER(vp))
cuframes_subscriber_acquire = _fn("fc_cuframes_subscriber_acquire", cint, vp, vp, cint,
                                  ctypes.POINTER(CuframesFrame))
cuframes_subscriber_release = _fn("fc_cuframes_subscriber_release", cint, vp,
                                  ctypes.POINTER(CuframesFrame), vp)
cuframes_subscriber_get_info = _fn("fc_cuframes_subscriber_get_info", cint, vp, cint,
                                   ctypes.POINTER(CuframesInfo))
cuframes_subscriber_get_stats = _fn("fc_cuframes_subscriber_get_stats", cint, vp,
                                    ctypes.POINTER(CuframesSubscriberStats))
cuframes_subscriber_next_packet = _fn("fc_cuframes_subscriber_next_packet", cint, vp, vp,
                                      ctypes.c_size_t, ctypes.POINTER(CPacket), cint)
cuframes_subscriber_get_codec_params = _fn(
    "fc_cuframes_subscriber_get_codec_params", cint, vp, ctypes.c_uint32, ctypes.c_uint32, vp,
    ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_uint32))
cuframes_subscriber_get_packet_stream = _fn("fc_cuframes_subscriber_get_packet_stream", cint, vp,
                                            ctypes.c_uint32, cint, ctypes.POINTER(StreamInfo))
cuframes_subscriber_close = _fn("fc_cuframes_subscriber_close", None, vp)

#!/usr/bin/python3
"""GStreamer's shmsink/shmsrc (Debian's 1.22, through PyGObject) as a writer or a reader
process of benches/frame_ring.rs, speaking its child protocol: `__fc_bench_child key=value...`
arguments, `ready`, `go` on stdin (writer), one `result k=v ...` line.

The writer is how an application feeds shmsink: `appsrc ! shmsink`, one new buffer per frame
filled from the same rotating source frames the other writers copy from (64 MB of them), the
send time (CLOCK_MONOTONIC) and the frame number in bytes 0..16; shmsink copies each buffer
into its shared-memory area (a second copy: appsrc's buffers are not from shmsink's
allocator) and tells every connected shmsrc over its socket. appsrc blocks when its queue is
full, so a reader that does not release its buffers stalls the writer: that is how shmsink
behaves with a slow reader. Readers: `shmsrc ! appsink`, mapping each buffer and touching one
byte per page, as the other readers do. The interpreter's own work is in the CPU figures.
"""

import math
import os
import resource
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

END = (1 << 64) - 1
PAGE = 4096
SOURCE_BYTES = 64 << 20


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_ns():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)


def mono_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def caps(kv):
    return "video/x-raw,format=UYVY,width=%s,height=%s,framerate=0/1" % (kv["w"], kv["h"])


def writer(kv):
    size, n = int(kv["size"]), int(kv["frames"])
    fps, max_ms = int(kv["fps"]), int(kv["max_ms"])
    count = max(1, min(16, -(-SOURCE_BYTES // size)))
    sources = [bytes([0x10 + i]) * size for i in range(count)]
    pipe = Gst.parse_launch(
        "appsrc name=src format=bytes block=true max-buffers=2 caps=%s ! "
        "shmsink socket-path=%s shm-size=%d wait-for-connection=false sync=false async=false"
        % (caps(kv), kv["socket"], size * 8 + (1 << 20)))
    src = pipe.get_by_name("src")
    if os.path.exists(kv["socket"]):
        os.unlink(kv["socket"])  # left by a killed run
    pipe.set_state(Gst.State.PLAYING)  # shmsink listens on its socket from here
    say("ready")
    assert sys.stdin.readline().strip() == "go"
    c0, t0 = cpu_ns(), mono_ns()
    period = 1_000_000_000 // fps if fps else 0
    cap = max_ms * 1_000_000 if max_ms else None
    written = 0
    while written < n:
        if period:
            delay = t0 + written * period - mono_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
        if cap is not None and mono_ns() - t0 >= cap:
            break
        buf = Gst.Buffer.new_allocate(None, size, None)
        buf.fill(0, sources[written % count])
        buf.fill(0, mono_ns().to_bytes(8, "little") + written.to_bytes(8, "little"))
        if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            break
        written += 1
    t1, c1 = mono_ns(), cpu_ns()
    end = Gst.Buffer.new_allocate(None, size, None)
    end.fill(0, bytes(8) + END.to_bytes(8, "little"))
    src.emit("push-buffer", end)
    say("result start_ns=%d end_ns=%d frames=%d cpu_ns=%d" % (t0, t1, written, c1 - c0))
    sys.stdin.readline()  # the parent closes stdin once every reader is done
    pipe.set_state(Gst.State.NULL)


def reader(kv):
    n, warmup, hold = int(kv["frames"]), int(kv["warmup"]), int(kv["hold_ms"])
    pipe = Gst.parse_launch(
        "shmsrc socket-path=%s is-live=true ! %s ! appsink name=sink sync=false max-buffers=2"
        % (kv["socket"], caps(kv)))
    sink = pipe.get_by_name("sink")
    pipe.set_state(Gst.State.PLAYING)
    say("ready")
    c0 = cpu_ns()
    delivered = skipped = last_ns = 0
    nxt = 0
    lat = []
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        sample = sink.emit("try-pull-sample", 100 * Gst.MSECOND)
        if sample is None:
            if sink.get_property("eos"):
                break
            continue
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            continue
        now = mono_ns()
        data = info.data
        seq = int.from_bytes(data[8:16], "little")
        if seq == END:
            buf.unmap(info)
            break
        sum(data[::PAGE])  # one byte per page
        stamp = int.from_bytes(data[:8], "little")
        if hold:
            time.sleep(hold / 1000)  # a slow consumer keeps the buffer while it works
        buf.unmap(info)
        skipped += max(0, seq - nxt)
        nxt = seq + 1
        delivered += 1
        last_ns = now
        lat.append(max(0, now - stamp))
        if nxt >= n:
            break
    cpu = cpu_ns() - c0
    pipe.set_state(Gst.State.NULL)
    lat = sorted(lat[warmup:])

    def pct(p):
        if not lat:
            return 0
        rank = math.ceil(p / 100 * len(lat))  # nearest rank, as the other readers
        return lat[min(len(lat), max(1, rank)) - 1]

    say("result delivered=%d skipped=%d torn=0 last_ns=%d cpu_ns=%d samples=%d p50=%d p99=%d "
        "p999=%d max=%d" % (delivered, skipped, last_ns, cpu, len(lat), pct(50), pct(99),
                           pct(99.9), lat[-1] if lat else 0))


def main():
    assert sys.argv[1] == "__fc_bench_child", "a frame_ring bench child"
    Gst.init(None)
    kv = dict(a.split("=", 1) for a in sys.argv[2:])
    {"writer": writer, "reader": reader}[kv["role"]](kv)


if __name__ == "__main__":
    main()

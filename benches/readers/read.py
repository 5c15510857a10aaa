"""The Python reader of benches/bindings.rs (bindings/python over ctypes): the same loop as
read.c, with `consumer.read()` (a numpy view of the shared memory, then intact()) or
`read_copy()`.

usage: python read.py SLOT view|copy"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "python"))
import framecache  # noqa: E402


def pct(v, p):
    return v[int(p / 100.0 * (len(v) - 1))] if v else 0


def main():
    slot, how = sys.argv[1], sys.argv[2]
    copy = how == "copy"
    c = framecache.Consumer(slot, mode="sequential", start="newest")
    calls, lats = [], []
    torn = skipped = first = last = cpu0 = 0
    sink = 0
    print("ready", flush=True)
    now = time.monotonic_ns  # CLOCK_MONOTONIC, as publish_ns
    while True:
        t0 = now()
        try:
            f = c.read_copy(timeout=1.0) if copy else c.read(timeout=1.0)
        except framecache.WriterGone:
            break
        except framecache.Timeout:
            continue
        except framecache.Overwritten:
            torn += 1
            continue
        t1 = now()
        a = f.array
        sink ^= int(a.flat[0]) ^ int(a.flat[-1])
        if not copy and not f.intact():
            torn += 1
            continue
        if first == 0:
            first, cpu0 = t1, time.process_time_ns()
        last = t1
        skipped += f.skipped
        calls.append(t1 - t0)
        lats.append(max(0, t1 - f.publish_ns))
    used = time.process_time_ns() - cpu0
    calls.sort()
    lats.sort()
    c.close()
    print(
        "result frames=%d torn=%d skipped=%d first_ns=%d last_ns=%d cpu_ns=%d call_p50=%d "
        "call_p99=%d lat_p50=%d lat_p99=%d"
        % (len(calls), torn, skipped, first, last, used, pct(calls, 50), pct(calls, 99),
           pct(lats, 50), pct(lats, 99)),
        flush=True,
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An inference-style sidecar in miniature: reads the newest frame of a slot as a numpy array
without copying it, computes the mean luma (the "model"), and prints one JSON line per second
with the frame rate it kept up with and how many frames it skipped.

    framecache testsrc cam1 --size 1920x1080 --fps 60 &
    python3 examples/sidecar.py cam1

Needs `pip install ./bindings/python` (or PYTHONPATH=bindings/python) and libframecache.so
(FRAMECACHE_LIB, an installed prefix, or a build tree).
"""

import json
import sys
import time

import framecache


def luma(frame):
    """The luma samples of a frame, whatever its format."""
    if frame.format in ("uyvy422",):
        return frame.array[:, :, 1]
    if frame.format in ("yuyv422",):
        return frame.array[:, :, 0]
    if frame.format in ("nv12", "yuv420p", "p010le"):
        return frame.planes[0]
    return frame.array


def main(slot, seconds=None):
    done, last_report = 0, time.monotonic()
    start = last_report
    with framecache.Consumer(slot, mode="latest", start="newest", timeout=5) as c:
        for frame in c:
            y = luma(frame).mean()
            if not frame.intact():
                continue  # overwritten while we looked: drop the result
            done += 1
            now = time.monotonic()
            if now - last_report >= 1:
                st = c.stats()
                print(json.dumps({"slot": slot, "seq": frame.seq, "mean_luma": round(float(y), 2),
                                  "fps": round(done / (now - last_report), 1),
                                  "skipped": st["frames_skipped"],
                                  "latency_ms": round(st["latency_avg_ns"] / 1e6, 2)}),
                      flush=True)
                done, last_report = 0, now
            if seconds is not None and now - start >= seconds:
                break


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cam1",
         float(sys.argv[2]) if len(sys.argv) > 2 else None)

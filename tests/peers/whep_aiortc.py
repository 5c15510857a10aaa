#!/usr/bin/env python3
"""WHEP viewers built on aiortc (an independent WebRTC stack) for framecache's tests.

usage: whep_aiortc.py URL [--viewers N] [--seconds S] [--no-delete] [--token T] [--sequential]
(--sequential: the viewers join one after another, each watching S seconds.)
Prints one JSON object: per viewer the HTTP status, decoded video frames, size, audio frames,
seconds from POST to the first decoded frame, and the longest wait between decoded frames after
the first second (`max_gap_after_1s`).
"""
import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


TOKEN = None


def http(method, url, body=None, ctype=None):
    req = urllib.request.Request(url, data=body, method=method)
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


async def viewer(url, seconds, delete):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    out = {"status": 0, "frames": 0, "width": 0, "height": 0, "audio_frames": 0,
           "first_frame_s": None, "location": None, "max_gap_after_1s": 0.0}
    last = {"t": None}
    tasks = []
    t0 = None

    async def consume(track):
        try:
            while True:
                f = await track.recv()
                if track.kind == "video":
                    now = time.monotonic()
                    out["frames"] += 1
                    out["width"], out["height"] = f.width, f.height
                    if out["first_frame_s"] is None:
                        out["first_frame_s"] = now - t0
                    # The longest wait between decoded frames once the first second is over
                    # (a freeze shows here).
                    elif now - t0 - out["first_frame_s"] > 1.0 and last["t"] is not None:
                        out["max_gap_after_1s"] = max(out["max_gap_after_1s"], now - last["t"])
                    last["t"] = now
                else:
                    out["audio_frames"] += 1
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    status, headers, body = await loop.run_in_executor(
        None, http, "POST", url, pc.localDescription.sdp.encode(), "application/sdp")
    out["status"] = status
    if status != 201:
        out["body"] = body.strip()
        out["retry_after"] = headers.get("Retry-After")
        await pc.close()
        return out, None
    loc = headers.get("Location")
    out["location"] = loc
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    await asyncio.sleep(seconds)
    return out, (pc, tasks, loc, delete)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--viewers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--no-delete", action="store_true")
    ap.add_argument("--token")
    ap.add_argument("--sequential", action="store_true")
    a = ap.parse_args()
    global TOKEN
    TOKEN = a.token
    base = a.url.split("/whep/")[0]
    async def finish(out, rest):
        if rest:
            pc, tasks, loc, delete = rest
            if delete and loc:
                st, _, _ = http("DELETE", base + loc)
                out["delete_status"] = st
            await pc.close()
            for t in tasks:
                t.cancel()
        return out

    report = []
    if a.sequential:
        for _ in range(a.viewers):
            report.append(await finish(*await viewer(a.url, a.seconds, not a.no_delete)))
    else:
        results = await asyncio.gather(*[viewer(a.url, a.seconds, not a.no_delete)
                                         for _ in range(a.viewers)])
        for out, rest in results:
            report.append(await finish(out, rest))
    print(json.dumps({"viewers": report}))


asyncio.run(main())

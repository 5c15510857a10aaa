#!/usr/bin/env python3
"""A soak of `framecache serve`: does anything leak over time?

Runs serve for --minutes with four inputs (an RTMP push, an SRT push, a pulled file, and an
RTSP camera from GStreamer's server when it is installed), a fifth slot that fails over between
a UDP feed (stopped and started every --failover-s) and a file slate, RTMP and SRT play readers
(restarted when they end), and --viewers aiortc WHEP viewers that join and leave continuously
(batches of --viewers viewers watching --watch-s seconds each, round robin over the streams).

Every --sample-s it samples serve: RSS (and its anonymous part, the heap: the rest is the
slots' mapped pages, which grow until every ring page was written once), open fds, threads, shm files and bytes under its root,
WHEP tasks, peer connections and viewers, and connected inputs; at each sample it also notes
whether a viewer batch was running. It prints the series and, per quantity, the slope of a
least-squares line (per minute), and with --json writes them to a file.

--check (the suite's 2-minute version): exits 1 when fds, threads or shm files grew from the
first sample taken between viewer batches after the first cycle to the last such sample (by
more than --slack fds/threads; shm files must not grow at all). It never judges timings.

usage: tools/soak.py [--minutes 30] [--sample-s 60] [--viewers 20] [--watch-s 20]
                     [--failover-s 180] [--framecache target/debug/framecache] [--json F]
                     [--check] [--slack 8]
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOKEN = "soak-viewer-token"


def log(*a):
    print("soak:", *a, file=sys.stderr, flush=True)


def aiortc_python():
    for p in [os.environ.get("FC_AIORTC_PYTHON"),
              os.path.expanduser("~/.cache/framecache/aiortc-venv/bin/python"), "python3"]:
        if p and subprocess.run([p, "-c", "import aiortc"], stderr=subprocess.DEVNULL).returncode == 0:
            return p
    return None


class Procs:
    """Child processes, killed (with their groups) at the end."""

    def __init__(self):
        self.all = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, start_new_session=True, **kw)
        self.all.append(p)
        return p

    def stop(self, p, sig=signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self):
        for p in self.all:
            if p.poll() is None:
                self.stop(p)


def ffmpeg_source(out_args, size="320x240"):
    return ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "86400",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-profile:v", "baseline", "-bf", "0", "-g", "30", "-b:v", "500k",
            "-c:a", "aac"] + out_args


def make_clip(path, secs, color=None):
    video = f"color=c={color}:size=320x240:rate=30" if color else "testsrc2=size=320x240:rate=30"
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
                    "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", "sine=sample_rate=48000",
                    "-t", str(secs), "-c:v", "libx264", "-preset", "ultrafast",
                    "-profile:v", "baseline", "-bf", "0", "-g", "30", "-c:a", "aac",
                    "-f", "mpegts", "-y", path], check=True)


def sample(pid, root, http):
    s = {"t": time.monotonic()}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "VmRSS":
                s["rss_kib"] = int(v.split()[0])
            elif k == "RssAnon":
                # The heap: what would show a leak. (RssFile/RssShmem grow while the rings'
                # pages are written for the first time, up to the slots' size.)
                s["anon_kib"] = int(v.split()[0])
            elif k == "Threads":
                s["threads"] = int(v)
    s["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    files = [os.path.join(root, f) for f in os.listdir(root) if f != "serve.toml"]
    s["shm_files"] = len(files)
    s["shm_bytes"] = sum(os.path.getsize(f) for f in files if os.path.exists(f))
    try:
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    except OSError:
        text = ""
    for name, key in [("framecache_whep_tasks", "tokio_viewer_tasks"),
                      ("framecache_whep_peer_connections", "peer_connections"),
                      ("framecache_whep_viewers", "viewers"),
                      ("framecache_whep_feeds", "feeds"),
                      ("framecache_ingest_connected", "inputs_connected")]:
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        s[key] = float(m.group(1)) if m else -1
    return s


def slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sample-s", type=float, default=60)
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--watch-s", type=float, default=20)
    ap.add_argument("--failover-s", type=float, default=180)
    ap.add_argument("--framecache", default=os.path.join(REPO, "target/debug/framecache"))
    ap.add_argument("--json")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--slack", type=int, default=8)
    a = ap.parse_args()
    for tool in ["ffmpeg"]:
        if not shutil.which(tool):
            log(f"needs {tool}")
            return 2
    py = aiortc_python()
    if not py:
        log("needs aiortc (pip install aiortc) for the WHEP viewers")
        return 2
    procs = Procs()
    root = tempfile.mkdtemp(prefix="fc-soak-")
    media = tempfile.mkdtemp(prefix="fc-soak-media-")
    try:
        return run(a, py, procs, root, media)
    finally:
        procs.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(media, ignore_errors=True)


def run(a, py, procs, root, media):
    make_clip(os.path.join(media, "loop.ts"), 20)
    make_clip(os.path.join(media, "slate.ts"), 600, color="blue")
    streams = ["rtmp1", "srt1", "file1", "fo"]
    inputs = (f'[[inputs]]\nslot = "file1"\nurls = ["file://media/loop.ts"]\n\n')
    cam = None
    if subprocess.run(["/usr/bin/python3", "-c",
                       "import gi; gi.require_version('GstRtspServer', '1.0')"],
                      stderr=subprocess.DEVNULL).returncode == 0:
        cam = procs.start(["/usr/bin/python3", os.path.join(REPO, "tests/peers/rtsp_server.py"),
                           "--size", "320x240", "--bitrate", "500"],
                          stdout=subprocess.PIPE, text=True)
        port = int(cam.stdout.readline().split()[1])
        inputs += f'[[inputs]]\nslot = "rtsp1"\nurls = ["rtsp://127.0.0.1:{port}/cam"]\n\n'
        streams.append("rtsp1")
    else:
        log("no GStreamer RTSP server: the RTSP input is left out")
    udp_port = 20000 + os.getpid() % 20000
    inputs += (f'[[inputs]]\nslot = "fo"\nurls = ["udp://127.0.0.1:{udp_port}", '
               f'"file://media/slate.ts"]\ntimeout_ms = 1000\n\n')
    cfg = os.path.join(root, "serve.toml")
    with open(cfg, "w") as f:
        f.write(f'[whep]\ntoken = "{TOKEN}"\nmax_viewers_per_stream = 64\n\n'
                f'[[keys]]\nkey = "rtmp1"\n\n[[keys]]\nkey = "srt1"\n\n'
                f'{inputs}[mounts]\nmedia = "{media}"\n')
    env = dict(os.environ, FC_SHM_DIR=root)
    serve = procs.start([a.framecache, "serve", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0",
                         "--srt", "127.0.0.1:0", "--no-demo", "--config", cfg],
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addrs = {}
    while len(addrs) < 3:
        line = serve.stdout.readline()
        if not line:
            log("serve ended before listening")
            return 2
        for kind in ["http", "rtmp", "srt"]:
            m = re.match(rf"listening {kind} \w+://([^/? ]+)", line)
            if m:
                addrs[kind] = m.group(1)
    threading.Thread(target=lambda: [None for _ in serve.stdout], daemon=True).start()
    log("serve", addrs, "pid", serve.pid, "root", root)

    stop = threading.Event()

    def keep(name, args):
        """Runs args again whenever it ends, until stop."""
        def loop():
            while not stop.is_set():
                p = procs.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while p.poll() is None and not stop.is_set():
                    time.sleep(0.5)
                procs.stop(p)
                stop.wait(1)
        threading.Thread(target=loop, name=name, daemon=True).start()

    keep("rtmp push", ffmpeg_source(["-f", "flv", f"rtmp://{addrs['rtmp']}/live/rtmp1"]))
    keep("srt push", ffmpeg_source(["-f", "mpegts", f"srt://{addrs['srt']}?streamid=srt1"]))
    time.sleep(3)
    keep("rtmp play", ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "quiet", "-i",
                       f"rtmp://{addrs['rtmp']}/live/rtmp1?token={TOKEN}", "-f", "null", "-"])
    keep("srt play", ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "quiet", "-i",
                      f"srt://{addrs['srt']}?streamid=#!::r=srt1,m=request&passphrase={TOKEN}",
                      "-f", "null", "-"])

    def failovers():
        feed = None
        while not stop.is_set():
            feed = procs.start(ffmpeg_source(["-f", "mpegts", f"udp://127.0.0.1:{udp_port}?pkt_size=1316"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stop.wait(a.failover_s / 2)
            procs.stop(feed)
            stop.wait(a.failover_s / 2)
    threading.Thread(target=failovers, daemon=True).start()

    watching = threading.Event()
    cycles = [0]

    def viewers():
        i = 0
        while not stop.is_set():
            s = streams[i % len(streams)]
            i += 1
            watching.set()
            p = procs.start([py, os.path.join(REPO, "tests/peers/whep_aiortc.py"),
                             f"http://{addrs['http']}/whep/{s}", "--viewers", str(a.viewers),
                             "--seconds", str(a.watch_s), "--token", TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            out, _ = p.communicate()
            watching.clear()
            try:
                rep = json.loads(out)["viewers"]
                ok = sum(1 for v in rep if v["status"] == 201 and v["frames"] > 0)
                log(f"viewers of {s}: {ok}/{len(rep)} decoded")
            except (ValueError, KeyError):
                log(f"viewers of {s}: no report")
            cycles[0] += 1
            # Between batches: no viewer; the sampler takes its comparable samples here.
            stop.wait(3)
    threading.Thread(target=viewers, daemon=True).start()

    samples = []
    start = time.monotonic()
    end = start + a.minutes * 60
    next_at = start + min(a.sample_s, 20)
    while time.monotonic() < end:
        time.sleep(0.2)
        if serve.poll() is not None:
            log("serve died")
            return 1
        if time.monotonic() >= next_at and not watching.is_set():
            s = sample(serve.pid, root, addrs["http"])
            s["minute"] = round((s["t"] - start) / 60, 2)
            s["cycles"] = cycles[0]
            samples.append(s)
            log(json.dumps({k: v for k, v in s.items() if k != "t"}))
            next_at = time.monotonic() + a.sample_s
    stop.set()

    keys = ["rss_kib", "anon_kib", "fds", "threads", "shm_files", "shm_bytes", "tokio_viewer_tasks",
            "peer_connections", "viewers", "feeds", "inputs_connected"]
    print("minute " + " ".join(f"{k:>12}" for k in keys))
    for s in samples:
        print(f"{s['minute']:6} " + " ".join(f"{s[k]:>12}" for k in keys))
    xs = [s["minute"] for s in samples]
    slopes = {k: slope(xs, [s[k] for s in samples]) for k in keys}
    print("slope/min " + " ".join(f"{slopes[k]:>12.3f}" for k in keys))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"samples": samples, "slopes": slopes}, f)
    if a.check:
        # Samples after the first viewer cycle, all taken between batches.
        steady = [s for s in samples if s["cycles"] >= 1]
        if len(steady) < 2:
            log("check: too few samples between viewer batches")
            return 1
        first, last = steady[0], steady[-1]
        bad = []
        for k, slack in [("fds", a.slack), ("threads", a.slack), ("shm_files", 0)]:
            if last[k] > first[k] + slack:
                bad.append(f"{k} {first[k]} -> {last[k]}")
        if bad:
            log("check: growth:", ", ".join(bad))
            return 1
        log(f"check: no growth of fds, threads or shm files over {len(steady)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())

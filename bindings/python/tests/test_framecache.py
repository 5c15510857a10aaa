"""The Python binding against real peers: the `framecache` CLI's test source, the C reader test
program compiled against the header, and other Python processes. Needs libframecache.so
(FRAMECACHE_LIB or a build tree) and the CLI (FRAMECACHE_CLI or a build tree)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import framecache

TOP = Path(__file__).resolve().parents[3]


def cli():
    env = os.environ.get("FRAMECACHE_CLI")
    if env:
        return env
    for profile in ("debug", "release"):
        p = TOP / "target" / profile / "framecache"
        if p.exists():
            return str(p)
    pytest.skip("the framecache CLI is not built (cargo build)")


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A private slot root for the test and the processes it starts."""
    d = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    r = d / ("fc-py-%d-%s" % (os.getpid(), tmp_path.name))
    r.mkdir()
    monkeypatch.setenv("FC_SHM_DIR", str(r))
    yield r
    subprocess.run(["rm", "-rf", str(r)])


def pattern_plane(seq, p, rows, stride):
    """The testsrc pattern of plane p (docs/PROTOCOL.md): (b + 2*y + 3*seq + 61*p) mod 256."""
    y = np.arange(rows, dtype=np.int64)[:, None]
    b = np.arange(stride, dtype=np.int64)[None, :]
    return ((b + 2 * y + 3 * (seq % 256) + 61 * p) % 256).astype(np.uint8)


def plane_rows(frame):
    ends = list(frame.offsets[1:]) + [frame.data.size]
    return [(e - o) // s for o, s, e in zip(frame.offsets, frame.strides, ends)]


def mismatches(frame):
    bad = 0
    for p, (off, stride, rows) in enumerate(zip(frame.offsets, frame.strides, plane_rows(frame))):
        got = frame.data[off:off + rows * stride].reshape(rows, stride)
        bad += int(np.count_nonzero(got != pattern_plane(frame.seq, p, rows, stride)))
    return bad


def wait_for_slot(name, timeout=10):
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        try:
            return framecache.info(name)
        except framecache.NotFound:
            time.sleep(0.01)
    raise AssertionError("slot %s never appeared" % name)


@pytest.mark.parametrize("fmt", ["uyvy422", "nv12", "yuv420p"])
def test_a_python_reader_verifies_every_byte_of_testsrc_frames(root, fmt):
    src = subprocess.Popen([cli(), "testsrc", "cam", "--size", "320x240", "--format", fmt,
                            "--fps", "100", "--frames", "60", "--wait-ms", "300"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_slot("cam")
    seen, last = 0, -1
    with framecache.Consumer("cam", start="oldest", timeout=5) as c:
        for f in c:
            assert f.format == fmt and (f.width, f.height) == (320, 240)
            bad = mismatches(f)
            if not f.intact():
                continue  # overwritten while verified: the API says not to trust it
            assert bad == 0, "frame %d: %d bytes differ" % (f.seq, bad)
            assert f.seq > last
            last, seen = f.seq, seen + 1
            if fmt == "uyvy422":
                assert f.array.shape == (240, 320, 2) and not f.array.flags.writeable
            else:
                assert [pl.shape[:2] for pl in f.planes][0] == (240, 320)
        st = c.stats()
    assert src.wait(10) == 0
    assert seen + st["frames_skipped"] + st["overwritten"] == 60, (seen, st)
    assert seen > 0


def test_copies_are_owned_and_dlpack_round_trips(root):
    with framecache.Producer("cp", "uyvy422", 64, 16) as p:
        p.write(np.full((16, 64, 2), 9, np.uint8), pts=1)
        with framecache.Consumer("cp", start="oldest") as c:
            f = c.read_copy(1)
            assert f.intact() and f.array.flags.owndata is False  # a view of its own buffer
            p.write(np.full((16, 64, 2), 3, np.uint8), pts=2)
            assert int(f.array[0, 0, 0]) == 9, "a copy does not change under the writer"
            x = np.from_dlpack(f)
            assert x.shape == (16, 64, 2) and int(x[5, 5, 1]) == 9
            v = c.read(1)
            y = np.from_dlpack(v)  # zero-copy, read-only
            assert int(y[0, 0, 0]) == 3 and not y.flags.writeable
            assert v.__dlpack_device__() == (1, 0)  # kDLCPU


def test_a_python_producer_is_verified_by_the_c_reader(root, tmp_path):
    exe = tmp_path / "reader"
    # The library under both its names, as an installed copy has them (a build tree has no
    # soname link).
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libframecache.so", "libframecache.so.0"):
        (lib / name).symlink_to(Path(framecache._lib.path).resolve())
    subprocess.run(["cc", "-std=c11", "-O1", "-I", str(TOP / "include"),
                    str(TOP / "capi/tests/reader.c"), "-o", str(exe), "-L", str(lib),
                    "-lframecache", "-Wl,-rpath," + str(lib)], check=True)
    n = 40
    with framecache.Producer("pyprod", "nv12", 320, 240, fps=50) as p:
        reader = subprocess.Popen([str(exe), "pyprod", str(n), "view"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        for seq in range(n):
            p.acquire()
            for k, (off, stride, rows) in enumerate(p.layout):
                p.frame_bytes[off:off + rows * stride] = pattern_plane(seq, k, rows, stride).ravel()
            assert p.commit(pts=seq) == seq
            time.sleep(0.02)
        out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, out + err
    assert "read %d frames, last seq %d" % (n, n - 1) in out


def test_wrong_use_raises_errors_with_their_code(root):
    with pytest.raises(framecache.InvalidArgument) as e:
        framecache.Consumer("../etc/passwd")
    assert e.value.code == "FC_ERR_BAD_SLOT_ID"
    with pytest.raises(framecache.NotFound) as e:
        framecache.Consumer("nothing-here")
    assert e.value.code == "FC_ERR_NOT_FOUND" and "nothing-here" in str(e.value)
    with pytest.raises(framecache.InvalidArgument):
        framecache.Consumer(123)
    with pytest.raises(framecache.InvalidArgument):
        framecache.Consumer("x", mode="sideways")
    with pytest.raises(framecache.InvalidArgument) as e:
        framecache.Producer("bad", "nosuchformat", 64, 16)
    p = framecache.Producer("w", "uyvy422", 64, 16)
    with pytest.raises(framecache.Busy) as e:
        framecache.Producer("w", "uyvy422", 64, 16)
    assert e.value.code == "FC_ERR_BUSY"
    with pytest.raises(framecache.InvalidArgument) as e:
        p.write(np.zeros(10, np.uint8))
    assert "frame is 10 bytes" in str(e.value)
    c = framecache.Consumer("w")
    with pytest.raises(framecache.Timeout) as e:
        c.read(0.05)
    assert isinstance(e.value, TimeoutError) and e.value.code == "FC_ERR_TIMEOUT"
    c.close()
    c.close()  # idempotent
    with pytest.raises(framecache.Closed):
        c.read(0)
    with pytest.raises(framecache.NotFound) as e:
        framecache.PacketReader("w")
    assert e.value.code == "FC_ERR_NO_PACKET_RING"
    p.close()


def test_a_waiting_read_lets_other_threads_run(root):
    with framecache.Producer("gil", "uyvy422", 64, 16) as p, \
            framecache.Consumer("gil", start="next") as c:
        got = []
        t = threading.Thread(target=lambda: got.append(c.read(5)))
        t.start()
        ticks, end = 0, time.monotonic() + 0.3
        while time.monotonic() < end:  # runs while the reader waits in the library
            ticks += 1
        p.write(np.zeros((16, 64, 2), np.uint8), pts=7)
        t.join(5)
        assert got and got[0].pts == 7
        assert ticks > 1000


def test_a_reader_killed_mid_read_leaves_the_writer_unaffected(root):
    code = ("import framecache, sys\n"
            "c = framecache.Consumer('k', mode='latest')\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    f = c.read(5)\n"
            "    f.array.sum()\n")
    with framecache.Producer("k", "uyvy422", 320, 240) as p:
        frame = np.zeros((240, 320, 2), np.uint8)
        p.write(frame)
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 env=dict(os.environ, PYTHONPATH=str(TOP / "bindings/python")))
        assert child.stdout.readline().strip() == b"ready"
        for i in range(20):
            p.write(frame, pts=i)
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        for i in range(20, 40):
            assert p.write(frame, pts=i) >= i
        with framecache.Consumer("k", mode="latest") as c:
            assert c.read(1).pts == 39


def test_packets_with_codec_parameters(root):
    streams = [{"codec": "h264", "width": 64, "height": 32}, {"codec": "aac", "timebase": (1, 48000),
                                                             "sample_rate": 48000, "channels": 2}]
    with framecache.PacketWriter("pk", streams, payload_size=1 << 20) as w:
        assert w.set_codec_params(0, b"\x00\x00\x00\x01sps") == 1
        w.set_codec_params(1, b"\x11\x90")
        w.publish(0, b"not a keyframe", pts=0)
        w.publish(0, b"\x00\x00\x00\x01key", pts=3000, keyframe=True)
        with framecache.PacketReader("pk") as r:
            w.publish(1, b"aac frame", pts=1024)
            s = r.streams()
            assert [x["codec"] for x in s] == [framecache.CODEC["h264"], framecache.CODEC["aac"]]
            assert (s[0]["width"], s[1]["sample_rate"]) == (64, 48000)
            p = r.read(1)
            assert p.keyframe and bytes(p.data) == b"\x00\x00\x00\x01key" and p.intact()
            assert r.codec_params(p.stream, p.params_gen) == (1, b"\x00\x00\x00\x01sps")
            q = r.read_copy(1)
            assert (q.stream, bytes(q.data), q.pts) == (1, b"aac frame", 1024)
            assert r.codec_params(1) == (1, b"\x11\x90")
            with pytest.raises(framecache.Timeout):
                r.read(0.05)


def test_the_sidecar_example_reads_1080p_frames(root):
    src = subprocess.Popen([cli(), "testsrc", "side", "--size", "1920x1080", "--fps", "60",
                            "--frames", "200", "--wait-ms", "200"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_slot("side")
    out = subprocess.run([sys.executable, str(TOP / "examples/sidecar.py"), "side", "2.5"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(TOP / "bindings/python")))
    src.wait(10)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert lines and all(l["slot"] == "side" for l in lines), out.stdout
    # The pattern's mean byte is 127.5 over a whole period: the luma mean stays near it.
    assert all(100 < l["mean_luma"] < 155 for l in lines), out.stdout


def _install_prefix(tmp_path):
    """capi/install.sh of the library under test into a fresh prefix; its pkg-config dir."""
    if subprocess.run(["pkg-config", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pkg-config is not installed")
    profile = Path(framecache._lib.path).resolve().parent.name  # target/<profile>/
    prefix = tmp_path / "prefix"
    subprocess.run(
        ["bash", str(TOP / "capi" / "install.sh"), "--no-build", "--profile", profile,
         "--prefix", str(prefix)],
        check=True, capture_output=True, cwd=TOP,
    )
    return prefix


def test_an_installed_library_is_found_through_pkg_config(tmp_path):
    prefix = _install_prefix(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FRAMECACHE_LIB"}
    env["PKG_CONFIG_PATH"] = str(prefix / "lib" / "pkgconfig")
    out = subprocess.run(
        [sys.executable, "-c", "import framecache, framecache._lib as l; "
         "print(l.path); print(framecache.version())"],
        env=env, capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout.split()
    assert out[0] == str(prefix / "lib" / "libframecache.so")
    assert out[1] == framecache.version()


def test_a_missing_library_is_a_clear_error(tmp_path):
    env = dict(os.environ, FRAMECACHE_LIB=str(tmp_path / "nowhere" / "libframecache.so"))
    r = subprocess.run([sys.executable, "-c", "import framecache"], env=env,
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0
    assert "LibraryNotFound" in r.stderr and "nowhere/libframecache.so" in r.stderr
    assert "FRAMECACHE_LIB" in r.stderr and "install.sh" in r.stderr


def test_cuframes_planes_go_through_dlpack_without_a_copy(root):
    """A cuframes subscriber (host backend: the same protocol without a GPU) hands its planes
    to numpy through DLPack; every byte is the CLI publisher's pattern, the arrays alias the
    frame's buffer, and what a tensor keeps alive is freed with it."""
    from framecache import cuframes

    pub = subprocess.Popen([cli(), "cuframes", "publish", "pycam", "--backend", "host",
                            "--size", "320x240", "--fps", "50", "--frames", "40",
                            "--linger-ms", "2000"])
    try:
        deadline = time.time() + 10
        while True:
            try:
                sub = cuframes.Subscriber("pycam", backend="host")
                break
            except framecache.NotFound:
                assert time.time() < deadline, "the publisher never appeared"
                time.sleep(0.05)
        with sub:
            assert sub.info()["backend"] == "host"
            checked = 0
            for _ in range(10):
                with sub.acquire(timeout=5) as f:
                    assert f.format == "nv12" and (f.width, f.height) == (320, 240)
                    assert f.planes[0].__dlpack_device__() == (1, 0)
                    y = np.from_dlpack(f.planes[0])
                    uv = np.from_dlpack(f.planes[1])
                    assert y.shape == (240, 320) and uv.shape == (120, 160, 2)
                    assert y.strides == (f.pitches[0], 1) and uv.strides == (f.pitches[1], 2, 1)
                    # No copy: the array starts at the plane's address in the mapping.
                    assert y.__array_interface__["data"][0] == f.planes[0].ptr
                    assert not y.flags.writeable
                    assert (y == (7 * f.seq) % 251).all()
                    assert (uv == (7 * f.seq + 61) % 251).all()
                    del y, uv
                checked += 1
            assert checked == 10
            assert not cuframes._alive, "a consumed tensor's keep-alive was not freed"
            # A released frame is not exported any more.
            with pytest.raises(framecache.Overwritten):
                f.planes[0].__dlpack__()
            # A capsule nobody consumed frees what it holds too.
            with sub.acquire(timeout=5) as f:
                cap = f.planes[1].__dlpack__()
                assert cuframes._alive
                del cap
                assert not cuframes._alive
    finally:
        pub.kill()
        pub.wait()


def test_cuframes_packets_beside_frames(root, tmp_path):
    """Protocol version 2 from Python: a CLI publisher puts the H.264 + AAC of a file made by
    Debian's ffmpeg beside its frames; the subscriber's packets are byte for byte what a plain
    packet-slot reader of `cuframes-KEY-packets` reads, with the same codec parameters, and a
    frames-only publisher answers NotFound with FC_ERR_NO_PACKET_RING."""
    import shutil
    from framecache import cuframes

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    ts = tmp_path / "enc.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine", "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-bf", "0",
                    "-c:a", "aac", "-f", "mpegts", str(ts)], check=True)

    def start(key, *extra):
        p = subprocess.Popen([cli(), "cuframes", "publish", key, "--backend", "host", "--size",
                              "320x240", "--fps", "30", "--frames", "90", "--linger-ms", "3000",
                              *extra])
        deadline = time.time() + 10
        while True:
            try:
                return p, cuframes.Subscriber(key, backend="host")
            except framecache.NotFound:
                assert time.time() < deadline, "the publisher never appeared"
                time.sleep(0.05)

    pub, sub = start("pyenc", "--packets", str(ts))
    try:
        with sub:
            streams = sub.packet_streams()
            assert [s["codec"] for s in streams] == [1, 3], streams  # h264, aac
            assert (streams[0]["width"], streams[0]["height"]) == (320, 240)
            # The same slot through the plain packet-ring API, from its oldest keyframe.
            plain = framecache.PacketReader("cuframes-pyenc-packets", start="oldest_keyframe")
            got = [sub.next_packet(timeout=5) for _ in range(40)]
            assert got[0].keyframe and got[0].stream == 0
            by_seq = {}
            while len(by_seq) < got[-1].seq + 1:
                p = plain.read_copy(timeout=5)
                by_seq[p.seq] = (p.stream, p.pts, bytes(p.data))
            for p in got:
                assert by_seq[p.seq] == (p.stream, p.pts, bytes(p.data)), p.seq
            for st in (0, 1):
                assert sub.codec_params(st) == plain.codec_params(st)
                assert sub.codec_params(st)[1]
            assert sub.stats()["packets"] == 40
            plain.close()
    finally:
        pub.kill()
        pub.wait()

    pub, sub = start("pyframes")
    try:
        with sub:
            with pytest.raises(framecache.NotFound) as e:
                sub.next_packet(timeout=0.2)
            assert e.value.code == "FC_ERR_NO_PACKET_RING"
    finally:
        pub.kill()
        pub.wait()


def test_cuframes_gpu_planes_are_cuda_dlpack_tensors(root):
    """On a GPU: the CUDA backend's planes are exported as kDLCUDA tensors of the device, and
    their bytes (read back with cuMemcpyDtoH) are the publisher's pattern."""
    import ctypes
    from framecache import cuframes

    if not cuframes.cuda_available():
        pytest.skip("no CUDA device (the cuframes GPU path needs an NVIDIA GPU and driver)")
    pub = subprocess.Popen([cli(), "cuframes", "publish", "gpucam", "--backend", "cuda",
                            "--size", "320x240", "--fps", "50", "--frames", "40",
                            "--linger-ms", "2000"])
    try:
        deadline = time.time() + 20
        while True:
            try:
                sub = cuframes.Subscriber("gpucam", backend="cuda", device=0)
                break
            except framecache.NotFound:
                assert time.time() < deadline, "the publisher never appeared"
                time.sleep(0.05)
        cuda = ctypes.CDLL("libcuda.so.1")
        cuda.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        cuda.cuCtxSynchronize.argtypes = []
        # The subscriber maps its buffers in the device's primary context: make it current here.
        ctx = ctypes.c_void_p()
        assert cuda.cuInit(0) == 0
        assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
        assert cuda.cuCtxSetCurrent(ctx) == 0
        with sub:
            with sub.acquire(timeout=5) as f:
                assert f.planes[0].__dlpack_device__() == (2, 0)
                cap = f.planes[0].__dlpack__(stream=None)
                assert cuframes._alive
                del cap
                assert cuda.cuCtxSynchronize() == 0
                y = np.empty((240, f.pitches[0]), dtype=np.uint8)
                assert cuda.cuMemcpyDtoH_v2(y.ctypes.data, f.planes[0].ptr, y.size) == 0
                assert (y[:, :320] == (7 * f.seq) % 251).all()
                # The real consumers, where installed: each takes the plane without a copy
                # (same device pointer) and reads the publisher's pattern.
                for name in ("torch", "cupy"):
                    try:
                        lib = __import__(name)
                    except ImportError:
                        continue
                    t = lib.from_dlpack(f.planes[0])
                    ptr = t.data_ptr() if name == "torch" else t.data.ptr
                    assert ptr == f.planes[0].ptr, name
                    assert tuple(t.shape) == tuple(f.planes[0].shape), name
                    want = (7 * f.seq) % 251
                    assert int((t[:, :320] == want).all()) == 1, name
                    print("%s consumed the CUDA plane %s" % (name, tuple(t.shape)))
    finally:
        pub.kill()
        pub.wait()

#!/usr/bin/python3
"""A live RTSP camera for the tests: GStreamer's RTSP server (Debian's gst-rtsp-server through
PyGObject), nobody here wrote it. Prints "PORT <n>" once it listens, then serves until killed.

  rtsp_server.py [--port N] [--path /cam] [--video h264|h265] [--audio aac|opus|pcmu|none]
                 [--size 640x360] [--rate 30] [--user U --password P [--auth basic|digest]]
                 [--tls-cert CERT.pem --tls-key KEY.pem]   (RTSPS: RTSP over TLS)
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--video", default="h264", choices=["h264", "h265"])
    ap.add_argument("--audio", default="aac", choices=["aac", "opus", "pcmu", "none"])
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--rate", type=int, default=30)
    ap.add_argument("--bitrate", type=int, default=1000, help="video kbit/s")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--auth", default="digest", choices=["basic", "digest"])
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    a = ap.parse_args()

    Gst.init(None)
    w, h = a.size.split("x")
    gop = a.rate  # a keyframe every second
    video = (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},"
        f"framerate={a.rate}/1 ! "
    )
    if a.video == "h264":
        video += (
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
            f"bitrate={a.bitrate} ! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96"
        )
    else:
        video += (
            f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
            f"bitrate={a.bitrate} ! rtph265pay name=pay0 pt=96"
        )
    audio = ""
    if a.audio == "aac":
        audio = (
            " audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=48000,channels=2 ! avenc_aac ! rtpmp4gpay name=pay1 pt=97"
        )
    elif a.audio == "opus":
        audio = (
            " audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=48000,channels=2 ! opusenc ! rtpopuspay name=pay1 pt=97"
        )
    elif a.audio == "pcmu":
        audio = (
            " audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0"
        )

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {video}{audio} )")
    factory.set_shared(True)

    auth = None
    if a.user or a.tls_cert:
        auth = GstRtspServer.RTSPAuth()
        factory.add_role_from_structure(
            Gst.Structure.from_string(
                "cam, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )
        server.set_auth(auth)
    if a.tls_cert:
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(a.tls_cert, a.tls_key))
        if not a.user:
            # Anyone may watch; TLS only.
            anyone = GstRtspServer.RTSPToken()
            anyone.set_string("media.factory.role", "cam")
            auth.set_default_token(anyone)
    if a.user:
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "cam")
        if a.auth == "digest":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(a.user, a.password, token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)

    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        print("could not listen", file=sys.stderr)
        sys.exit(1)
    print(f"PORT {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()

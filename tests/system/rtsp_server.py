"""A local RTSP server for the edge-camera test: GStreamer's RTSP server (Debian packages
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good, python3-gi), run by the system
Python, which has PyGObject. Serves a generated moving test picture as Motion-JPEG at
rtsp://127.0.0.1:PORT/line until killed; prints "ready" once it listens.

Usage: /usr/bin/python3 tests/system/rtsp_server.py PORT
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=512,height=256,"
            "framerate=25/1 ! videoconvert ! video/x-raw,format=I420 ! jpegenc ! "
            "rtpjpegpay name=pay0 pt=26 )")  # RTP JPEG carries 4:2:0


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/line", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{sys.argv[1]}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()

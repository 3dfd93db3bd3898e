"""edge-camera: frames from what is not GigE Vision, into the frame protocol.

A video file, an RTSP/HTTP stream, a V4L2/USB camera, a GStreamer pipeline, or a folder
of images (replayed, or watched as a hot folder) becomes frames with a camera id,
increasing frame ids, capture timestamps and a stream id per run (so the daemon tells a
restart from lost frames), PUSHed to edge-serve (or published with --pub). Live sources
that drop are reopened; what happened goes to the log and, with --events, to a PUB
socket as `event` messages, the way edge-camera-bridge reports (docs/protocol.md).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid

import zmq

from lineside.edge import protocol
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.sources import SourceEvent, message_parts, open_source
from lineside.edge.sources.capture import SourceError

EXAMPLES = """\
  edge-camera line.mp4 --camera-id lane1 --fps 25         # a video file, paced
  edge-camera rtsp://10.0.0.20/stream1 --camera-id weld3  # a network camera, reconnects
  edge-camera /dev/video0                                 # a USB camera (V4L2)
  edge-camera 'gst:v4l2src ! videoconvert ! appsink'      # a GStreamer pipeline
  edge-camera /srv/scans --watch --camera-id nugget       # a hot folder, file by file
  edge-camera recorded/images --fps 10                    # replay a recording
"""

log = logging.getLogger("lineside.edge.camera")


def build_parser():
    ap = parser("edge-camera", "Frames from a video, stream, USB camera, GStreamer pipeline "
                "or folder, into edge-serve.", EXAMPLES)
    ap.add_argument("source", help="video file, rtsp:// or http:// URL, /dev/videoN or a "
                    "camera index, gst:PIPELINE, or a folder of images")
    ap.add_argument("--to", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                    help="edge-serve's input (PUSH connects to it); with --pub, bound")
    ap.add_argument("--pub", action="store_true", help="bind a PUB socket at --to instead "
                    "(edge-serve --input-mode sub connects to it)")
    ap.add_argument("--camera-id", default="cam0")
    ap.add_argument("--first-frame-id", type=int, default=0)
    ap.add_argument("--fps", type=float, default=0.0, help="pace frames to this rate (0: as "
                    "the source delivers; a file or folder then goes as fast as it is taken)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many frames (0: "
                    "at the end of the source, never for live sources)")
    ap.add_argument("--loop", action="store_true", help="start a file or folder again at its end")
    ap.add_argument("--watch", action="store_true", help="SOURCE is a hot folder: send each "
                    "image once it is completely written")
    ap.add_argument("--settle-s", type=float, default=0.5, help="--watch: a file counts as "
                    "written when unchanged this long")
    ap.add_argument("--encoding", default="auto", choices=["auto", "mono8", "jpeg", "png"],
                    help="auto: JPEG/PNG files as they are, everything else raw mono8")
    ap.add_argument("--reconnect-s", type=float, default=1.0, help="first wait before "
                    "reopening a dropped live source (doubles, up to 10 s)")
    ap.add_argument("--max-reconnects", type=int, default=-1, help="give up after this many "
                    "failed reopen attempts in a row (-1: never)")
    ap.add_argument("--events", default="", metavar="ENDPOINT",
                    help="PUB socket (bound) for source events: opened, lost, reconnected")
    ap.add_argument("--hwm", type=int, default=100, help="frames ZeroMQ queues before a "
                    "PUSH blocks (backpressure) or a PUB drops")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


class Camera:
    """Source -> frame messages. `stop()` from any thread (a signal) ends the run."""

    def __init__(self, args, context: zmq.Context | None = None) -> None:
        self.args = args
        self.context = context or zmq.Context.instance()
        self.stream_id = uuid.uuid4().hex[:16]
        self.stop_event = threading.Event()
        self.counters = {"sent": 0, "skipped": 0, "lost": 0, "reconnects": 0}
        self._source = None

    def stop(self) -> None:
        """From a signal handler or another thread: end the run after the current frame."""
        self.stop_event.set()
        if self._source is not None:
            self._source.stop()

    def _socket(self, kind: int, endpoint: str, bind: bool) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.SNDHWM, self.args.hwm)
        sock.setsockopt(zmq.LINGER, 5000)  # flush the last frames on exit
        (sock.bind if bind else sock.connect)(endpoint)
        return sock

    def run(self) -> int:
        args = self.args
        source = open_source(args.source, watch=args.watch, loop=args.loop,
                             reconnect_s=args.reconnect_s, max_reconnects=args.max_reconnects,
                             settle_s=args.settle_s, encoding=args.encoding)
        frames = self._socket(zmq.PUB if args.pub else zmq.PUSH, args.to, bind=args.pub)
        events = self._socket(zmq.PUB, args.events, bind=True) if args.events else None
        period = 1.0 / args.fps if args.fps > 0 else 0.0
        began, frame_id = time.monotonic(), args.first_frame_id
        self._source = source
        try:
            for item in source.frames():
                if self.stop_event.is_set():
                    break
                if isinstance(item, SourceEvent):
                    self._event(item, events)
                    if item.kind == "ended":
                        break
                    continue
                if period:  # an absolute schedule: one slow send does not delay the rest
                    delay = began + self.counters["sent"] * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                frames.send_multipart(message_parts(item, args.camera_id, frame_id,
                                                   self.stream_id), copy=False)
                frame_id += 1
                self.counters["sent"] += 1
                if args.count and self.counters["sent"] >= args.count:
                    break
        finally:
            source.close()
            self.stop_event.set()
            self._event(SourceEvent("stopped", "edge-camera stopping"), events)
            frames.close()
            if events is not None:
                events.close()
        elapsed = time.monotonic() - began
        log.info("sent %d frame(s) in %.1f s (%.1f frames/s); %s", self.counters["sent"],
                 elapsed, self.counters["sent"] / elapsed if elapsed else 0.0, self.counters)
        print(f"sent {self.counters['sent']}")
        return 0

    def _event(self, event: SourceEvent, sock: zmq.Socket | None) -> None:
        if event.kind == "skipped":
            self.counters["skipped"] += 1
        elif event.kind == "lost":
            self.counters["lost"] += 1
        elif event.kind == "reconnected":
            self.counters["reconnects"] += 1
        level = logging.WARNING if event.kind in ("lost", "skipped") else logging.INFO
        log.log(level, "%s: %s", event.kind, event.reason)
        if sock is not None:
            body = {"schema": protocol.SCHEMA_VERSION, "kind": event.kind,
                    "source": "edge-camera", "camera_id": self.args.camera_id,
                    "stream_id": self.stream_id, "reason": event.reason,
                    "counters": {**event.counters, **self.counters}}
            sock.send_multipart([b"event", json.dumps(body).encode()])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    camera = Camera(args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: camera.stop())
    try:
        return camera.run()
    except (SourceError, ValueError) as exc:
        print(f"edge-camera: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""edge-camsim: replay a data-set folder over ZeroMQ as a line camera would."""

from __future__ import annotations

import logging
import sys
import time

from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.client import FrameSender
from lineside.edge.labels import list_images
from lineside.edge.sources import message_parts
from lineside.edge.sources.folder import file_frame

EXAMPLES = """\
  edge-camsim data/ --rate 20                      # every image once, 20 frames/s, raw mono8
  edge-camsim data/ --count 500 --loop --encoding jpeg --camera-id lane2
"""

log = logging.getLogger("lineside.edge.camsim")


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-camsim", "Replay images as a camera: PUSH frames to edge-serve.", EXAMPLES)
    ap.add_argument("data", help="folder of images, or a labelled folder in any layout "
                    "edge-train reads (Severstal, images/ + masks/, LabelMe)")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="daemon input endpoint")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second (0: as fast "
                    "as the daemon takes them)")
    ap.add_argument("--count", type=int, default=0, help="frames to send (0: each image once)")
    ap.add_argument("--loop", action="store_true", help="cycle through the images until --count")
    ap.add_argument("--encoding", default="mono8", choices=["mono8", "jpeg", "png"])
    ap.add_argument("--camera-id", default="cam0")
    ap.add_argument("--first-frame-id", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)

    images = list_images(args.data)
    count = args.count or len(images)
    if count > len(images) and not args.loop:
        count = len(images)
    sender = FrameSender(args.endpoint)
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic()
    sent = 0
    for index in range(count):
        path = images[index % len(images)]
        frame = file_frame(path, args.encoding)
        if frame is None:
            log.error("skipping %s: OpenCV cannot read it", path)
            continue
        parts = message_parts(frame, args.camera_id, args.first_frame_id + index)
        # Absolute schedule: a slow send does not push every later frame back.
        delay = start + index * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.send_raw(parts)
        sent += 1
    sender.close()  # linger flushes what is queued
    elapsed = time.monotonic() - start
    log.info("sent %d frame(s) in %.2f s (%.1f frames/s)", sent, elapsed,
             sent / elapsed if elapsed else 0.0)
    print(f"sent {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

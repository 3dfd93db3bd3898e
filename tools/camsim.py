"""edge-camsim: replay a data-set folder over ZeroMQ as a line camera would (the demo's
camera; edge-camera with a folder source, and the flags the demo has always used)."""

from __future__ import annotations

import argparse
import sys

from lineside.edge.cli.camera import Camera
from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-camsim data/ --rate 20                      # every image once, 20 frames/s, raw mono8
  edge-camsim data/ --count 500 --loop --encoding jpeg --camera-id lane2
"""


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

    # The replay itself is edge-camera's folder source; this keeps the demo's flags.
    camera = Camera(argparse.Namespace(
        source=args.data, to=args.endpoint, pub=False, camera_id=args.camera_id,
        first_frame_id=args.first_frame_id, fps=args.rate, count=args.count,
        loop=args.loop and args.count > 0, watch=False,  # --loop cycles up to --count
        settle_s=0.0, encoding=args.encoding,
        reconnect_s=1.0, max_reconnects=0, events="", hwm=100))
    return camera.run()


if __name__ == "__main__":
    sys.exit(main())

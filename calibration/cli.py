"""edge-calibrate: build a versioned INT8 calibration set from a folder or a live stream."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import zmq

from lineside.calibration.calibration_set import build_from_folder, write_set
from lineside.edge import protocol
from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-calibrate data/synth -o calib/v1 --n 512                  # stratified by class
  edge-calibrate data/synth -o calib/v1 --n 256 --strategy random --tile 256x256
  edge-calibrate --from tcp://127.0.0.1:5555 -o calib/live --n 512  # capture frames pushed
                                                                    # by a camera (PULL)
"""

log = logging.getLogger("lineside.calibration")


def _pair(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def capture(endpoint: str, mode: str, frames: int,
            timeout_s: float) -> Iterator[tuple[str, list[int], np.ndarray]]:
    """Frames from a live camera stream (PULL binds like the daemon; SUB connects)."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.SUB if mode == "sub" else zmq.PULL)
    if mode == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
    else:
        sock.bind(endpoint)
    deadline = time.monotonic() + timeout_s
    got = 0
    try:
        while got < frames and time.monotonic() < deadline:
            if not sock.poll(200):
                continue
            try:
                frame = protocol.parse_frame(sock.recv_multipart())
            except protocol.FrameError as exc:
                log.warning("skipping a malformed frame: %s", exc.reason)
                continue
            got += 1
            header = frame.header
            yield f"{header.camera_id}:{header.frame_id}", [], frame.pixels
    finally:
        sock.close(linger=0)
    if got < frames:
        log.warning("captured %d of %d frames before the %.0f s timeout", got, frames,
                    timeout_s)


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-calibrate", "Build a versioned calibration set (tiles cut as the runtime "
                "cuts them) for INT8 export.", EXAMPLES)
    ap.add_argument("data", nargs="?", help="Severstal-layout folder or folder of images")
    ap.add_argument("-o", "--out", required=True, help="calibration set directory")
    ap.add_argument("--n", type=int, default=512, help="tiles in the set")
    ap.add_argument("--strategy", choices=["stratified", "random"], default="stratified")
    ap.add_argument("--tile", type=_pair, default=(256, 256), help="tile HxW of the model")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from", dest="source", help="capture from a live stream instead")
    ap.add_argument("--from-mode", choices=["pull", "sub"], default="pull")
    ap.add_argument("--timeout", type=float, default=120.0, help="capture timeout (s)")
    args = ap.parse_args(argv)
    setup_logging()
    if args.source:
        frames_needed = -(-args.n // max(1, (1600 // args.tile[1]) + 1))
        manifest = write_set(Path(args.out), capture(args.source, args.from_mode,
                                                     frames_needed, args.timeout),
                             args.n, args.tile, args.channels, "live", args.seed, args.source)
    elif args.data:
        manifest = build_from_folder(Path(args.data), Path(args.out), args.n, args.strategy,
                                     args.seed, args.tile, args.channels)
    else:
        ap.error("give a DATA folder or --from ENDPOINT")
    print(f"wrote {args.out}: {manifest.count} tiles from {len(manifest.sources)} frames, "
          f"sha256 {manifest.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edge-build-engine: build a bundle's TensorRT engines on the target device."""

from __future__ import annotations

import sys
from pathlib import Path

from lineside.edge.backends.tensorrt.engine import ShapeProfile, tensorrt_available
from lineside.edge.bundle import BundleError, load_bundle, write_manifest
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import PRECISIONS
from lineside.edge.variants import VariantUnavailable

EXAMPLES = """\
  edge-build-engine bundles/r18 --precision fp16            # on the Jetson / line PC itself
  edge-build-engine bundles/r18 --precision fp16 int8 --batch 1:8:16 --workspace 1
  edge-build-engine bundles/r18 --precision int8 --mode flags --calib calib/v1  # TensorRT 10
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-build-engine", "Build TensorRT engines for a bundle on this device and "
                "record them (with their sidecars) in its manifest.", EXAMPLES)
    ap.add_argument("bundle")
    ap.add_argument("--precision", nargs="+", default=["fp16"], choices=PRECISIONS)
    ap.add_argument("--batch", default="1:8:16", help="profile MIN:OPT:MAX in tiles")
    ap.add_argument("--workspace", type=float, default=2.0, help="workspace limit, GB")
    ap.add_argument("--mode", choices=["auto", "strongly-typed", "flags"], default="auto",
                    help="auto: strongly typed from the FP16/QDQ ONNX when the bundle has it")
    ap.add_argument("--calib", default="", help="calibration set for --mode flags INT8")
    args = ap.parse_args(argv)
    setup_logging()
    ok, reason = tensorrt_available()
    if not ok:
        print(f"edge-build-engine: cannot build here: {reason}", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        print(f"edge-build-engine: {exc}", file=sys.stderr)
        return 2
    from lineside.edge.backends.tensorrt.loader import build_bundle_engine

    manifest = bundle.manifest
    profile = ShapeProfile.parse(args.batch, manifest.in_channels, manifest.tile_height,
                                 manifest.tile_width)
    for precision in args.precision:
        try:
            engine = build_bundle_engine(Path(args.bundle), manifest, precision, profile,
                                         args.workspace, args.mode, args.calib)
        except (RuntimeError, VariantUnavailable) as exc:
            print(f"edge-build-engine: {precision}: {exc}", file=sys.stderr)
            return 1
        print(f"built {engine}")
    write_manifest(Path(args.bundle), manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edge-build-engine: build a bundle's TensorRT engines on the target device."""

from __future__ import annotations

import sys
from pathlib import Path

from lineside.edge.backends.tensorrt_engine import ShapeProfile, build_engine, tensorrt_available
from lineside.edge.bundle import BundleError, ModelFile, load_bundle, sha256_file, write_manifest
from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-build-engine bundles/r18 --precision fp16            # on the Jetson / line PC itself
  edge-build-engine bundles/r18 --precision fp16 int8 --batch 1:8:16 --workspace 1
"""

SOURCES = {"fp16": "fp16", "int8": "int8-trt", "fp32": "fp32"}


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-build-engine", "Build TensorRT engines for a bundle on this device and "
                "record them (with their sidecars) in its manifest.", EXAMPLES)
    ap.add_argument("bundle")
    ap.add_argument("--precision", nargs="+", default=["fp16"], choices=list(SOURCES))
    ap.add_argument("--batch", default="1:8:16", help="profile MIN:OPT:MAX in tiles")
    ap.add_argument("--workspace", type=float, default=2.0, help="workspace limit, GB")
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
    manifest = bundle.manifest
    profile = ShapeProfile.parse(args.batch, manifest.in_channels, manifest.tile_height,
                                 manifest.tile_width)
    for precision in args.precision:
        key = SOURCES[precision] if SOURCES[precision] in manifest.models else "fp32"
        source = manifest.models[key]
        engine = Path(args.bundle) / f"model_{precision}.engine"
        # From a precision-specific ONNX the build is strongly typed (TensorRT 10 and 11);
        # from FP32 it needs TensorRT 10's builder flags.
        build_engine(Path(args.bundle) / source.path, engine, precision, profile,
                     source.sha256, args.workspace,
                     calibration_sha256=source.calibration_sha256,
                     timing_cache=Path(args.bundle) / "timing.cache",
                     strongly_typed=key != "fp32" or precision == "fp32")
        manifest.models[f"trt-{precision}"] = ModelFile(
            engine.name, sha256_file(engine), precision, target="tensorrt",
            calibration_sha256=source.calibration_sha256)
        print(f"built {engine} from {source.path}")
    write_manifest(Path(args.bundle), manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edge-build-engine: build a bundle's TensorRT engines on the target device."""

from __future__ import annotations

import sys
from pathlib import Path

from lineside.edge.backends.tensorrt.engine import ShapeProfile, tensorrt_available
from lineside.edge.bundle import Bundle, BundleError, load_bundle, write_manifest
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import PRECISIONS
from lineside.edge.variants import VariantUnavailable, engine_variant

EXAMPLES = """\
  edge-build-engine bundles/r18 --precision fp16            # on the Jetson / line PC itself
  edge-build-engine bundles/r18 --precision fp16 int8 --batch 1:8:16 --workspace 1
  edge-build-engine bundles/r18 --precision int8 --mode flags --calib calib/v1  # TensorRT 10
  edge-build-engine bundles/r18 --precision fp16 int8 --eval data/heldout   # checked builds
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
    ap.add_argument("--eval", default="", metavar="DIR", help="frames (any layout edge.labels "
                    "reads) to check each engine on against ONNX Runtime running the graph "
                    "it was built from: an engine outside the bundle's accuracy_budget is "
                    "removed again (exit 1)")
    ap.add_argument("--eval-limit", type=int, default=16, help="frames to check on")
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
        if args.eval:
            refused = check_engine(bundle, precision, args.eval, args.eval_limit)
            if refused:
                del manifest.models[engine_variant(precision).key]
                engine.unlink()
                write_manifest(Path(args.bundle), manifest)
                print(f"edge-build-engine: {precision}: {refused}; the engine was removed",
                      file=sys.stderr)
                return 1
        else:
            print("  (no accuracy check: pass --eval DIR to compare it with its graph)")
    write_manifest(Path(args.bundle), manifest)
    return 0


def check_engine(bundle: Bundle, precision: str, frames_dir: str, limit: int) -> str:
    """Why the new engine may not serve ("" = it may): its agreement with ONNX Runtime
    running the graph it was built from, on real frames, within the accuracy budget."""
    from lineside.edge.backends import create_backend
    from lineside.edge.backends.tensorrt.engine import EngineSidecar
    from lineside.edge.backends.tensorrt.runner import TensorRTBackend
    from lineside.edge.labels import open_dataset
    from lineside.edge.pipeline.decide import agreement
    from lineside.edge.pipeline.model import LoadedModel

    source = EngineSidecar.read(bundle.root / engine_variant(precision).file_name).source_key
    frames = [s.image() for s in open_dataset(frames_dir).samples[:limit]]
    engine = LoadedModel(bundle, TensorRTBackend(bundle, precision, build=False))
    graph = LoadedModel(bundle, create_backend("auto", bundle, source, skip=("tensorrt",)))
    result = agreement(engine, graph, frames).summary()
    budget = bundle.manifest.accuracy_budget
    print(f"  {precision} engine vs {source} on {graph.backend.name}: Dice {result['dice']:.4f}, "
          f"verdicts agree {100 * result['verdict_agreement']:.1f}% ({len(frames)} frames)")
    if result["dice"] < 1 - budget:
        return f"Dice {result['dice']:.4f} against its graph is below {1 - budget:.4f} " \
               f"(accuracy_budget {budget})"
    return ""


if __name__ == "__main__":
    sys.exit(main())

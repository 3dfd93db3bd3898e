"""edge-export: turn a training checkpoint into a self-describing model bundle."""

from __future__ import annotations

import sys

from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-export runs/mini.pt -o bundles/mini                    # FP32 ONNX + manifest.json
  edge-export runs/mini.pt -o bundles/mini --fp16             # + FP16 ONNX (+ engine on GPU)
  edge-export runs/r18.pt -o bundles/r18 --int8 --calib calib/v1 --eval data/heldout
  edge-export runs/r18.pt -o bundles/r18 --fp16 --int8 --calib calib/v1 --engine \\
      --batch 1:8:16 --workspace 2                             # on a machine with TensorRT
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-export", "Export a checkpoint to a model bundle: ONNX with the "
                "pre-processing inside, FP16 and INT8 variants with parity and accuracy "
                "checks, TensorRT engines where TensorRT runs.", EXAMPLES)
    ap.add_argument("checkpoint", help="checkpoint from edge-train (.pt)")
    ap.add_argument("-o", "--out", required=True, help="bundle directory to write")
    ap.add_argument("--name", default="", help="model name in the manifest (default: file stem)")
    ap.add_argument("--fp16", action="store_true", help="add an FP16 ONNX (and engine)")
    ap.add_argument("--int8", action="store_true",
                    help="add INT8 QDQ ONNX for the CPU (U8S8) and for TensorRT (symmetric)")
    ap.add_argument("--calib", default="", help="calibration set (edge-calibrate) for --int8")
    ap.add_argument("--eval", default="", help="labelled held-out folder for the INT8 "
                    "accuracy gate (default: the calibration set's source, minus its frames)")
    ap.add_argument("--eval-limit", type=int, default=24, help="held-out frames to score")
    ap.add_argument("--no-accuracy-gate", action="store_true",
                    help="write INT8 models without checking their Dice (not for production)")
    ap.add_argument("--inference", choices=["auto", "tiles", "strip"], default="auto",
                    help="how the runtime feeds the model: whole frames (strip) when the "
                    "graph runs them as torch does (auto), or tiles of the training size")
    ap.add_argument("--batch", default="1:8:16", help="TensorRT profile MIN:OPT:MAX (tiles)")
    ap.add_argument("--engine", action="store_true",
                    help="build TensorRT engines now (needs TensorRT and a GPU here)")
    ap.add_argument("--workspace", type=float, default=2.0, help="TensorRT workspace, GB")
    args = ap.parse_args(argv)
    setup_logging()

    from lineside.export.bundle_writer import ExportError, ExportOptions, export_bundle

    options = ExportOptions(name=args.name, fp16=args.fp16, int8=args.int8,
                            calibration=args.calib, eval_data=args.eval,
                            eval_limit=args.eval_limit, accuracy_gate=not args.no_accuracy_gate,
                            inference=args.inference,
                            batch=args.batch, engine=args.engine, workspace_gb=args.workspace)
    try:
        report = export_bundle(args.checkpoint, args.out, options)
    except ExportError as exc:
        print(f"edge-export: {exc}", file=sys.stderr)
        return 1
    manifest = report.manifest
    print(f"wrote {args.out}: {', '.join(manifest.models)}; "
          f"parity max |diff| {manifest.parity['fp32']['max_abs_diff']:.2e}; inference: "
          f"{manifest.inference} ({manifest.tile_height}x{manifest.tile_width})")
    for precision, result in manifest.metrics.get("heldout", {}).items():
        if "dice" in result:
            print(f"  held-out Dice {precision:9s} {result['dice']:.4f} "
                  f"({result['images']} frames)")
        else:  # a screening classifier, judged tile by tile
            print(f"  held-out tile accuracy {precision:9s} {result['tile_accuracy']:.4f}, "
                  f"defect-tile recall {result['defect_tile_recall']:.4f}, segments "
                  f"{100 * result['tiles_segmented_share']:.0f}% of tiles "
                  f"({result['images']} frames)")
    for line in report.engines_not_built:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

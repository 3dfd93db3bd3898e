"""edge-eval: score a checkpoint or a bundle on labelled strips, the way the line runs it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

from lineside.edge.bundle import ClassSpec, load_bundle
from lineside.edge.cli.common import class_values, parser, setup_logging
from lineside.edge.config import ConfigError
from lineside.edge.evaluation import LabelledFrames, score, score_screen
from lineside.edge.overlay import compare

EXAMPLES = """\
  edge-eval bundles/mini data/heldout                    # the bundle on ONNX Runtime (CPU)
  edge-eval runs/mini.pt data/heldout -o reports/mini    # the checkpoint (torch), overlays
  edge-eval bundles/r18 data/heldout --precision int8
  edge-eval bundles/r18 data/heldout --precision int8 --screen bundles/screen-r18
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-eval", "Kaggle Severstal Dice, IoU, pixel accuracy and image-level "
                "precision/recall of a checkpoint or bundle, with the runtime's tiling and "
                "post-processing, plus overlays of the worst and best frames.", EXAMPLES)
    ap.add_argument("model", help="checkpoint (.pt, needs torch) or bundle directory")
    ap.add_argument("data", help="Severstal-layout folder with train.csv")
    ap.add_argument("--precision", default="fp32", help="bundle model to score")
    ap.add_argument("--limit", type=int, default=0, help="first N frames only")
    ap.add_argument("--screen", metavar="BUNDLE", help="screening classifier bundle in front "
                    "of the bundle (as edge-serve --screen): segment only flagged tiles")
    ap.add_argument("--screen-threshold", action="append", default=[], metavar="CLASS=P",
                    help="override a class's screening threshold")
    ap.add_argument("-o", "--out", help="report directory (metrics.json + overlays)")
    args = ap.parse_args(argv)
    setup_logging()
    model = Path(args.model)
    if model.is_dir():
        from lineside.edge.backends import create_backend

        bundle = load_bundle(model)
        manifest = bundle.manifest
        backend = create_backend("ort-cpu", bundle, args.precision)
        classes, tile = manifest.classes, (manifest.tile_height, manifest.tile_width)
        channels = manifest.in_channels
        if args.screen:
            from lineside.edge.backends.screened import (
                create_screened_backend,
                with_screen_gate,
            )

            try:
                overrides = class_values(args.screen_threshold, float, "--screen-threshold")
            except ConfigError as exc:
                ap.error(str(exc))
            backend = create_screened_backend(args.screen, bundle, backend, "ort-cpu",
                                              args.precision, overrides=overrides)
            classes = with_screen_gate(classes, list(backend.thresholds))
    elif args.screen:
        ap.error("--screen works on bundles (the classifier is a bundle too)")
    else:
        from lineside.train.torch_backend import TorchBackend

        backend = TorchBackend(model)
        classes = [ClassSpec(**c) for c in backend.meta["classes"]]
        tile, channels = tuple(backend.meta["tile"]), int(backend.meta["in_channels"])
    frames = LabelledFrames.from_folder(args.data, [c.id for c in classes], args.limit)
    if model.is_dir() and manifest.task == "classification":  # a screening classifier
        screen_result = score_screen(backend, frames, classes, tile, channels)
        print(json.dumps(screen_result, indent=2))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "metrics.json").write_text(json.dumps(screen_result, indent=2))
        return 0
    result = score(backend, frames, classes, tile, channels, keep_masks=bool(args.out))
    masks = result.pop("masks", None)
    per_frame = result.pop("per_frame_dice", None)
    counts = getattr(backend, "counts", None)
    if counts is not None:  # a screened backend: how much segmentation the screen saved
        result["screen"] = {"tiles": counts.tiles, "segmented": counts.segmented,
                            "segmented_share": round(counts.segmented_share, 4)}
    print(json.dumps({k: v for k, v in result.items() if k != "image_level"}, indent=2))
    for class_id, values in result["image_level"].items():
        print(f"class {class_id}: image precision {values['precision']} recall "
              f"{values['recall']} (support {values['support']})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        order = sorted(range(len(per_frame)), key=lambda i: per_frame[i])
        for tag, picks in (("worst", order[:3]), ("best", order[-3:])):
            for i in picks:
                image = compare(frames.images[i], masks[i], frames.truths[i],
                                f"{frames.names[i]} Dice {per_frame[i]:.3f}")
                cv2.imwrite(str(out / f"{tag}-{Path(frames.names[i]).stem}.png"), image)
        print(f"report and overlays in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

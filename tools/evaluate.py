"""edge-eval: score a checkpoint or a bundle on labelled strips, the way the line runs it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

from lineside.edge.bundle import BundleError
from lineside.edge.cli.args import model_args, model_settings
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import CameraSettings, ConfigError
from lineside.edge.labels import LabelFormatError
from lineside.edge.overlay import compare
from lineside.edge.pipeline.model import compose_model
from lineside.tools.evaluation import LabelledFrames, score, score_screen

EXAMPLES = """\
  edge-eval bundles/mini data/heldout                    # the bundle, best backend here
  edge-eval runs/mini.pt data/heldout -o reports/mini    # the checkpoint (torch), overlays
  edge-eval bundles/r18 data/heldout --precision int8
  edge-eval bundles/r18 data/heldout --precision int8 --screen bundles/screen-r18
  edge-eval bundles/r18 data/labelme-folder              # any label format edge-train reads
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-eval", "Kaggle Severstal Dice, IoU, pixel accuracy and image-level "
                "precision/recall of a checkpoint or bundle, with the runtime's tiling and "
                "post-processing, plus overlays of the worst and best frames.", EXAMPLES)
    ap.add_argument("model", help="checkpoint (.pt, needs torch) or bundle directory")
    ap.add_argument("data", help="labelled folder: Severstal train.csv, images/ + masks/, "
                    "or LabelMe JSON")
    group = model_args(defaults="schema", exclude=("inject_faults",))
    group.add_to(ap)
    ap.add_argument("--limit", type=int, default=0, help="first N frames only")
    ap.add_argument("-o", "--out", help="report directory (metrics.json + overlays)")
    args = ap.parse_args(argv)
    setup_logging()
    path = Path(args.model)
    try:
        settings = model_settings(group.values(args))
        if path.is_dir():
            model = compose_model(path, settings)
        elif settings.screen:
            ap.error("--screen works on bundles (the classifier is a bundle too)")
        else:
            from lineside.train.torch_backend import checkpoint_model

            model = checkpoint_model(path)
        classes = model.classes_for(CameraSettings())  # the bundle's own post-processing
        frames = LabelledFrames.from_folder(args.data, [c.id for c in classes], args.limit)
    except (ConfigError, BundleError, LabelFormatError) as exc:
        print(f"edge-eval: {exc}", file=sys.stderr)
        return 2
    if model.bundle.manifest.task == "classification":  # a screening classifier
        result = score_screen(model, frames, classes)
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "metrics.json").write_text(json.dumps(result, indent=2))
        return 0
    result = score(model, frames, classes, keep_masks=bool(args.out))
    masks = result.pop("masks", None)
    per_frame = result.pop("per_frame_dice", None)
    print(json.dumps({k: v for k, v in result.items() if k != "image_level"}, indent=2))
    for class_id, values in result["image_level"].items():  # type: ignore[union-attr]
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

"""edge-eval: score a checkpoint or a bundle on labelled strips, the way the line runs it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from lineside.edge.bundle import BundleError
from lineside.edge.cli.args import model_args, model_settings
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import CameraSettings, ConfigError
from lineside.edge.labels import LabelFormatError
from lineside.edge.labels.severstal import LAYOUTS, labels_from_masks, write_labels
from lineside.edge.overlay import compare
from lineside.edge.pipeline.model import LoadedModel, compose_model
from lineside.tools.evaluation import LabelledFrames, compare_variants, score, score_screen

log = logging.getLogger("lineside.tools.evaluate")

EXAMPLES = """\
  edge-eval bundles/mini data/heldout                    # the bundle, best backend here
  edge-eval runs/mini.pt data/heldout -o reports/mini    # the checkpoint (torch), overlays
  edge-eval bundles/r18 data/heldout --precision int8
  edge-eval bundles/r18 data/heldout --precision int8 --screen bundles/screen-r18
  edge-eval bundles/r18 data/labelme-folder              # any label format edge-train reads
  edge-eval bundles/r18 data/heldout --compare --checkpoint runs/r18.pt   # every variant
  edge-eval bundles/r18 data/heldout --submission sub.csv --layout old  # Kaggle CSV too
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
    ap.add_argument("--compare", action="store_true", help="run every variant the bundle "
                    "has here (FP32, FP16, both INT8 graphs, TensorRT engines where TensorRT "
                    "runs) on the same frames: Dice of each, and Dice and verdict agreement "
                    "against FP32")
    ap.add_argument("--checkpoint", help="with --compare: the checkpoint the bundle was "
                    "exported from, as one more variant (needs torch)")
    ap.add_argument("-o", "--out", help="report directory (metrics.json + overlays)")
    ap.add_argument("--submission", metavar="CSV", help="also write the predicted masks as a "
                    "Kaggle-style label file (RLE, every frame listed)")
    ap.add_argument("--layout", choices=LAYOUTS, default="new", help="--submission layout: "
                    "new (ImageId,ClassId,EncodedPixels) or old (ImageId_ClassId,"
                    "EncodedPixels, one row per image and class)")
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
    if args.compare:
        if not path.is_dir():
            ap.error("--compare takes a bundle")
        report = compare_variants(bundle_variants(path, args.checkpoint), frames, classes)
        print(json.dumps(report, indent=2))
        print(comparison_table(report))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
        return 0
    if model.bundle.manifest.task == "classification":  # a screening classifier
        result = score_screen(model, frames, classes)
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "metrics.json").write_text(json.dumps(result, indent=2))
        return 0
    result = score(model, frames, classes, keep_masks=bool(args.out or args.submission))
    masks = result.pop("masks", None)
    per_frame = result.pop("per_frame_dice", None)
    if args.submission:
        ids = tuple(c.id for c in classes)
        write_labels(args.submission, labels_from_masks(
            dict(zip(frames.names, masks, strict=True)), ids), args.layout, ids)
        print(f"submission ({args.layout} layout) in {args.submission}")
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


def bundle_variants(bundle_path: Path, checkpoint: str | None) -> dict[str, LoadedModel]:
    """Every variant of the bundle that runs here, FP32 first (the reference); the ones
    that cannot are logged with the reason."""
    from lineside.edge.backends import BackendUnavailable, create_backend
    from lineside.edge.bundle import load_bundle
    from lineside.edge.variants import VARIANTS

    bundle = load_bundle(bundle_path)
    models: dict[str, LoadedModel] = {}
    for variant in VARIANTS:
        if variant.key not in bundle.manifest.models:
            continue
        try:
            backend = create_backend("tensorrt", bundle, variant.precision) \
                if variant.is_engine else create_backend("ort-cpu", bundle, variant.key)
            backend.infer(np.zeros((1, *LoadedModel(bundle, backend).tile), np.uint8))
        except (BackendUnavailable, RuntimeError, BundleError) as exc:
            log.warning("not comparing %s: %s", variant.key, exc)
            continue
        models[variant.key] = LoadedModel(bundle, backend)
    if checkpoint:
        from lineside.train.torch_backend import checkpoint_model

        models["checkpoint"] = checkpoint_model(checkpoint)
    return models


def comparison_table(report: dict[str, dict]) -> str:
    reference = next(iter(report))
    lines = [f"| variant | Kaggle Dice | Dice vs {reference} | verdicts agree |",
             "|---|---|---|---|"]
    for label, row in report.items():
        against = row[f"vs_{reference}"]
        lines.append(f"| {label} | {row['dice']:.4f} | {against['dice']:.4f} | "
                     f"{100 * against['verdict_agreement']:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""How a bundle does on the real Severstal strips in tests/data (issue 18's check of the
generator: a model trained only on generated strips must do no worse there than
predicting nothing, and reject none of the defect-free real strips).

Usage: python scripts/real_samples.py BUNDLE [--json OUT]

The samples folder holds 8 Kaggle JPEGs and 14 lossless PNG decodes whose label rows
name them `<id>.jpg`; this assembles one Severstal-layout folder of all of them (rows
renamed to the files' names) and runs the bundle on it as the daemon does.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "severstal_samples"
# The defect-free real strips (no label rows), from the samples' README.
CLEAN = {"000789191", "002e73b3c", "005b92582", "0198ab92d", "0a1cade03", "017d75655"}


def assemble(dest: Path) -> Path:
    """A Severstal-layout folder of every labelled real sample."""
    images = dest / "train_images"
    images.mkdir(parents=True)
    names = {}
    for folder in ("images", "images_png"):
        for path in sorted((SAMPLES / folder).iterdir()):
            names.setdefault(path.stem, path.name)
            if names[path.stem] == path.name:
                shutil.copy(path, images / path.name)
    with open(SAMPLES / "train_with_mask_derived.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    with open(dest / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows[0])
        for image_id, class_id, pixels in rows[1:]:
            stem = Path(image_id).stem
            if stem in names:
                writer.writerow([names[stem], class_id, pixels])
    return dest


def check(bundle: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from lineside.edge.config import CameraSettings, ModelSettings
    from lineside.edge.labels import open_dataset
    from lineside.edge.pipeline.decide import judged
    from lineside.edge.pipeline.model import load_model
    from lineside.edge.scoring import Scorecard

    model = load_model(bundle, ModelSettings(backend="ort-cpu"))
    camera = CameraSettings()
    classes = model.classes_for(camera)
    ids = [c.id for c in classes]
    card, empty, rejected = Scorecard(ids), Scorecard(ids), []
    with tempfile.TemporaryDirectory() as tmp:
        for sample in open_dataset(assemble(Path(tmp) / "real")).samples:
            gray = sample.image()
            truth = sample.masks(tuple(ids), gray.shape)
            masks, _, verdict, _ = judged(model, gray, classes, camera.rule)
            card.add(masks, truth)
            empty.add(np.zeros_like(truth), truth)
            if Path(sample.name).stem in CLEAN and verdict != "OK":
                rejected.append(sample.name)
    summary = card.summary()
    return {"bundle": bundle, "strips": card.frames, "kaggle_dice": summary["dice"],
            "all_empty_dice": empty.summary()["dice"],
            "dice_per_class": summary["dice_per_class"],
            "strips_flagged_per_class": {str(c): int(np.sum([p[k] for p in card.predicted_any]))
                                         for k, c in enumerate(ids)},
            "clean_strips": len(CLEAN), "clean_strips_rejected": rejected}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--json")
    args = ap.parse_args()
    report = check(args.bundle)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a labelled data set in another format this package reads (`edge-labels convert`).

Images are copied byte for byte (a re-encoded JPEG would change the pixels every command
scores), labels are written from the masks the source reader gives, and each written
image's masks are read back through the target format's own reader and compared, so the
report says exactly what the conversion kept. What a format cannot hold:

- `mask_folders`: one class per pixel. Overlapping classes are refused, naming the image,
  the classes and the pixel count (Severstal allows overlaps; a label map does not).
- `labelme`: polygons have no holes. A region with a hole is written filled, and the
  report counts the pixels that changed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lineside.edge import rle
from lineside.edge.files import write_file_atomically
from lineside.edge.labels import Dataset, LabelFormatError, Sample, open_dataset
from lineside.edge.labels.drafts import json_bytes, labelme_document, png
from lineside.edge.labels.severstal import write_labels

TARGETS = ("severstal", "mask_folders", "labelme")


@dataclass
class ConversionReport:
    source_format: str
    target_format: str
    images: int = 0
    masks_exact: int = 0  # images whose masks read back from the target unchanged
    changed_pixels: dict[str, int] = field(default_factory=dict)  # image -> pixels changed

    @property
    def exact(self) -> bool:
        return not self.changed_pixels

    def to_json(self) -> dict:
        return {"source_format": self.source_format, "target_format": self.target_format,
                "images": self.images, "masks_exact": self.masks_exact,
                "exact": self.exact, "changed_pixels": self.changed_pixels}


def label_map(masks: np.ndarray, class_ids: tuple[int, ...], name: str) -> np.ndarray:
    """(H, W) uint8 class-id map from (K, H, W) masks; overlapping classes are an error."""
    overlap = masks.astype(np.uint16).sum(0) > 1
    if overlap.any():
        present = [c for k, c in enumerate(class_ids) if (masks[k].astype(bool) & overlap).any()]
        raise LabelFormatError(f"{name}: classes {present} overlap at {int(overlap.sum())} "
                               "pixels; a label map holds one class per pixel (write labelme "
                               "or severstal instead)")
    labels = np.zeros(masks.shape[1:], np.uint8)
    for k, class_id in enumerate(class_ids):
        labels[masks[k].astype(bool)] = class_id
    return labels


def _write_one(sample: Sample, masks: np.ndarray, class_ids: tuple[int, ...], out: Path,
               target: str) -> None:
    if target == "severstal":
        shutil.copyfile(sample.image_path, out / "train_images" / sample.name)
    elif target == "mask_folders":
        shutil.copyfile(sample.image_path, out / "images" / sample.name)
        write_file_atomically(out / "masks" / f"{Path(sample.name).stem}.png",
                              png(label_map(masks, class_ids, sample.name)))
    else:
        shutil.copyfile(sample.image_path, out / sample.name)
        document = labelme_document(masks, list(class_ids), sample.name,
                                    description="")
        write_file_atomically(out / f"{Path(sample.name).stem}.json", json_bytes(document))


def convert(source: Dataset, out: str | Path, target: str,
            class_ids: tuple[int, ...] = (1, 2, 3, 4), layout: str = "new") -> ConversionReport:
    """Write `source` under `out` (a new or empty folder) as `target`; see the module."""
    if target not in TARGETS:
        raise ValueError(f"unknown label format {target!r}: one of {', '.join(TARGETS)}")
    if not source.labelled:
        raise LabelFormatError(f"{source.root} holds no labels to convert")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: convert writes into a new folder")
    for folder in {"severstal": ["train_images"], "mask_folders": ["images", "masks"],
                   "labelme": []}[target]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in source.samples]
    if len(set(names)) != len(names):
        raise LabelFormatError(f"{source.root}: image names repeat; every format keys "
                               "labels by the image's name")
    report = ConversionReport(str(source.format), target)
    written: dict[str, np.ndarray] = {}
    rows: dict[str, dict[int, str]] = {}
    for sample in source.samples:
        shape = sample.image().shape[:2]
        masks = sample.masks(class_ids, shape)
        _write_one(sample, masks, class_ids, out, target)
        rows[sample.name] = {c: rle.encode(masks[k]) for k, c in enumerate(class_ids)
                             if masks[k].any()}
        written[sample.name] = masks
        report.images += 1
    if target == "severstal":
        write_labels(out / "train.csv", rows, layout=layout)
    # Read back through the target's reader: the report is what the next command sees.
    label_names = {str(c): c for c in class_ids} if target == "labelme" else None
    for sample in open_dataset(out, label_names=label_names).samples:
        expected = written[sample.name]
        changed = int((sample.masks(class_ids, expected.shape[1:]) != expected).sum())
        if changed:
            report.changed_pixels[sample.name] = changed
        else:
            report.masks_exact += 1
    return report


__all__ = ["TARGETS", "ConversionReport", "convert", "label_map"]

"""Severstal label files: `train.csv` in the new and the old Kaggle layout.

New layout: `ImageId,ClassId,EncodedPixels`, one row per non-empty (image, class) pair.
Old layout: `ImageId_ClassId,EncodedPixels`, four rows per image, empty where no defect.
Both read into {image_id: {class_id: rle}}; images with no defect map to {} when the file
says so (old layout) and are absent otherwise (the new layout lists only defects).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from lineside.edge import rle

SEVERSTAL_SHAPE = (256, 1600)
SEVERSTAL_CLASSES = (1, 2, 3, 4)

Labels = dict[str, dict[int, str]]


class LabelFileError(ValueError):
    """A label file in neither Severstal layout, or with a malformed row."""


def read_labels(path: str | Path) -> Labels:
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise LabelFileError(f"{path} is empty")
        header = [h.strip() for h in header]
        labels: Labels = {}
        if header == ["ImageId", "ClassId", "EncodedPixels"]:
            for line, row in enumerate(reader, start=2):
                if len(row) != 3:
                    raise LabelFileError(f"{path}:{line}: expected 3 columns, got {len(row)}")
                image_id, class_id, encoded = row
                pairs = labels.setdefault(image_id, {})
                if encoded.strip():
                    pairs[int(class_id)] = encoded.strip()
        elif header == ["ImageId_ClassId", "EncodedPixels"]:
            for line, row in enumerate(reader, start=2):
                if len(row) != 2 or "_" not in row[0]:
                    raise LabelFileError(f"{path}:{line}: expected ImageId_ClassId,EncodedPixels")
                image_id, _, class_id = row[0].rpartition("_")
                pairs = labels.setdefault(image_id, {})
                if row[1].strip():
                    pairs[int(class_id)] = row[1].strip()
        else:
            raise LabelFileError(f"{path}: header {header} is neither Severstal layout")
    return labels


def write_labels(path: str | Path, labels: Labels) -> None:
    """Write the new layout (non-empty pairs only), sorted for reproducible files."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ImageId", "ClassId", "EncodedPixels"])
        for image_id in sorted(labels):
            for class_id in sorted(labels[image_id]):
                writer.writerow([image_id, class_id, labels[image_id][class_id]])


def masks_for(pairs: dict[int, str], shape: tuple[int, int] = SEVERSTAL_SHAPE,
              class_ids: tuple[int, ...] = SEVERSTAL_CLASSES) -> np.ndarray:
    """(K, H, W) uint8 masks for one image's {class_id: rle}."""
    masks = np.zeros((len(class_ids), *shape), dtype=np.uint8)
    for k, class_id in enumerate(class_ids):
        if class_id in pairs:
            masks[k] = rle.decode(pairs[class_id], shape)
    return masks

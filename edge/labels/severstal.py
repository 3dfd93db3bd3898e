"""Severstal label files: `train.csv` in the new and the old Kaggle layout.

New layout: `ImageId,ClassId,EncodedPixels`, one row per non-empty (image, class) pair.
Old layout: `ImageId_ClassId,EncodedPixels`, four rows per image, empty where no defect.
Both read into {image_id: {class_id: rle}}; images with no defect map to {} when the file
says so (old layout) and are absent otherwise (the new layout lists only defects).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lineside.edge import rle
from lineside.edge.labels import LabelFormatError, Sample, images_in

SEVERSTAL_SHAPE = (256, 1600)
SEVERSTAL_CLASSES = (1, 2, 3, 4)

LABEL_FILE = "train.csv"
LAYOUTS = ("new", "old")

Labels = dict[str, dict[int, str]]


class LabelFileError(LabelFormatError):
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


def labels_from_masks(masks: dict[str, np.ndarray], class_ids: tuple[int, ...]) -> Labels:
    """{image_id: (K, H, W) masks} as label rows (a Kaggle submission): every image is
    listed, with its non-empty classes only."""
    return {image_id: {c: encoded for c, mask in zip(class_ids, stack, strict=True)
                       if (encoded := rle.encode(mask))}
            for image_id, stack in masks.items()}


def write_labels(path: str | Path, labels: Labels, layout: str = "new",
                 class_ids: tuple[int, ...] = SEVERSTAL_CLASSES) -> None:
    """Write `labels` sorted, for reproducible files. `new`: non-empty pairs only;
    `old`: one row per image and class in `class_ids`, empty where there is no defect
    (images mapped to {} still get their rows)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if layout == "new":
            writer.writerow(["ImageId", "ClassId", "EncodedPixels"])
            for image_id in sorted(labels):
                for class_id in sorted(labels[image_id]):
                    writer.writerow([image_id, class_id, labels[image_id][class_id]])
            return
        writer.writerow(["ImageId_ClassId", "EncodedPixels"])
        for image_id in sorted(labels):
            for class_id in class_ids:
                writer.writerow([f"{image_id}_{class_id}", labels[image_id].get(class_id, "")])


@dataclass(frozen=True)
class RleLabels:
    """One image's rows of a Severstal label file: {class_id: rle}."""

    pairs: dict[int, str]

    def masks(self, class_ids: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        return masks_for(self.pairs, shape, class_ids)

    def classes(self) -> set[int]:
        return set(self.pairs)


def detect(root: Path) -> bool:
    return (root / LABEL_FILE).is_file()


def image_folder(root: Path) -> Path:
    return root / "train_images" if (root / "train_images").is_dir() else root


def read(root: Path, label_names: dict[str, int] | None = None) -> list[Sample]:
    """Every image of the folder; an image without rows is defect-free (new layout)."""
    labels = read_labels(root / LABEL_FILE)
    return [Sample(p.name, p, RleLabels(labels.get(p.name, {})))
            for p in images_in(image_folder(root))]


def masks_for(pairs: dict[int, str], shape: tuple[int, int] = SEVERSTAL_SHAPE,
              class_ids: tuple[int, ...] = SEVERSTAL_CLASSES) -> np.ndarray:
    """(K, H, W) uint8 masks for one image's {class_id: rle}."""
    masks = np.zeros((len(class_ids), *shape), dtype=np.uint8)
    for k, class_id in enumerate(class_ids):
        if class_id in pairs:
            masks[k] = rle.decode(pairs[class_id], shape)
    return masks

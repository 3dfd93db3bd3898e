"""Label formats besides Severstal CSV, read into the same (image, class masks) pairs.

- Image + mask folders: `images/<stem>.png|jpg` and `masks/<stem>.png`, a label map whose
  pixel value is the class id (0 = background).
- LabelMe JSON (how weld-nugget labels come): one `<stem>.json` per image with polygon
  `shapes`; each shape's `label` is mapped to a class id (given, or the sorted label names
  numbered from 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class LabelFormatError(ValueError):
    pass


def detect_format(root: Path) -> str:
    if (root / "train.csv").is_file():
        return "severstal"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "mask_folders"
    if any(root.glob("*.json")):
        return "labelme"
    raise LabelFormatError(f"{root}: no train.csv, no images/+masks/ folders, no LabelMe "
                           "*.json files")


def read_mask_folders(root: Path, class_ids: tuple[int, ...]
                      ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, gray image, (K, H, W) masks) for each image with a label map."""
    for image_path in sorted((root / "images").iterdir()):
        if image_path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask_path = root / "masks" / f"{image_path.stem}.png"
        if not mask_path.is_file():
            raise LabelFormatError(f"{image_path.name} has no label map {mask_path}")
        gray = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        labels = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if gray is None or labels is None or labels.shape[:2] != gray.shape:
            raise LabelFormatError(f"{image_path.name}: unreadable, or mask size differs")
        if labels.ndim == 3:
            labels = labels[..., 0]
        yield image_path.name, gray, np.stack([(labels == c) for c in class_ids]).astype(
            np.uint8)


def labelme_classes(root: Path) -> dict[str, int]:
    names = set()
    for path in sorted(root.glob("*.json")):
        names |= {shape["label"] for shape in json.loads(path.read_text()).get("shapes", [])}
    return {name: i + 1 for i, name in enumerate(sorted(names))}


def read_labelme(root: Path, class_ids: tuple[int, ...], names: dict[str, int] | None = None
                 ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, gray image, (K, H, W) masks) from LabelMe polygon files."""
    names = names or labelme_classes(root)
    for path in sorted(root.glob("*.json")):
        body = json.loads(path.read_text())
        image_path = path.parent / body.get("imagePath", f"{path.stem}.png")
        gray = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise LabelFormatError(f"{path.name}: cannot read its image {image_path}")
        masks = np.zeros((len(class_ids), *gray.shape), np.uint8)
        for shape in body.get("shapes", []):
            if shape["label"] not in names:
                raise LabelFormatError(f"{path.name}: label {shape['label']!r} is not in the "
                                       f"class map {names}")
            class_id = names[shape["label"]]
            if class_id not in class_ids:
                continue
            points = np.round(np.asarray(shape["points"], np.float64)).astype(np.int32)
            kind = shape.get("shape_type", "polygon")
            k = class_ids.index(class_id)
            if kind == "polygon":
                cv2.fillPoly(masks[k], [points], 1)
            elif kind == "rectangle":
                (x0, y0), (x1, y1) = points[:2]
                cv2.rectangle(masks[k], (x0, y0), (x1, y1), 1, -1)
            elif kind == "circle":
                center, edge = points[:2]
                cv2.circle(masks[k], tuple(center), int(np.hypot(*(edge - center))), 1, -1)
            else:
                raise LabelFormatError(f"{path.name}: shape_type {kind!r} is not supported")
        yield image_path.name, gray, masks

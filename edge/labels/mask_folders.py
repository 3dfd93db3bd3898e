"""Image + mask folders: `images/<stem>.<ext>` and `masks/<stem>.png`, a label map whose
pixel value is the class id (0 = background). Classes of one image cannot overlap here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineside.edge.labels import LabelFormatError, Sample, images_in


def detect(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


@dataclass(frozen=True)
class LabelMap:
    path: Path

    def _read(self) -> np.ndarray:
        labels = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise LabelFormatError(f"{self.path}: OpenCV cannot read this label map")
        return labels[..., 0] if labels.ndim == 3 else labels

    def masks(self, class_ids: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        labels = self._read()
        if labels.shape != tuple(shape):
            raise LabelFormatError(f"{self.path} is {labels.shape[0]}x{labels.shape[1]}, its "
                                   f"image {shape[0]}x{shape[1]}")
        return np.stack([labels == c for c in class_ids]).astype(np.uint8)

    def classes(self) -> set[int]:
        return {int(v) for v in np.unique(self._read()) if v}


def read(root: Path, label_names: dict[str, int] | None = None) -> list[Sample]:
    samples = []
    for image_path in images_in(root / "images"):
        mask_path = root / "masks" / f"{image_path.stem}.png"
        if not mask_path.is_file():
            raise LabelFormatError(f"{image_path.name} has no label map {mask_path}")
        samples.append(Sample(image_path.name, image_path, LabelMap(mask_path)))
    return samples

"""One reader for folders of frames, labelled or not: every command finds images here.

Training, `edge-eval`, the INT8 accuracy gate, calibration (stratification), `edge-bench
--images`, `edge-camsim` and the demo all open a folder with `open_dataset`, so a data set
that one of them reads, all of them read. Formats, detected in this order:

| format | layout | module |
|---|---|---|
| `severstal` | `train.csv` (either Kaggle layout) + `train_images/` (or beside it) | severstal.py |
| `mask_folders` | `images/<stem>.<ext>` + `masks/<stem>.png` (pixel = class id) | mask_folders.py |
| `labelme` | `<stem>.json` LabelMe polygons next to (or naming) their images | labelme.py |
| (none) | a folder of images (or `train_images/`), no labels | |

A `Sample` decodes its image and masks only when asked, so a data set of any size costs
one `Sample` per image until then. To add a format: a module with `detect(root)` and
`read(root, label_names)` returning samples, and a row in `READERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class LabelFormatError(ValueError):
    """A folder or label file that cannot be read, with the reason."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def images_in(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


class LabelSource(Protocol):
    """Where one image's masks come from (an RLE row, a label map, LabelMe shapes)."""

    def masks(self, class_ids: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        """(K, H, W) uint8 0/1 masks for `class_ids`, at the image's `shape`."""
        ...

    def classes(self) -> set[int]:
        """Class ids present in this image (without decoding masks where possible)."""
        ...


@dataclass(frozen=True)
class Sample:
    name: str  # the image's file name (Severstal's ImageId)
    image_path: Path
    labels: LabelSource | None = None  # None: an unlabelled image

    def image(self) -> np.ndarray:
        """(H, W) uint8 grey pixels."""
        gray = cv2.imread(str(self.image_path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise LabelFormatError(f"{self.image_path}: OpenCV cannot read this image")
        return gray

    def masks(self, class_ids: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        if self.labels is None:
            return np.zeros((len(class_ids), *shape), np.uint8)
        return self.labels.masks(tuple(class_ids), shape)

    def classes(self) -> list[int]:
        return sorted(self.labels.classes()) if self.labels is not None else []


@dataclass
class Dataset:
    root: Path
    format: str | None  # one of FORMATS, or None for a folder of unlabelled images
    samples: list[Sample] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.format is not None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]


Reader = Callable[[Path, dict[str, int] | None], list[Sample]]


def _readers() -> list[tuple[str, Callable[[Path], bool], Reader]]:
    from lineside.edge.labels import labelme, mask_folders, severstal

    return [("severstal", severstal.detect, severstal.read),
            ("mask_folders", mask_folders.detect, mask_folders.read),
            ("labelme", labelme.detect, labelme.read)]


FORMATS = ("severstal", "mask_folders", "labelme")


def detect_format(root: Path) -> str | None:
    """The label format of folder `root`, or None when it holds no labels."""
    return next((name for name, detect, _ in _readers() if detect(Path(root))), None)


def open_dataset(root: str | Path, *, label_names: dict[str, int] | None = None,
                 require_labels: bool = False, exclude: set[str] | None = None,
                 limit: int = 0) -> Dataset:
    """The samples of a folder (or of one image file), in name order.

    `label_names` maps LabelMe label names to class ids (default: sorted names from 1).
    `exclude` leaves out images by name (frames a calibration set was built from);
    `limit` keeps the first N after that.
    """
    root = Path(root)
    if root.is_file():
        if not is_image(root):
            raise LabelFormatError(f"{root} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        return Dataset(root.parent, None, [Sample(root.name, root)])
    if not root.is_dir():
        raise LabelFormatError(f"{root} does not exist")
    kind, samples = None, None
    for name, detect, read in _readers():
        if detect(root):
            kind, samples = name, read(root, label_names)
            break
    if samples is None:
        if require_labels:
            raise LabelFormatError(
                f"{root}: no labels found: expected train.csv (Severstal), images/ + masks/ "
                "folders, or LabelMe *.json files")
        folder = root / "train_images" if (root / "train_images").is_dir() else root
        samples = [Sample(p.name, p) for p in images_in(folder)]
    samples = [s for s in samples if s.name not in (exclude or set())]
    if limit:
        samples = samples[:limit]
    if not samples:
        raise LabelFormatError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return Dataset(root, kind, samples)


def list_images(root: str | Path) -> list[Path]:
    """Image paths of a folder in any layout above (or of one image file)."""
    return [s.image_path for s in open_dataset(root).samples]


__all__ = ["FORMATS", "IMAGE_SUFFIXES", "Dataset", "LabelFormatError", "LabelSource",
           "Sample", "detect_format", "images_in", "is_image", "list_images", "open_dataset"]

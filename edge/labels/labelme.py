"""LabelMe JSON (how weld-nugget labels come): one `<stem>.json` per image with polygon,
rectangle or circle `shapes`; each shape's `label` maps to a class id (given; numeric
labels are the ids; else the sorted label names numbered from 1). drafts.py writes
this format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lineside.edge.labels import LabelFormatError, Sample

SHAPE_TYPES = ("polygon", "rectangle", "circle")


def detect(root: Path) -> bool:
    return any(root.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LabelFormatError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LabelFormatError(f"{path}: not a LabelMe file (expected a JSON object)")
    return body


def label_names_of(root: Path) -> dict[str, int]:
    """Every label name used under `root` and its class id: labels that are all whole
    numbers are the class ids themselves (what lineside's recorded drafts write, so a set
    holding only some classes keeps their ids); other names are sorted and numbered
    from 1."""
    names = set()
    for path in sorted(root.glob("*.json")):
        names |= {shape["label"] for shape in _load(path).get("shapes", [])}
    if names and all(isinstance(n, str) and n.isdigit() for n in names):
        return {name: int(name) for name in names}
    return {name: i + 1 for i, name in enumerate(sorted(names))}


@dataclass(frozen=True)
class Shapes:
    """One LabelMe file's shapes as (class id, shape type, points)."""

    path: Path
    shapes: tuple[tuple[int, str, tuple[tuple[float, float], ...]], ...]

    def masks(self, class_ids: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        masks = np.zeros((len(class_ids), *shape), np.uint8)
        for class_id, kind, points in self.shapes:
            if class_id not in class_ids:
                continue
            k = class_ids.index(class_id)
            corners = np.round(np.asarray(points, np.float64)).astype(np.int32)
            if kind == "polygon":
                cv2.fillPoly(masks[k], [corners], 1)
            elif kind == "rectangle":
                (x0, y0), (x1, y1) = corners[:2]
                cv2.rectangle(masks[k], (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)
            else:  # circle: centre and a point on the rim
                centre, edge = corners[:2]
                cv2.circle(masks[k], (int(centre[0]), int(centre[1])),
                           int(np.hypot(*(edge - centre))), 1, -1)
        return masks

    def classes(self) -> set[int]:
        return {class_id for class_id, _, _ in self.shapes}


def read(root: Path, label_names: dict[str, int] | None = None) -> list[Sample]:
    """Samples from every `*.json` under `root`; errors name the file and the label."""
    names = label_names or label_names_of(root)
    samples = []
    for path in sorted(root.glob("*.json")):
        body = _load(path)
        image_path = path.parent / body.get("imagePath", f"{path.stem}.png")
        shapes = []
        for shape in body.get("shapes", []):
            label = shape.get("label")
            if label not in names:
                raise LabelFormatError(f"{path.name}: label {label!r} is not in the class map "
                                       f"{names}")
            kind = shape.get("shape_type") or "polygon"
            if kind not in SHAPE_TYPES:
                raise LabelFormatError(f"{path.name}: shape_type {kind!r} is not supported "
                                       f"({', '.join(SHAPE_TYPES)})")
            points = tuple((float(x), float(y)) for x, y in shape["points"])
            shapes.append((names[label], kind, points))
        samples.append(Sample(image_path.name, image_path, Shapes(path, tuple(shapes))))
    return samples

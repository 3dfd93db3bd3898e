"""Draft labels from predicted masks, in the formats this package reads: a LabelMe JSON
(polygons a person corrects in LabelMe, which opens the folder as it is) and a label-map
PNG (`mask_folders`). The inverse of labelme.py and mask_folders.py, so a recorded frame
goes back into training unchanged when nobody corrects it.

LabelMe labels are the class ids as text ("1".."4"): labelme.read maps numeric labels
to those ids without a class map.
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np

LABELME_VERSION = "5.4.1"  # the LabelMe file format these drafts follow


def polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """Outer outlines of a (H, W) 0/1 mask's regions as polygons of [x, y] pixel
    centres. Filled back with cv2.fillPoly they cover the region's pixels (LabelMe has
    no holes: a hole inside a region is filled)."""
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).tolist() for c in contours]


DRAFT = "draft: predicted by the serving model"


def labelme_document(masks: np.ndarray, class_ids: list[int], image_name: str,
                     flags: dict[str, bool] | None = None,
                     description: str = DRAFT) -> dict[str, Any]:
    """A LabelMe file for one image from its (K, H, W) masks; `description` goes on every
    shape (a recorded frame's drafts say that a model drew them)."""
    height, width = masks.shape[1:]
    shapes = []
    for k, class_id in enumerate(class_ids):
        if not masks[k].any():
            continue
        for points in polygons(masks[k]):
            if len(points) < 3:  # a 1- or 2-pixel region: LabelMe draws no polygon of it
                x0, y0 = np.min(points, axis=0).tolist()
                x1, y1 = np.max(points, axis=0).tolist()
                shapes.append(_shape(class_id, [[x0, y0], [x1, y1]], "rectangle",
                                     description))
            else:
                shapes.append(_shape(class_id, points, "polygon", description))
    return {"version": LABELME_VERSION, "flags": flags or {}, "shapes": shapes,
            "imagePath": image_name, "imageData": None, "imageHeight": int(height),
            "imageWidth": int(width)}


def _shape(class_id: int, points: list[list[int]], kind: str,
           description: str) -> dict[str, Any]:
    return {"label": str(class_id), "points": points, "group_id": None,
            "description": description, "shape_type": kind, "flags": {}}


def png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} PNG")
    return encoded.tobytes()


def json_bytes(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, indent=1) + "\n").encode()


__all__ = ["json_bytes", "labelme_document", "png", "polygons"]

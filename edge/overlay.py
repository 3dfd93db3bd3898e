"""Defect masks drawn over frames in class colours: one renderer for the demo, edge-eval
and the operator view, so that everyone looks at the same picture."""

from __future__ import annotations

import cv2
import numpy as np

# BGR colours per class slot (Severstal classes 1..4, then repeats).
CLASS_COLOURS = ((0, 0, 255), (0, 200, 0), (255, 80, 0), (0, 215, 255))


def colour(k: int) -> tuple[int, int, int]:
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def draw(gray: np.ndarray, masks: np.ndarray, alpha: float = 0.45,
         title: str = "") -> np.ndarray:
    """BGR image: `gray` (H, W) with (K, H, W) masks filled (alpha) and outlined."""
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    fill = image.copy()
    for k in range(masks.shape[0]):
        region = masks[k].astype(bool)
        if region.any():
            fill[region] = colour(k)
    image = cv2.addWeighted(fill, alpha, image, 1 - alpha, 0)
    for k in range(masks.shape[0]):
        contours, _ = cv2.findContours(masks[k].astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, colour(k), 1)
    if title:
        # White on a dark box: readable on bright and dark steel alike.
        (width, height), baseline = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
        cv2.rectangle(image, (4, 4), (12 + width, 12 + height + baseline), (20, 20, 20), -1)
        cv2.putText(image, title, (8, 8 + height), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return image


def compare(gray: np.ndarray, predicted: np.ndarray, truth: np.ndarray,
            label: str = "") -> np.ndarray:
    """Prediction above ground truth, for review of one frame."""
    return np.vstack([draw(gray, predicted, title=f"{label} predicted".strip()),
                      np.full((4, gray.shape[1], 3), 255, np.uint8),
                      draw(gray, truth, title=f"{label} ground truth".strip())])

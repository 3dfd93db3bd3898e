"""Post-processing tuned on validation strips, as the top Severstal solutions did:
per class, the pixel threshold and the minimum mask area that maximise Kaggle Dice."""

from __future__ import annotations

import numpy as np

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS = (0, 50, 150, 400, 800, 1500)


def class_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice for (N, H, W) binary masks of one class (1 when both empty)."""
    p = pred.reshape(len(pred), -1)
    t = truth.reshape(len(truth), -1)
    inter = np.logical_and(p, t).sum(1)
    total = p.sum(1) + t.sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def tune_class(probabilities: np.ndarray, truth: np.ndarray) -> tuple[float, int, float]:
    """Best (threshold, min_area, dice) for one class: (N, H, W) probabilities and truth."""
    best = (0.5, 0, -1.0)
    truth = truth.astype(bool)
    for threshold in THRESHOLDS:
        pred = probabilities > threshold
        areas = pred.reshape(len(pred), -1).sum(1)
        for min_area in MIN_AREAS:
            kept = pred & (areas >= min_area)[:, None, None]
            dice = float(class_dice(kept, truth).mean())
            if dice > best[2] + 1e-9:
                best = (threshold, min_area, dice)
    return best

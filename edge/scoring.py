"""Segmentation scores as the Severstal competition computes them.

Kaggle Dice is the mean over every (image, class) pair of 2|P∩G| / (|P|+|G|), scoring 1
when both are empty (so an all-empty submission already scores about 0.86 on Severstal:
always read it beside per-class numbers).
"""

from __future__ import annotations

import numpy as np


def _pixels(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, pixels) bool views of (N, K, H, W) or (K, H, W) masks."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if pred.ndim == 3:
        pred, truth = pred[None], truth[None]
    return (pred.reshape(pred.shape[0], pred.shape[1], -1).astype(bool),
            truth.reshape(truth.shape[0], truth.shape[1], -1).astype(bool))


def dice_pairs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-(image, class) Dice for (N, K, H, W) or (K, H, W) binary arrays -> (N, K)."""
    p, t = _pixels(pred, truth)
    inter = np.logical_and(p, t).sum(-1)
    total = p.sum(-1) + t.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def iou_pairs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-(image, class) IoU, 1 when both are empty -> (N, K)."""
    p, t = _pixels(pred, truth)
    inter = np.logical_and(p, t).sum(-1)
    union = np.logical_or(p, t).sum(-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def kaggle_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(dice_pairs(pred, truth).mean())

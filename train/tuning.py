"""Post-processing tuned on validation strips, as the top Severstal solutions did:
per class, the pixel threshold and the minimum mask area that maximise Kaggle Dice
(edge.scoring's Dice, from pixel counts so that each sweep step costs no pixel work)."""

from __future__ import annotations

import numpy as np

from lineside.edge.scoring import dice_from_counts

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS = (0, 50, 150, 400, 800, 1500)
GATE_THRESHOLDS = (0.0, 0.3, 0.5, 0.7)  # 0: gate off for the class


def tune_class(probabilities: np.ndarray, truth: np.ndarray,
               presence: np.ndarray | None = None) -> tuple[float, int, float, float]:
    """Best (threshold, min_area, gate threshold, mean Dice) for one class:
    (N, H, W) probabilities and truth, (N,) presence scores when the model has a gate.

    Pixel work is done once per threshold; the minimum-area and gate sweeps only re-score
    per-image counts (a dropped mask scores as an empty prediction).
    """
    truth = truth.reshape(len(truth), -1).astype(bool)
    truth_area = truth.sum(1)
    empty_score = (truth_area == 0).astype(float)  # Dice of an empty prediction
    best = (0.5, 0, 0.0, -1.0)
    gates = GATE_THRESHOLDS if presence is not None else (0.0,)
    for threshold in THRESHOLDS:
        pred = probabilities.reshape(len(probabilities), -1) > threshold
        pred_area = pred.sum(1)
        score = dice_from_counts(np.logical_and(pred, truth).sum(1), pred_area, truth_area)
        for min_area in MIN_AREAS:
            for gate in gates:
                kept = pred_area >= min_area
                if gate:
                    kept &= presence >= gate
                dice = float(np.where(kept, score, empty_score).mean())
                if dice > best[3] + 1e-9:
                    best = (threshold, min_area, gate, dice)
    return best

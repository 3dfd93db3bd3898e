"""Post-processing tuned on validation strips, as the top Severstal solutions did:
per class, the pixel threshold and the minimum mask area that maximise Kaggle Dice
(edge.scoring's Dice, from pixel counts so that each sweep step costs no pixel work)."""

from __future__ import annotations

import numpy as np

from lineside.edge.postprocess import survives
from lineside.edge.scoring import dice_from_counts

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)  # 0.5 included: the untuned score
MIN_AREAS = (0, 50, 150, 400, 800, 1500)
GATE_THRESHOLDS = (0.0, 0.3, 0.5, 0.7)  # 0: gate off for the class


def tune_class(probabilities: np.ndarray, truth: np.ndarray,
               presence: np.ndarray | None = None) -> tuple[float, int, float, float]:
    """Best (threshold, min_area, gate threshold, mean Dice) for one class:
    (N, H, W) probabilities and truth, (N,) presence scores when the model has a gate."""
    truth = truth.reshape(len(truth), -1).astype(bool)
    flat = probabilities.reshape(len(probabilities), -1)
    above = [flat > t for t in THRESHOLDS]
    return tune_counts(np.stack([a.sum(1) for a in above], axis=1),
                       np.stack([(a & truth).sum(1) for a in above], axis=1),
                       truth.sum(1), presence)


def tune_counts(predicted: np.ndarray, intersection: np.ndarray, truth: np.ndarray,
                presence: np.ndarray | None = None) -> tuple[float, int, float, float]:
    """tune_class from pixel counts: (N, T) predicted and intersecting pixels at each of
    THRESHOLDS, (N,) truth pixels, (N,) presence. The sweeps only re-score counts (a
    dropped mask scores as an empty prediction), so validation keeps no probability map."""
    empty_score = (truth == 0).astype(float)  # Dice of an empty prediction
    best = (0.5, 0, 0.0, -1.0)
    gates = GATE_THRESHOLDS if presence is not None else (0.0,)
    for t, threshold in enumerate(THRESHOLDS):
        score = dice_from_counts(intersection[:, t], predicted[:, t], truth)
        for min_area in MIN_AREAS:
            for gate in gates:
                kept = survives(predicted[:, t], min_area, presence, gate)
                dice = float(np.where(kept, score, empty_score).mean())
                if dice > best[3] + 1e-9:
                    best = (threshold, min_area, gate, dice)
    return best


def dice_of_counts(predicted: np.ndarray, intersection: np.ndarray, truth: np.ndarray,
                   presence: np.ndarray | None, threshold: float, min_area: int,
                   gate: float) -> np.ndarray:
    """(N,) Kaggle Dice of one class with that post-processing, from tune_counts' counts
    (`threshold` must be one of THRESHOLDS)."""
    t = THRESHOLDS.index(threshold)
    kept = survives(predicted[:, t], min_area, presence, gate)
    return np.where(kept, dice_from_counts(intersection[:, t], predicted[:, t], truth),
                    (truth == 0).astype(float))

"""Segmentation scores as the Severstal competition computes them: the one definition.

Kaggle Dice is the mean over every (image, class) pair of 2|P∩G| / (|P|+|G|), scoring 1
when both are empty (so an all-empty submission already scores about 0.86 on Severstal:
always read it beside per-class numbers). Training (validation and threshold tuning),
`edge-eval` and the INT8 accuracy gate all score with this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def dice_from_counts(intersection: np.ndarray, predicted: np.ndarray,
                     truth: np.ndarray) -> np.ndarray:
    """Dice from pixel counts, elementwise: 1 where both masks are empty."""
    total = predicted + truth
    return np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))


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
    return dice_from_counts(np.logical_and(p, t).sum(-1), p.sum(-1), t.sum(-1))


def iou_pairs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-(image, class) IoU, 1 when both are empty -> (N, K)."""
    p, t = _pixels(pred, truth)
    inter = np.logical_and(p, t).sum(-1)
    union = np.logical_or(p, t).sum(-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def kaggle_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(dice_pairs(pred, truth).mean())


@dataclass
class Scorecard:
    """Scores accumulated frame by frame: Kaggle Dice, IoU, pixel accuracy and image-level
    precision/recall per class. Memory stays at a few numbers per frame."""

    class_ids: list[int]
    dice: list[np.ndarray] = field(default_factory=list)  # (K,) per frame
    iou: list[np.ndarray] = field(default_factory=list)
    predicted_any: list[np.ndarray] = field(default_factory=list)
    truth_any: list[np.ndarray] = field(default_factory=list)
    correct: int = 0
    pixels: int = 0

    def add(self, masks: np.ndarray, truth: np.ndarray) -> float:
        """Score one frame's (K, H, W) predicted masks; returns its mean Dice."""
        dice = dice_pairs(masks, truth)[0]
        self.dice.append(dice)
        self.iou.append(iou_pairs(masks, truth)[0])
        self.correct += int((masks.astype(bool) == truth.astype(bool)).sum())
        self.pixels += masks.size
        self.predicted_any.append(masks.reshape(len(self.class_ids), -1).any(1))
        self.truth_any.append(truth.reshape(len(self.class_ids), -1).any(1))
        return float(dice.mean())

    @property
    def frames(self) -> int:
        return len(self.dice)

    def summary(self) -> dict[str, object]:
        dice, iou = np.array(self.dice), np.array(self.iou)
        pred, true = np.array(self.predicted_any), np.array(self.truth_any)
        image_level = {}
        for k, class_id in enumerate(self.class_ids):
            tp = int((pred[:, k] & true[:, k]).sum())
            image_level[str(class_id)] = {
                "precision": tp / max(1, int(pred[:, k].sum())) if pred[:, k].any() else None,
                "recall": tp / max(1, int(true[:, k].sum())) if true[:, k].any() else None,
                "support": int(true[:, k].sum())}
        return {"dice": float(dice.mean()), "iou": float(iou.mean()),
                "pixel_accuracy": self.correct / max(1, self.pixels),
                "dice_per_class": {str(c): float(dice[:, k].mean())
                                   for k, c in enumerate(self.class_ids)},
                "image_level": image_level, "images": self.frames}


@dataclass
class Agreement:
    """How far two models agree on the same frames: Kaggle Dice of one's masks against
    the other's (per class, 1 when both are empty), verdict agreement, and the frames where
    a class was found by one and not the other. For comparing variants of a bundle
    (edge-eval --compare), an engine before it replaces the model it was built from, and
    a shadow model beside the serving one."""

    class_ids: list[int]
    frames: int = 0
    verdicts_same: int = 0
    # Running sums, not per-frame lists: a shadow model is compared for days.
    dice_sum: np.ndarray | None = None  # (K,) sum of per-frame Dice
    disagreements: np.ndarray | None = None  # (K,) frames where presence differed

    def add(self, masks: np.ndarray, reference: np.ndarray, verdict: str = "",
            reference_verdict: str = "") -> list[str]:
        """Count one frame; what differed on it: "verdict" and "class:<id>" for each
        class one model found and the other did not."""
        dice = dice_pairs(masks, reference)[0]
        self.dice_sum = dice if self.dice_sum is None else self.dice_sum + dice
        self.frames += 1
        self.verdicts_same += verdict == reference_verdict
        found = masks.reshape(len(self.class_ids), -1).any(1)
        expected = reference.reshape(len(self.class_ids), -1).any(1)
        differs = (found != expected).astype(int)
        self.disagreements = differs if self.disagreements is None else \
            self.disagreements + differs
        return ([] if verdict == reference_verdict else ["verdict"]) + \
            [f"class:{c}" for c, d in zip(self.class_ids, differs, strict=True) if d]

    @property
    def verdict_agreement(self) -> float:
        return self.verdicts_same / self.frames if self.frames else 0.0

    @property
    def mean_dice(self) -> float:
        return float(self.dice_sum.mean()) / self.frames if self.frames else 0.0

    def gauges(self) -> dict[str, float]:
        """The running measures as flat name -> value (Prometheus gauges)."""
        if not self.frames:
            return {}
        out = {"verdict": self.verdict_agreement, "dice": self.mean_dice}
        out.update({f"dice:{c}": float(self.dice_sum[k]) / self.frames
                    for k, c in enumerate(self.class_ids)})
        return out

    def summary(self) -> dict[str, object]:
        if not self.frames:
            return {"frames": 0}
        return {"frames": self.frames, "dice": self.mean_dice,
                "dice_per_class": {str(c): float(self.dice_sum[k]) / self.frames
                                   for k, c in enumerate(self.class_ids)},
                "verdict_agreement": self.verdict_agreement,
                "disagreements_per_class": {str(c): int(self.disagreements[k])
                                            for k, c in enumerate(self.class_ids)}}

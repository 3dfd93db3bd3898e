"""From per-class probabilities to masks, a defect list and a verdict.

As the top Severstal solutions do: a per-class pixel threshold, then a per-class minimum
total area below which the whole class mask is dropped (small false positives on clean
steel cost more than they find). Connected components then give the defect list; the
per-class rules (config.ClassRule) turn it into OK or REJECT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lineside.edge.bundle import ClassSpec
from lineside.edge.config import ClassRule

VERDICT_OK = "OK"
VERDICT_REJECT = "REJECT"
VERDICT_ERROR = "ERROR"

MAX_DEFECTS_PER_CLASS = 64  # listed in a result; counts and areas always cover all


@dataclass(frozen=True)
class Defect:
    class_id: int
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height in frame pixels
    max_probability: float
    mean_probability: float

    def to_json(self) -> dict[str, object]:
        return {"class_id": self.class_id, "area": self.area, "bbox": list(self.bbox),
                "max_probability": round(self.max_probability, 4),
                "mean_probability": round(self.mean_probability, 4)}


@dataclass(frozen=True)
class ClassSummary:
    class_id: int
    area: int  # defect pixels after thresholds and minimum area
    count: int  # connected regions
    max_probability: float

    def to_json(self) -> dict[str, float | int]:
        return {"area": self.area, "count": self.count,
                "max_probability": round(self.max_probability, 4)}


def threshold_masks(probabilities: np.ndarray, classes: list[ClassSpec]) -> np.ndarray:
    """(K, H, W) float probabilities -> (K, H, W) uint8 0/1 masks with min-area applied."""
    if probabilities.shape[0] != len(classes):
        raise ValueError(f"model gives {probabilities.shape[0]} classes, bundle lists "
                         f"{len(classes)}")
    masks = np.empty(probabilities.shape, dtype=np.uint8)
    for k, spec in enumerate(classes):
        np.greater(probabilities[k], spec.threshold, out=masks[k], casting="unsafe")
        if spec.min_area and int(masks[k].sum()) < spec.min_area:
            masks[k] = 0
    return masks


def apply_gate(masks: np.ndarray, presence: np.ndarray | None,
               classes: list[ClassSpec]) -> np.ndarray:
    """Drop a class mask when the presence gate doubts the class is there at all (the
    Severstal winners' classifier gate): fewer false positives on clean steel."""
    if presence is None:
        return masks
    for k, spec in enumerate(classes):
        if spec.gate_threshold and presence[k] < spec.gate_threshold:
            masks[k] = 0
    return masks


def find_defects(probabilities: np.ndarray, masks: np.ndarray,
                 classes: list[ClassSpec]) -> tuple[list[ClassSummary], list[Defect]]:
    """Per-class summaries and the connected regions (largest first) of every class."""
    summaries, defects = [], []
    for k, spec in enumerate(classes):
        area = int(masks[k].sum())
        found: list[Defect] = []
        if area:
            count, labels, stats, _ = cv2.connectedComponentsWithStats(masks[k], connectivity=8)
            inside = labels > 0
            ids, values = labels[inside], probabilities[k][inside]
            sums = np.bincount(ids, weights=values, minlength=count)
            peaks = np.zeros(count, np.float64)
            np.maximum.at(peaks, ids, values)
            for i in range(1, count):
                x, y, w, h, pixels = (int(v) for v in stats[i])
                found.append(Defect(spec.id, pixels, (x, y, w, h), float(peaks[i]),
                                    float(sums[i] / pixels)))
            found.sort(key=lambda d: d.area, reverse=True)
        summaries.append(ClassSummary(spec.id, area, len(found),
                                      float(probabilities[k].max())))
        defects.extend(found[:MAX_DEFECTS_PER_CLASS])
    return summaries, defects


def decide(summaries: list[ClassSummary],
           rule_for: Callable[[int], ClassRule]) -> tuple[str, list[str]]:
    """Verdict and human-readable reasons from the per-class summaries."""
    reasons = []
    for summary in summaries:
        rule = rule_for(summary.class_id)
        if rule.report_only or not summary.area:
            continue
        if summary.area > rule.max_area:
            reasons.append(f"class {summary.class_id}: area {summary.area} px > "
                           f"{rule.max_area}")
        elif rule.max_count is not None and summary.count > rule.max_count:
            reasons.append(f"class {summary.class_id}: {summary.count} regions > "
                           f"{rule.max_count}")
    return (VERDICT_REJECT if reasons else VERDICT_OK), reasons


def label_map(probabilities: np.ndarray, masks: np.ndarray,
              class_ids: list[int]) -> np.ndarray:
    """(H, W) uint8 map of class ids (0 = no defect); where classes overlap, the more
    probable one wins."""
    if not masks.any():
        return np.zeros(masks.shape[1:], np.uint8)
    scores = np.where(masks > 0, probabilities, -1.0)
    winner = scores.argmax(axis=0)
    ids = np.asarray(class_ids, np.uint8)[winner]
    return np.where(masks.any(axis=0), ids, 0).astype(np.uint8)

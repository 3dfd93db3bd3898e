"""From per-class probabilities to masks, a defect summary and a verdict.

As the top Severstal solutions do: a per-class pixel threshold, then a per-class minimum
total area below which the whole class mask is dropped (small false positives on clean
steel cost more than they find). The verdict rule is per class: reject when the class's
remaining area exceeds `max_area` pixels (0 = any defect of that class rejects).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lineside.edge.bundle import ClassSpec

VERDICT_OK = "OK"
VERDICT_REJECT = "REJECT"
VERDICT_ERROR = "ERROR"


@dataclass(frozen=True)
class ClassSummary:
    class_id: int
    area: int  # defect pixels after thresholds and minimum area
    count: int  # connected components
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


def summarise(probabilities: np.ndarray, masks: np.ndarray,
              classes: list[ClassSpec]) -> list[ClassSummary]:
    summaries = []
    for k, spec in enumerate(classes):
        area = int(masks[k].sum())
        count = 0
        if area:
            count = cv2.connectedComponents(masks[k], connectivity=8)[0] - 1
        summaries.append(ClassSummary(spec.id, area, count, float(probabilities[k].max())))
    return summaries


def decide(summaries: list[ClassSummary], max_area: dict[int, int]) -> tuple[str, list[str]]:
    """Verdict and human-readable reasons from the per-class summaries."""
    reasons = [f"class {s.class_id}: {s.area} px in {s.count} region(s) > "
               f"{max_area.get(s.class_id, 0)}"
               for s in summaries if s.area > max_area.get(s.class_id, 0)]
    return (VERDICT_REJECT if reasons else VERDICT_OK), reasons

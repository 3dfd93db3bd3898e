"""From a frame's scores to masks, a defect list and a verdict.

As the top Severstal solutions do: a per-class pixel threshold, then a per-class minimum
total area below which the whole class mask is dropped (small false positives on clean
steel cost more than they find), and the presence gate. Connected components then give
the defect list; the per-class rules (config.ClassRule) turn it into OK or REJECT.

A frame arrives as `FrameScores`, the compact form the exported graph returns (docs/
bundle.md): per class a uint8 map that is 0 where the probability is at or below the
class threshold and round(255 p) (at least 1) above it, the highest probability, and the
area above the threshold. The threshold is applied on the device, exactly, so the host
reads a quarter of the bytes of float32 probabilities and does no float work; a frame
whose areas are all zero (most frames of a line) costs no pixel work at all. Probabilities
from an older bundle (or torch) become the same form with `from_probabilities`, the same
rule in one place.
"""

from __future__ import annotations

import functools
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


def score_map(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """uint8 scores of probabilities (..., K, H, W) against thresholds (..., K): 0 at or
    below the class threshold, round(255 p) clamped to 1..255 above it. What the graph
    computes (export/score_tail.py), for outputs that come as probabilities."""
    limits = np.asarray(thresholds, np.float32)[..., None, None]
    scores = np.clip(np.rint(probabilities * 255), 1, 255).astype(np.uint8)
    scores[probabilities <= limits] = 0
    return scores


@dataclass
class FrameScores:
    """One frame's model outputs, ready for post-processing."""

    scores: np.ndarray  # (K, H, W) uint8
    maxima: np.ndarray  # (K,) float: the class's highest probability in the frame
    areas: np.ndarray  # (K,) int: pixels above the class threshold
    thresholds: np.ndarray  # (K,) float32: the class thresholds the scores were made at

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray,
                           thresholds: np.ndarray) -> FrameScores:
        scores = score_map(probabilities, thresholds)
        return cls(scores, probabilities.reshape(len(probabilities), -1).max(axis=1),
                   np.count_nonzero(scores.reshape(len(scores), -1), axis=1),
                   np.asarray(thresholds, np.float32))

    @property
    def clean(self) -> bool:
        return not self.areas.any()


def thresholds_of(classes: list[ClassSpec]) -> np.ndarray:
    return np.asarray([c.threshold for c in classes], np.float32)


def kept_classes(frame: FrameScores, presence: np.ndarray | None,
                 classes: list[ClassSpec]) -> np.ndarray:
    """(K,) bool: classes whose mask survives the minimum area and the presence gate
    (the Severstal winners' classifier gate: fewer false positives on clean steel)."""
    if len(frame.areas) != len(classes):
        raise ValueError(f"model gives {len(frame.areas)} classes, bundle lists "
                         f"{len(classes)}")
    return survives(frame.areas, np.array([c.min_area for c in classes]), presence,
                    np.array([c.gate_threshold for c in classes]))


def survives(areas: np.ndarray, min_area: np.ndarray | int,
             presence: np.ndarray | None, gate_threshold: np.ndarray | float) -> np.ndarray:
    """Elementwise: a class mask of `areas` pixels is kept when it has pixels, at least
    `min_area` of them, and (with a gate) presence at least `gate_threshold` (0: gate off).
    The one rule, for the runtime (kept_classes) and for tuning on validation counts."""
    keep = (np.asarray(areas) > 0) & (np.asarray(areas) >= min_area)
    if presence is not None:
        gate = np.asarray(gate_threshold)
        keep &= (gate <= 0) | (np.asarray(presence) >= gate)
    return keep


@functools.lru_cache(maxsize=8)
def blank_scores(classes: int, height: int, width: int) -> np.ndarray:
    """The (K, H, W) scores (and masks) of a frame with no defect: one read-only array per
    shape, shared by every clean frame (allocating 1.6 MB per frame showed in profiles)."""
    blank = np.zeros((classes, height, width), np.uint8)
    blank.flags.writeable = False
    return blank


def class_masks(frame: FrameScores, keep: np.ndarray) -> np.ndarray:
    """(K, H, W) uint8 0/1 masks of the kept classes (the shared blank when none is
    kept, without touching the scores)."""
    if not keep.any():
        return blank_scores(*frame.scores.shape)
    if keep.all():
        return np.greater(frame.scores, 0).view(np.uint8)  # one pass, no zero fill
    masks = np.zeros(frame.scores.shape, np.uint8)
    for k in np.flatnonzero(keep):
        np.greater(frame.scores[k], 0, out=masks[k], casting="unsafe")
    return masks


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
    area: int  # defect pixels after thresholds, minimum area and gate
    count: int  # connected regions
    max_probability: float

    def to_json(self) -> dict[str, float | int]:
        return {"area": self.area, "count": self.count,
                "max_probability": round(self.max_probability, 4)}


def _components(scores: np.ndarray, mask: np.ndarray, class_id: int) -> list[Defect]:
    """Connected regions of one class, largest first, with their probabilities (to 1/255)
    read inside each region's bounding box only."""
    # Labelling costs per pixel searched (about 1 ms for a whole 256x1600 strip): search
    # only the rows and columns that hold the class, usually a small part of the strip.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return []
    top, left = int(rows[0]), int(cols[0])
    window = np.s_[top:int(rows[-1]) + 1, left:int(cols[-1]) + 1]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask[window], connectivity=8)
    scores = scores[window]
    found = []
    for i in range(1, count):
        x, y, w, h, pixels = (int(v) for v in stats[i])
        box = labels[y:y + h, x:x + w] == i
        values = scores[y:y + h, x:x + w][box]
        found.append(Defect(class_id, pixels, (x + left, y + top, w, h),
                            float(values.max()) / 255,
                            float(values.sum(dtype=np.int64)) / 255 / pixels))
    found.sort(key=lambda d: d.area, reverse=True)
    return found


def find_defects(frame: FrameScores, masks: np.ndarray,
                 classes: list[ClassSpec]) -> tuple[list[ClassSummary], list[Defect]]:
    """Per-class summaries and the connected regions (largest first) of every class."""
    summaries, defects = [], []
    for k, spec in enumerate(classes):
        # A class mask is empty exactly when its area is zero or it was not kept: the
        # caller's masks come from class_masks, so a zero area means nothing to search.
        found = _components(frame.scores[k], masks[k], spec.id) if frame.areas[k] else []
        summaries.append(ClassSummary(spec.id, sum(d.area for d in found), len(found),
                                      float(frame.maxima[k])))
        defects.extend(found[:MAX_DEFECTS_PER_CLASS])
    return summaries, defects


def clean_summaries(frame: FrameScores, classes: list[ClassSpec]) -> list[ClassSummary]:
    """The summaries of a frame with no defect, from its maxima alone (the fast path)."""
    return [ClassSummary(c.id, 0, 0, float(frame.maxima[k])) for k, c in enumerate(classes)]


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


def label_map(scores: np.ndarray, masks: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """(H, W) uint8 map of class ids (0 = no defect); where classes overlap, the more
    probable one wins."""
    if not masks.any():
        return np.zeros(masks.shape[1:], np.uint8)
    ranked = np.where(masks > 0, scores.astype(np.int16), -1)
    winner = ranked.argmax(axis=0)
    ids = np.asarray(class_ids, np.uint8)[winner]
    return np.where(masks.any(axis=0), ids, 0).astype(np.uint8)


def frame_masks(frame: FrameScores, presence: np.ndarray | None,
                classes: list[ClassSpec]) -> np.ndarray:
    """(K, H, W) masks of one frame after threshold, minimum area and gate."""
    return class_masks(frame, kept_classes(frame, presence, classes))


def masks_of(probabilities: np.ndarray, presence: np.ndarray | None,
             classes: list[ClassSpec]) -> np.ndarray:
    """`frame_masks` of one frame's probabilities: for offline scoring (training)."""
    frame = FrameScores.from_probabilities(probabilities, thresholds_of(classes))
    return frame_masks(frame, presence, classes)

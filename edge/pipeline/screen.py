"""Screen stage: a screening classifier decides which tiles (and classes) get segmented.

Most tiles of a steel strip are clean (on Severstal about half the frames hold no defect
at all, and a defect rarely spans a whole 1600-pixel strip). A small classifier answers
"which classes are in this tile" for every tile; only tiles where some class scores at or
above its screening threshold are segmented, and only the flagged classes keep their
probabilities there (pipeline/infer.py). The 2019 Severstal winners used the same
classifier gate for accuracy (fewer false positives on clean steel); here it also saves
most of the work. The classifier is its own bundle on its own backend
(pipeline.model.Screen), a step of the pipeline, not a model hidden inside another.
"""

from __future__ import annotations

import numpy as np

from lineside.edge.backends.base import PRESENCE, infer_in_batches
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.batch import Batch
from lineside.edge.pipeline.model import Screen


def tiles_to_segment(flags: np.ndarray) -> np.ndarray:
    """(N,) bool from (N, K) per-class flags: a tile is segmented when any class is
    flagged. The one rule, for the infer stage, the metrics and score_screen."""
    return flags.any(axis=1)


def screen_tiles(screen: Screen, tiles: np.ndarray,
                 max_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) classifier scores and (N, K) bool: class flagged in tile."""
    scores = infer_in_batches(screen.backend, tiles, max_batch)[PRESENCE]
    if scores.ndim != 2 or scores.shape[1] != len(screen.thresholds):
        raise RuntimeError(f"screening classifier gives scores of shape {scores.shape}, "
                           f"expected (N, {len(screen.thresholds)})")
    return scores, scores >= screen.thresholds


class ScreenStage:
    name = "screen"

    def __init__(self, max_batch: int, counters: DaemonCounters | None = None) -> None:
        self.max_batch = max_batch
        self.counters = counters
        self.tiles = 0  # seen and segmented since start, for reports
        self.segmented = 0

    @property
    def segmented_share(self) -> float:
        return self.segmented / self.tiles if self.tiles else 1.0

    def process(self, batch: Batch) -> Batch:
        """Score the batch's tiles when its model has a screen (else leave it alone)."""
        screen = batch.model.screen
        if screen is None:
            return batch
        batch.screen_scores, batch.flags = screen_tiles(screen, batch.tiles, self.max_batch)
        segmented = int(tiles_to_segment(batch.flags).sum())
        self.tiles += len(batch.tiles)
        self.segmented += segmented
        if self.counters is not None:
            self.counters.screened(segmented, len(batch.tiles) - segmented)
        return batch

"""Infer stage: the segmentation model on a batch's tiles (only the flagged ones behind a
screen), then one `InferredFrame` per frame for the decide stage.

`infer_tiles` / `run_model` run screen and infer outside the daemon with the same
functions, for edge-eval, the INT8 accuracy gate and edge-bench: offline numbers are the
line's numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lineside.edge.backends.base import (
    AREAS,
    MAXIMA,
    PRESENCE,
    PROBABILITIES,
    SCORES,
    Backend,
    Outputs,
    infer_in_batches,
)
from lineside.edge.config import CameraSettings
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.batch import Batch
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.pipeline.screen import ScreenStage, screen_tiles, tiles_to_segment
from lineside.edge.postprocess import FrameScores, blank_scores, score_map
from lineside.edge.protocol import Frame
from lineside.edge.tiling import TileGrid, cut, make_grid, stitch

log = logging.getLogger("lineside.edge.pipeline")


def scored(outputs: Outputs, thresholds: np.ndarray) -> Outputs:
    """Tile outputs in the scored form (scores, maxima, areas; presence kept) whichever
    form the graph returns: a bundle's graph scores on the device (export/score_tail.py),
    an older bundle's probabilities (or torch's) are scored here by the same rule."""
    if SCORES in outputs:
        return outputs
    probabilities = outputs[PROBABILITIES]
    above = probabilities > np.asarray(thresholds, np.float32)[:, :, None, None]
    areas = np.count_nonzero(above, axis=(2, 3))
    scores = np.zeros(probabilities.shape, np.uint8)
    for n in np.flatnonzero(areas.any(axis=1)):  # clean tiles need no scores at all
        scores[n] = score_map(probabilities[n], thresholds[n])
    converted = {SCORES: scores, MAXIMA: probabilities.max(axis=(2, 3)), AREAS: areas}
    if PRESENCE in outputs:
        converted[PRESENCE] = outputs[PRESENCE]
    return converted


def segment_tiles(backend: Backend, tiles: np.ndarray, thresholds: np.ndarray,
                  flags: np.ndarray | None, max_batch: int) -> Outputs:
    """The model's scored outputs for `tiles` at per-tile `thresholds` (N, K); with screen
    `flags` (N, K), only flagged tiles are segmented, and a class keeps its scores only in
    tiles that flag it (zeros elsewhere: a clean tile). The model's own presence output
    is dropped then: behind a screen, the screen is the gate."""
    if flags is None:
        return scored(infer_in_batches(backend, tiles, max_batch, thresholds), thresholds)
    keep = tiles_to_segment(flags)
    (count, classes), (height, width) = flags.shape, tiles.shape[2:]
    out = {SCORES: np.zeros((count, classes, height, width), np.uint8),
           MAXIMA: np.zeros((count, classes), np.float32),
           AREAS: np.zeros((count, classes), np.int64)}
    if keep.any():
        limits = np.ascontiguousarray(thresholds[keep])
        segmented = scored(infer_in_batches(backend, np.ascontiguousarray(tiles[keep]),
                                            max_batch, limits), limits)
        flagged = flags[keep]
        out[SCORES][keep] = segmented[SCORES] * flagged[:, :, None, None]
        out[MAXIMA][keep] = segmented[MAXIMA] * flagged
        out[AREAS][keep] = segmented[AREAS] * flagged
    return out


def frame_scores(outputs: Outputs, thresholds: np.ndarray, grid: TileGrid,
                 start: int) -> FrameScores:
    """One frame's FrameScores from its tiles' scored outputs (tiles start..start+count).

    A frame whose tiles have no pixel above any threshold (most frames of a line) is
    recognised from the tiles' areas alone: no stitching, no pixel work. Otherwise the
    uint8 scores are stitched and the areas counted on the stitched frame (the tiles'
    areas count their overlaps twice). The maxima are the tiles' (overlaps included)."""
    stop = start + grid.count
    used = thresholds[start]  # a frame's tiles share its camera's thresholds
    maxima = outputs[MAXIMA][start:stop].max(axis=0).astype(np.float32)
    tile_areas = outputs[AREAS][start:stop]
    classes = tile_areas.shape[1]
    if not tile_areas.any():
        blank = blank_scores(classes, grid.frame_height, grid.frame_width)
        return FrameScores(blank, maxima, np.zeros(classes, np.int64), used)
    if grid.count == 1 and grid.padded_shape == (grid.frame_height, grid.frame_width):
        # One tile that is the frame (whole-strip inference): its scores and areas are
        # the frame's as they are, no copy and no count.
        return FrameScores(outputs[SCORES][start], maxima, tile_areas[0].astype(np.int64),
                           used)
    scores = stitch(outputs[SCORES][start:stop], grid)
    return FrameScores(scores, maxima, np.count_nonzero(scores.reshape(classes, -1), axis=1),
                       used)


@dataclass
class InferredFrame:
    frame: Frame
    grid: TileGrid
    model: LoadedModel
    scores: FrameScores | None  # None when inference failed
    presence: np.ndarray | None = None  # (K,) frame presence (max over tiles), gated models
    screen_scores: np.ndarray | None = None  # (K,) the screen's scores, max over tiles
    error: str = ""
    infer_ms: float = 0.0

    @property
    def gate(self) -> np.ndarray | None:
        """What gates the classes: the screen when there is one, else the model's own
        presence head (LoadedModel.classes_for gives the matching thresholds)."""
        return self.screen_scores if self.screen_scores is not None else self.presence


def _frame_max(values: np.ndarray | None, start: int, count: int) -> np.ndarray | None:
    return None if values is None else values[start:start + count].max(axis=0)


def split_frames(batch: Batch) -> list[InferredFrame]:
    """One InferredFrame per frame of an inferred (or failed) batch."""
    out, offset = [], 0
    inferred = SCORES in batch.outputs
    for frame, grid in zip(batch.frames, batch.grids, strict=True):
        out.append(InferredFrame(
            frame, grid, batch.model,
            frame_scores(batch.outputs, batch.thresholds, grid, offset) if inferred else None,
            _frame_max(batch.outputs.get(PRESENCE), offset, grid.count),
            _frame_max(batch.screen_scores, offset, grid.count),
            batch.error, batch.infer_s * 1000))
        offset += grid.count
    return out


class InferStage:
    name = "infer"

    def __init__(self, max_batch: int, counters: DaemonCounters | None = None) -> None:
        self.max_batch = max_batch
        self.counters = counters

    def process(self, batch: Batch) -> Batch:
        model = batch.model
        batch.outputs = segment_tiles(model.backend, batch.tiles, batch.thresholds, batch.flags,
                                      self.max_batch)
        return batch


class ModelStages:
    """Screen then infer on one worker thread (both are compute on the same device; on a
    small CPU two sessions at once only fight for its cores). A failure in either gives
    the batch's frames the fail-safe verdict; the pipeline goes on.

    After a hot swap, the old model is closed here, on the thread that ran it, once the
    first batch for the new one arrives: batches come in order, so no later batch needs
    it (GPU runtimes free device memory, engines and streams only from a thread that can
    make their context current)."""

    def __init__(self, max_batch: int, counters: DaemonCounters | None = None,
                 retained: Callable[[LoadedModel], bool] | None = None) -> None:
        self.screen = ScreenStage(max_batch, counters)
        self.infer = InferStage(max_batch, counters)
        self.counters = counters
        # Whether a model that no longer serves must stay loaded (kept for a rollback).
        self.retained = retained or (lambda model: False)
        self.last_model: LoadedModel | None = None
        self._retired: list[LoadedModel] = []
        self.closed = 0  # models closed after a swap

    def _retire(self, model: LoadedModel) -> None:
        previous, self.last_model = self.last_model, model
        if previous is not None and previous is not model and \
                all(m is not previous for m in self._retired):
            self._retired.append(previous)
        self._retired = [m for m in self._retired if m is not model]  # serving again
        for old in [m for m in self._retired if not self.retained(m)]:
            self._retired.remove(old)
            try:
                old.close()
                self.closed += 1
                log.info("closed the swapped-out model %s", old.bundle.root)
            except Exception:  # a failing close must not fail the new model's batch
                log.exception("closing the swapped-out model %s failed", old.bundle.root)

    def run(self, batch: Batch) -> list[InferredFrame]:
        self._retire(batch.model)
        began = time.perf_counter()
        try:
            self.infer.process(self.screen.process(batch))
        except Exception as exc:  # the frames get ERROR verdicts; the daemon goes on
            log.exception("inference failed for %d frame(s)", len(batch.frames))
            batch.outputs, batch.screen_scores = {}, None
            batch.error = f"inference failed: {type(exc).__name__}: {exc}"
            if self.counters is not None:
                self.counters.infer_failure()
        batch.infer_s = time.perf_counter() - began
        if self.counters is not None:
            self.counters.stage_time("infer", batch.infer_s)
            self.counters.batch_tiles.observe(len(batch.tiles))
        return split_frames(batch)


@dataclass
class TileOutputs:
    """Tiles through screen and model, outside the daemon."""

    outputs: Outputs  # scored: SCORES (N, K, th, tw), MAXIMA, AREAS; PRESENCE when gated
    gate: np.ndarray | None  # (N, K) screen scores, or the model's presence
    segmented: int  # tiles that reached the segmentation model
    thresholds: np.ndarray  # (N, K) the tiles were scored at


def default_thresholds(model: LoadedModel, count: int) -> np.ndarray:
    """(count, K) thresholds: the bundle's, for every tile."""
    limits = model.thresholds_for(CameraSettings())
    return np.ascontiguousarray(np.broadcast_to(limits, (count, len(limits))))


def infer_tiles(model: LoadedModel, tiles: np.ndarray, max_batch: int = 8,
                thresholds: np.ndarray | None = None) -> TileOutputs:
    """Screen (when the model has one) and segment `tiles` as the daemon's stages do, at
    per-class `thresholds` (K,) (None: the bundle's)."""
    limits = default_thresholds(model, len(tiles)) if thresholds is None else \
        np.ascontiguousarray(np.broadcast_to(np.asarray(thresholds, np.float32),
                                             (len(tiles), len(thresholds))))
    scores = flags = None
    if model.screen is not None:
        scores, flags = screen_tiles(model.screen, tiles, max_batch)
    outputs = segment_tiles(model.backend, tiles, limits, flags, max_batch)
    return TileOutputs(outputs, scores if scores is not None else outputs.get(PRESENCE),
                       len(tiles) if flags is None else int(tiles_to_segment(flags).sum()),
                       limits)


@dataclass
class FrameOutputs:
    """One frame through the model offline: its scores and the gate."""

    scores: FrameScores
    gate: np.ndarray | None  # (K,) screen scores or model presence, max over tiles
    tiles: int
    segmented: int  # tiles that reached the segmentation model


def run_model(model: LoadedModel, gray: np.ndarray, max_batch: int = 8,
              thresholds: np.ndarray | None = None) -> FrameOutputs:
    """A frame's scores at `thresholds` (K,) (None: the bundle's) and its gate, exactly as
    the daemon computes them."""
    grid = make_grid(gray.shape, model.tile_shape)
    out = infer_tiles(model, cut(gray, grid, model.bundle.manifest.in_channels), max_batch,
                      thresholds)
    return FrameOutputs(frame_scores(out.outputs, out.thresholds, grid, 0),
                        None if out.gate is None else out.gate.max(axis=0), grid.count,
                        out.segmented)

"""Infer stage: the segmentation model on a batch's tiles (only the flagged ones behind a
screen), then one `InferredFrame` per frame for the decide stage.

`infer_tiles` / `run_model` run screen and infer outside the daemon with the same
functions, for edge-eval, the INT8 accuracy gate and edge-bench: offline numbers are the
line's numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from lineside.edge.backends.base import PRESENCE, PROBABILITIES, Backend, infer_in_batches
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.batch import Batch
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.pipeline.screen import ScreenStage, screen_tiles, tiles_to_segment
from lineside.edge.protocol import Frame
from lineside.edge.tiling import TileGrid, cut, make_grid, stitch

log = logging.getLogger("lineside.edge.pipeline")


def segment_tiles(backend: Backend, tiles: np.ndarray, flags: np.ndarray | None,
                  max_batch: int) -> dict[str, np.ndarray]:
    """The model's outputs for `tiles`; with screen `flags` (N, K), only flagged tiles are
    segmented, and a class keeps its probabilities only in tiles that flag it (zeros
    elsewhere: a clean tile). The model's own presence output is dropped then: behind a
    screen, the screen is the gate."""
    if flags is None:
        return infer_in_batches(backend, tiles, max_batch)
    keep = tiles_to_segment(flags)
    height, width = tiles.shape[2:]
    probabilities = np.zeros((len(tiles), flags.shape[1], height, width), np.float32)
    if keep.any():
        segmented = infer_in_batches(backend, np.ascontiguousarray(tiles[keep]),
                                     max_batch)[PROBABILITIES]
        probabilities[keep] = segmented * flags[keep][:, :, None, None]
    return {PROBABILITIES: probabilities}


@dataclass
class InferredFrame:
    frame: Frame
    grid: TileGrid
    model: LoadedModel
    tiles_out: np.ndarray | None  # (n, K, th, tw) probabilities; None when inference failed
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
    probabilities = batch.outputs.get(PROBABILITIES)
    for frame, grid in zip(batch.frames, batch.grids, strict=True):
        part = None if probabilities is None else probabilities[offset:offset + grid.count]
        out.append(InferredFrame(
            frame, grid, batch.model, part,
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
        batch.outputs = segment_tiles(model.backend, batch.tiles, batch.flags, self.max_batch)
        return batch


class ModelStages:
    """Screen then infer on one worker thread (both are compute on the same device; on a
    small CPU two sessions at once only fight for its cores). A failure in either gives
    the batch's frames the fail-safe verdict; the pipeline goes on.

    After a hot swap, the old model is closed here, on the thread that ran it, once the
    first batch for the new one arrives: batches come in order, so no later batch needs
    it (GPU runtimes free device memory, engines and streams only from a thread that can
    make their context current)."""

    def __init__(self, max_batch: int, counters: DaemonCounters | None = None) -> None:
        self.screen = ScreenStage(max_batch, counters)
        self.infer = InferStage(max_batch, counters)
        self.counters = counters
        self.last_model: LoadedModel | None = None
        self.closed = 0  # models closed after a swap

    def _retire(self, model: LoadedModel) -> None:
        previous, self.last_model = self.last_model, model
        if previous is not None and previous is not model:
            try:
                previous.close()
                self.closed += 1
                log.info("closed the swapped-out model %s", previous.bundle.root)
            except Exception:  # a failing close must not fail the new model's batch
                log.exception("closing the swapped-out model %s failed", previous.bundle.root)

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

    outputs: dict[str, np.ndarray]  # PROBABILITIES (N, K, th, tw), PRESENCE when gated
    gate: np.ndarray | None  # (N, K) screen scores, or the model's presence
    segmented: int  # tiles that reached the segmentation model


def infer_tiles(model: LoadedModel, tiles: np.ndarray, max_batch: int = 8) -> TileOutputs:
    """Screen (when the model has one) and segment `tiles` as the daemon's stages do."""
    scores = flags = None
    if model.screen is not None:
        scores, flags = screen_tiles(model.screen, tiles, max_batch)
    outputs = segment_tiles(model.backend, tiles, flags, max_batch)
    return TileOutputs(outputs, scores if scores is not None else outputs.get(PRESENCE),
                       len(tiles) if flags is None else int(tiles_to_segment(flags).sum()))


@dataclass
class FrameOutputs:
    """One frame through the model offline: stitched probabilities and the gate."""

    probabilities: np.ndarray  # (K, H, W)
    gate: np.ndarray | None  # (K,) screen scores or model presence, max over tiles
    tiles: int
    segmented: int  # tiles that reached the segmentation model


def run_model(model: LoadedModel, gray: np.ndarray, max_batch: int = 8) -> FrameOutputs:
    """(K, H, W) probabilities and the frame's gate, exactly as the daemon computes them."""
    grid = make_grid(gray.shape, model.tile_shape)
    out = infer_tiles(model, cut(gray, grid, model.bundle.manifest.in_channels), max_batch)
    return FrameOutputs(stitch(out.outputs[PROBABILITIES], grid),
                        None if out.gate is None else out.gate.max(axis=0), grid.count,
                        out.segmented)

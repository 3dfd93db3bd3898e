"""Batch stage: frames from the per-camera queues into one batch of model-sized tiles.

Dynamic batching across frames and cameras: the batcher takes frames round-robin from the
camera queues until their tiles fill `max_batch`, or `max_wait_ms` passes, or the model is
idle (an idle model never waits for a batch to fill: FrameQueues.take),
reads the model in service once per batch (a hot swap lands between batches), and cuts
every frame into tiles exactly as export, evaluation and calibration do (tiling.cut).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lineside.edge.backends.base import Outputs
from lineside.edge.config import CameraSettings
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.frame_queues import FrameQueues
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.protocol import Frame
from lineside.edge.tiling import TileGrid, cut, make_grid


@dataclass
class Batch:
    """Frames and their tiles on the way through screen and infer."""

    frames: list[Frame]
    grids: list[TileGrid]
    tiles: np.ndarray  # (N, C, th, tw) uint8, the frames' tiles in order
    model: LoadedModel
    formed_ns: int
    thresholds: np.ndarray  # (N, K) float32: each tile's class thresholds (its camera's)
    # Filled by the screen stage (models behind a screening classifier):
    screen_scores: np.ndarray | None = None  # (N, K) classifier scores
    flags: np.ndarray | None = None  # (N, K) bool: class flagged in tile
    # Filled by the infer stage:
    outputs: Outputs = field(default_factory=dict)
    error: str = ""  # why inference failed ("" = it did not)
    infer_s: float = 0.0


class TileGrids:
    """Tile grids by (frame shape, tile shape): computed once per shape."""

    def __init__(self) -> None:
        self._grids: dict[tuple[tuple[int, int], tuple[int, int]], TileGrid] = {}

    def __call__(self, shape: tuple[int, int], tile: tuple[int, int]) -> TileGrid:
        grid = self._grids.get((shape, tile))
        if grid is None:
            grid = self._grids[(shape, tile)] = make_grid(shape, tile)
        return grid


class BatchStage:
    name = "batch"

    def __init__(self, queues: FrameQueues[Frame], max_batch: int, max_wait_ms: float,
                 counters: DaemonCounters,
                 seen: Callable[[np.ndarray], None] | None = None,
                 camera_for: Callable[[str], CameraSettings] | None = None,
                 busy: Callable[[], bool] | None = None) -> None:
        self.queues = queues
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.counters = counters
        self.grid_for = TileGrids()
        self.seen = seen  # each frame's pixels (the recent frames a candidate is checked on)
        # A camera's settings (its threshold overrides); the defaults when not given.
        self.camera_for = camera_for or (lambda _camera: CameraSettings())
        # Is the model still busy with earlier batches? A partial batch waits for more
        # frames only while it is (FrameQueues.take); without it, always max_wait_ms.
        self.busy = busy

    def form(self, frames: list[Frame], model: LoadedModel) -> Batch:
        """One batch of `frames`' tiles for `model`."""
        began = time.perf_counter()
        if self.seen is not None:
            for frame in frames:
                self.seen(frame.pixels)
        grids = [self.grid_for(f.pixels.shape, model.tile_shape) for f in frames]
        channels = model.bundle.manifest.in_channels
        total = sum(g.count for g in grids)
        tiles = np.empty((total, channels, *model.tile_shape), np.uint8)
        thresholds = np.empty((total, len(model.bundle.manifest.classes)), np.float32)
        start = 0
        for frame, grid in zip(frames, grids, strict=True):
            stop = start + grid.count
            cut(frame.pixels, grid, channels, out=tiles[start:stop])
            thresholds[start:stop] = model.thresholds_for(
                self.camera_for(frame.header.camera_id))
            start = stop
        self.counters.stage_time("tile", time.perf_counter() - began)
        return Batch(frames, grids, tiles, model, time.time_ns(), thresholds)

    def next(self, model: LoadedModel, idle: Callable[[], None] | None = None) -> Batch | None:
        """The next batch for `model` (waits for frames, calling `idle` meanwhile); None
        once the queues closed."""
        frames = self.queues.take(
            cost=lambda f: self.grid_for(f.pixels.shape, model.tile_shape).count,
            budget=self.max_batch, max_wait_s=self.max_wait_s, idle=idle, busy=self.busy)
        return None if frames is None else self.form(frames, model)

"""Side-by-side speed measurements of a bundle's models on this machine.

Stage 1 (bare backend): the inference session alone on pre-tiled batches, the upper bound
for everything else. Precisions are measured in alternating rounds in one process and the
median round is reported, so machine noise hits all of them alike; compare the ratios,
not the absolute numbers, on a shared machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from lineside.edge.backends import create_backend
from lineside.edge.bundle import Bundle
from lineside.edge.tiling import cut, make_grid


@dataclass
class BareResult:
    precision: str
    batch_tiles: int
    tiles_per_s: float
    frames_per_s: float
    batch_latency_ms: float  # median time of one inference call
    tiles_per_frame: int


def frame_tiles(bundle: Bundle, frames: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Tiles of `frames` synthetic strips at the bundle's frame size, cut as the daemon cuts."""
    manifest = bundle.manifest
    rng = np.random.default_rng(seed)
    grid = make_grid((manifest.frame_height, manifest.frame_width),
                     (manifest.tile_height, manifest.tile_width))
    strips = rng.integers(60, 140, (frames, manifest.frame_height, manifest.frame_width),
                          dtype=np.uint8)
    tiles = np.concatenate([cut(s, grid, manifest.in_channels) for s in strips])
    return tiles, grid.count


def bench_bare(bundle: Bundle, precisions: list[str], batch_tiles: int, frames: int = 8,
               rounds: int = 5, backend: str = "ort-cpu", threads: int = 0) -> list[BareResult]:
    tiles, per_frame = frame_tiles(bundle, frames)
    backends = {p: create_backend(backend, bundle, p, threads) for p in precisions}
    for b in backends.values():  # warm-up: first calls allocate and pick kernels
        b.infer(np.ascontiguousarray(tiles[:batch_tiles]))
    per_round: dict[str, list[float]] = {p: [] for p in precisions}
    calls: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(rounds):
        for precision, b in backends.items():
            began = time.perf_counter()
            for i in range(0, len(tiles), batch_tiles):
                call = time.perf_counter()
                b.infer(np.ascontiguousarray(tiles[i:i + batch_tiles]))
                calls[precision].append(time.perf_counter() - call)
            per_round[precision].append(time.perf_counter() - began)
    results = []
    for precision in precisions:
        seconds = statistics.median(per_round[precision])
        results.append(BareResult(precision, batch_tiles, len(tiles) / seconds,
                                  frames / seconds,
                                  statistics.median(calls[precision]) * 1000, per_frame))
    return results


def as_rows(results: list[BareResult]) -> list[dict]:
    return [asdict(r) for r in results]

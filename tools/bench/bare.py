"""Stage 1 of edge-bench: the model alone (screen + segmentation) on pre-cut tiles.

Variants (precisions, with or without a screening classifier) are measured in
alternating rounds in one process and the median round is reported, so machine noise hits
all of them alike; compare the ratios, not the absolute numbers, on a shared machine.
With a screening classifier the frames matter: the work saved is the share of clean
tiles, so benchmark on frames that look like the line's (`--images`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend
from lineside.edge.bundle import Bundle
from lineside.edge.config import ModelSettings
from lineside.edge.pipeline.infer import infer_tiles
from lineside.edge.pipeline.model import LoadedModel, compose_model
from lineside.edge.tiling import cut, make_grid
from lineside.edge.variants import onnx_for


@dataclass(frozen=True)
class BenchVariant:
    """One configuration under test: a precision (or an ONNX variant key such as
    `int8-trt`, run as it is), optionally behind a screen."""

    precision: str
    screen: str = ""  # screening classifier bundle directory ("" = none)

    @property
    def label(self) -> str:
        return f"{self.precision}+screen" if self.screen else self.precision

    def settings(self, base: ModelSettings) -> ModelSettings:
        return replace(base, precision=self.precision, screen=self.screen)


@dataclass
class BareResult:
    precision: str  # the variant's label, e.g. "int8" or "int8+screen"
    batch_tiles: int
    tiles_per_s: float
    frames_per_s: float
    batch_latency_ms: float  # median time of one inference call
    tiles_per_frame: int
    segmented_share: float = 1.0  # tiles that reached the segmentation model
    # With a screen a call's cost depends on how many tiles it flags: the slow calls are
    # the frames with defects, which the daemon's p99 is made of.
    batch_latency_p99_ms: float = 0.0


def frame_tiles(bundle: Bundle, strips: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Tiles of the strips, cut as the daemon cuts them, and tiles per frame."""
    manifest = bundle.manifest
    grid = make_grid(strips[0].shape, (manifest.tile_height, manifest.tile_width))
    tiles = np.concatenate([cut(s, grid, manifest.in_channels) for s in strips])
    return tiles, grid.count


def bench_bare(bundle: Bundle, variants: list[BenchVariant], base: ModelSettings,
               strips: list[np.ndarray], rounds: int = 5) -> list[BareResult]:
    tiles, per_frame = frame_tiles(bundle, strips)
    batch = base.max_batch
    models: dict[BenchVariant, LoadedModel] = {
        v: compose_model(bundle, v.settings(base)) for v in variants}
    for model in models.values():  # warm-up as the daemon does: every batch shape it uses
        for backend in [model.backend] + ([model.screen.backend] if model.screen else []):
            backend.warm_up(tiles.shape[1:], batch)
        infer_tiles(model, np.ascontiguousarray(tiles[:batch]), batch)
    per_round: dict[BenchVariant, list[float]] = {v: [] for v in variants}
    calls: dict[BenchVariant, list[float]] = {v: [] for v in variants}
    segmented: dict[BenchVariant, int] = dict.fromkeys(variants, 0)
    for _ in range(rounds):
        for variant, model in models.items():
            began = time.perf_counter()
            for i in range(0, len(tiles), batch):
                call = time.perf_counter()
                out = infer_tiles(model, np.ascontiguousarray(tiles[i:i + batch]), batch)
                calls[variant].append(time.perf_counter() - call)
                segmented[variant] += out.segmented
            per_round[variant].append(time.perf_counter() - began)
    results = []
    for variant in variants:
        seconds = statistics.median(per_round[variant])
        results.append(BareResult(variant.label, batch, len(tiles) / seconds,
                                  len(strips) / seconds,
                                  statistics.median(calls[variant]) * 1000, per_frame,
                                  segmented[variant] / (rounds * len(tiles)),
                                  float(np.percentile(calls[variant], 99)) * 1000))
    for model in models.values():
        model.close()
    return results


def as_rows(results: list[BareResult]) -> list[dict]:
    return [asdict(r) for r in results]


def ort_op_profile(bundle: Bundle, precision: str, tiles: np.ndarray, runs: int = 3,
                   threads: int = 0) -> dict[str, float]:
    """Share of ONNX Runtime CPU kernel time per operator type (ORT's own profiler), over
    `runs` calls on `tiles`: which layers the time goes to inside the model."""
    return onnx_op_profile(bundle.model_path(onnx_for(precision, "cpu").key), tiles,
                           bundle.manifest.graph_thresholds, runs, threads)


def onnx_op_profile(model_path: Path, tiles: np.ndarray, thresholds: list[float] | None,
                    runs: int = 3, threads: int = 0) -> dict[str, float]:
    """`ort_op_profile` for one ONNX file."""
    import json
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        backend = OnnxRuntimeBackend(model_path, "ort-cpu", threads, thresholds=thresholds,
                                     profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(runs):
            backend.infer(tiles)
        events = json.loads(Path(backend.session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(event.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return {op: round(us / total, 4) for op, us in
            sorted(per_op.items(), key=lambda item: item[1], reverse=True)}

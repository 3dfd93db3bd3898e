"""Side-by-side speed measurements of a bundle's models on this machine.

Stage 1 (bare backend): the inference session alone on pre-tiled batches, the upper bound
for everything else. Variants (precisions, with or without a screening classifier) are
measured in alternating rounds in one process and the median round is reported, so
machine noise hits all of them alike; compare the ratios, not the absolute numbers, on a
shared machine.

Frames come from a folder of real or generated strips (`--images`) or, without one, from
uniform noise. With a screening classifier the frames matter: the work saved is the share
of clean tiles, so benchmark on frames that look like the line's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from lineside.edge.backends import Backend, create_backend
from lineside.edge.bundle import Bundle
from lineside.edge.tiling import cut, make_grid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class Variant:
    """One configuration under test: a precision, optionally behind a screen."""

    precision: str
    screen: str = ""  # screening classifier bundle directory ("" = none)

    @property
    def label(self) -> str:
        return f"{self.precision}+screen" if self.screen else self.precision


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


def load_strips(bundle: Bundle, images: str | Path | None, count: int,
                seed: int = 0) -> list[np.ndarray]:
    """`count` grey frames of the bundle's frame size: the first images of a folder (its
    `train_images/` for a Severstal-layout folder), or uniform noise without one."""
    manifest = bundle.manifest
    shape = (manifest.frame_height, manifest.frame_width)
    if not images:
        rng = np.random.default_rng(seed)
        return [rng.integers(60, 140, shape, dtype=np.uint8) for _ in range(count)]
    folder = Path(images)
    if (folder / "train_images").is_dir():
        folder = folder / "train_images"
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    strips = []
    for path in paths[:count]:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None or gray.shape != shape:
            raise ValueError(f"{path} is {None if gray is None else gray.shape}, the bundle "
                             f"takes {shape[0]}x{shape[1]} frames")
        strips.append(gray)
    return strips


def frame_tiles(bundle: Bundle, strips: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Tiles of the strips, cut as the daemon cuts them, and tiles per frame."""
    manifest = bundle.manifest
    grid = make_grid(strips[0].shape, (manifest.tile_height, manifest.tile_width))
    tiles = np.concatenate([cut(s, grid, manifest.in_channels) for s in strips])
    return tiles, grid.count


def create_variant(bundle: Bundle, variant: Variant, backend: str, threads: int = 0,
                   screen_thresholds: dict[int, float] | None = None) -> Backend:
    segment = create_backend(backend, bundle, variant.precision, threads)
    if not variant.screen:
        return segment
    from lineside.edge.backends.screened import create_screened_backend

    return create_screened_backend(variant.screen, bundle, segment, backend,
                                   variant.precision, threads, screen_thresholds)


def bench_bare(bundle: Bundle, variants: list[Variant], batch_tiles: int,
               strips: list[np.ndarray], rounds: int = 5, backend: str = "ort-cpu",
               threads: int = 0, screen_thresholds: dict[int, float] | None = None
               ) -> list[BareResult]:
    tiles, per_frame = frame_tiles(bundle, strips)
    backends = {v: create_variant(bundle, v, backend, threads, screen_thresholds)
                for v in variants}
    for b in backends.values():  # warm-up as the daemon does: every batch shape it will use
        b.warm_up(tiles.shape[1:], batch_tiles)
        b.infer(np.ascontiguousarray(tiles[:batch_tiles]))
    per_round: dict[Variant, list[float]] = {v: [] for v in variants}
    calls: dict[Variant, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant, b in backends.items():
            began = time.perf_counter()
            for i in range(0, len(tiles), batch_tiles):
                call = time.perf_counter()
                b.infer(np.ascontiguousarray(tiles[i:i + batch_tiles]))
                calls[variant].append(time.perf_counter() - call)
            per_round[variant].append(time.perf_counter() - began)
    results = []
    for variant in variants:
        seconds = statistics.median(per_round[variant])
        counts = getattr(backends[variant], "counts", None)
        results.append(BareResult(variant.label, batch_tiles, len(tiles) / seconds,
                                  len(strips) / seconds,
                                  statistics.median(calls[variant]) * 1000, per_frame,
                                  counts.segmented_share if counts else 1.0,
                                  float(np.percentile(calls[variant], 99)) * 1000))
    for b in backends.values():
        b.close()
    return results


def as_rows(results: list[BareResult]) -> list[dict]:
    return [asdict(r) for r in results]


def ort_op_profile(bundle: Bundle, precision: str, tiles: np.ndarray, runs: int = 3,
                   threads: int = 0) -> dict[str, float]:
    """Share of ONNX Runtime CPU kernel time per operator type (ORT's own profiler), over
    `runs` calls on `tiles`: which layers the time goes to inside the model."""
    import json
    import os
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(bundle.model_path(precision)), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: tiles})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(event.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    return {op: round(us / total, 4) for op, us in
            sorted(per_op.items(), key=lambda item: item[1], reverse=True)}

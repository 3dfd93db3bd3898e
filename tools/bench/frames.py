"""Frames for benchmarks: a folder's images, in any layout edge.labels reads, or noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineside.edge.bundle import Manifest
from lineside.edge.labels import open_dataset


def load_strips(manifest: Manifest, images: str | Path | None, count: int,
                seed: int = 0) -> list[np.ndarray]:
    """`count` grey frames of the bundle's frame size: the first images of a folder, or
    uniform noise without one. Frames of another size are an error that names the file."""
    shape = (manifest.frame_height, manifest.frame_width)
    if not images:
        rng = np.random.default_rng(seed)
        return [rng.integers(60, 140, shape, dtype=np.uint8) for _ in range(count)]
    strips = []
    for sample in open_dataset(images).samples[:count]:
        gray = sample.image()
        if gray.shape != shape:
            raise ValueError(f"{sample.image_path} is {gray.shape}, the bundle takes "
                             f"{shape[0]}x{shape[1]} frames")
        strips.append(gray)
    return strips

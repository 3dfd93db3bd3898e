"""Stage 3 of edge-bench, the seeds' way: torch eager FP32, one frame at a time, its tiles
as one float32 batch (what the notebooks do). It needs torch (`lineside[train]`), which a
line PC does not install: edge-bench imports this module only for `--stages baseline`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from lineside.edge.bundle import Bundle
from lineside.edge.tiling import cut, make_grid
from lineside.train.checkpoint import load_checkpoint


def torch_baseline(checkpoint: Path, bundle: Bundle, strips: list[np.ndarray],
                   frames: int, device: str = "cpu") -> dict[str, float | str]:
    """Frames/s of the baseline over `frames` frames taken from `strips` in turn, and the
    model's GFLOP per frame. On `cuda` the tiles go up and the probabilities come back
    per frame, as a notebook does it."""
    net, meta = load_checkpoint(checkpoint)
    net.eval().to(device)
    manifest = bundle.manifest
    grid = make_grid(strips[0].shape, (manifest.tile_height, manifest.tile_width))
    mean, std, channels = meta["mean"], meta["std"], int(meta["in_channels"])

    def one(strip: np.ndarray) -> None:
        tiles = torch.from_numpy(cut(strip, grid)).to(device).float() / 255.0
        tiles = (tiles - mean) / std
        if channels == 3:
            tiles = tiles.expand(-1, 3, -1, -1)
        with torch.no_grad():
            output = net(tiles)
        output = output[0] if isinstance(output, tuple) else output
        torch.sigmoid(output).cpu().numpy()  # waits for the GPU, as a notebook's would

    one(strips[0])
    began = time.perf_counter()
    for i in range(frames):
        one(strips[i % len(strips)])
    seconds = time.perf_counter() - began
    gflop = gflop_per_frame(net.cpu(), grid.count, channels, manifest.tile_height,
                            manifest.tile_width)
    return {"frames_per_s": frames / seconds, "gflop_per_frame": gflop, "device": device}


def gflop_per_frame(net, tiles: int, channels: int, height: int, width: int) -> float:
    """Model GFLOP for one frame's tiles (torch's FLOP counter: 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros((tiles, channels, height, width)))
    return counter.get_total_flops() / 1e9

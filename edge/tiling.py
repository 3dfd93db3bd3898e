"""Cut a frame into model-sized tiles and stitch per-tile outputs back to frame size.

Tiles overlap just enough to cover the borders: a 256x1600 strip with 256x256 tiles
gives 7 tiles whose last one is flush with the right edge. When stitching, every frame
pixel is owned by exactly one tile, the one whose centre it is closest to (overlaps are
split at their midpoint). That keeps stitching exact (tile-then-stitch is the identity)
and discards the tile borders, where a convolutional network sees the least context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisSpan:
    """One tile's extent along an axis, and the part of it the stitched frame takes."""

    start: int  # first frame index the tile covers
    keep_from: int  # first frame index this tile owns
    keep_to: int  # one past the last frame index this tile owns


def axis_spans(length: int, tile: int) -> tuple[AxisSpan, ...]:
    """Tile positions along one axis of `length` pixels with tiles of `tile` pixels.

    The tiles are evenly spread with the first flush at 0 and the last flush at the end,
    so the overlap is as even as the integer grid allows.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    if length <= tile:
        return (AxisSpan(0, 0, length),)
    count = -(-length // tile)  # ceil
    last = length - tile
    starts = [round(i * last / (count - 1)) for i in range(count)]
    spans = []
    for i, start in enumerate(starts):
        # Ownership boundaries sit halfway through each overlap.
        keep_from = 0 if i == 0 else (start + starts[i - 1] + tile) // 2
        keep_to = length if i == count - 1 else (starts[i + 1] + start + tile) // 2
        spans.append(AxisSpan(start, keep_from, keep_to))
    return tuple(spans)


@dataclass(frozen=True)
class TileGrid:
    """How one frame shape is cut into tiles of one tile shape."""

    frame_height: int
    frame_width: int
    tile_height: int
    tile_width: int
    rows: tuple[AxisSpan, ...]
    cols: tuple[AxisSpan, ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Tile shape actually fed to the model (the frame itself when it is smaller)."""
        return (self.tile_height, self.tile_width)


def make_grid(frame_shape: tuple[int, int], tile_shape: tuple[int, int]) -> TileGrid:
    """Grid for a (height, width) frame and (height, width) tiles."""
    (fh, fw), (th, tw) = frame_shape, tile_shape
    return TileGrid(fh, fw, th, tw, axis_spans(fh, th), axis_spans(fw, tw))


def cut(frame: np.ndarray, grid: TileGrid, channels: int | None = None,
        out: np.ndarray | None = None) -> np.ndarray:
    """Cut a (H, W) or (C, H, W) frame into tiles: (N, C, th, tw), C=1 for 2-D input.

    `channels` replicates a single-channel frame into that many channels (grey into a
    3-channel model) while cutting, without a second copy of the tiles.
    A frame smaller than a tile along an axis is padded by edge replication, which the
    stitch step removes again. `out` (grid.count, C, th, tw) receives the tiles (a slice
    of a batch: one copy of the pixels, not two).
    """
    planes = frame[None] if frame.ndim == 2 else frame
    planes_channels, height, width = planes.shape
    channels = channels or planes_channels
    if channels != planes_channels and planes_channels != 1:
        raise ValueError(f"cannot make {channels} channels from {planes_channels}")
    if (height, width) != (grid.frame_height, grid.frame_width):
        raise ValueError(f"frame is {height}x{width}, grid is for "
                         f"{grid.frame_height}x{grid.frame_width}")
    pad_h, pad_w = max(0, grid.tile_height - height), max(0, grid.tile_width - width)
    if pad_h or pad_w:
        planes = np.pad(planes, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    th, tw = grid.tile_height, grid.tile_width
    tiles = np.empty((grid.count, channels, th, tw), dtype=frame.dtype) if out is None \
        else out
    if tiles.shape != (grid.count, channels, th, tw):
        raise ValueError(f"out is {tiles.shape}, the tiles {(grid.count, channels, th, tw)}")
    index = 0
    for row in grid.rows:
        for col in grid.cols:
            tiles[index] = planes[:, row.start:row.start + th, col.start:col.start + tw]
            index += 1
    return tiles


def stitch(tiles: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Inverse of `cut`: (N, C, th, tw) tile outputs to a (C, H, W) frame-sized array."""
    if tiles.shape[0] != grid.count:
        raise ValueError(f"grid has {grid.count} tiles, got {tiles.shape[0]}")
    channels = tiles.shape[1]
    out = np.empty((channels, grid.frame_height, grid.frame_width), dtype=tiles.dtype)
    index = 0
    for row in grid.rows:
        rs = slice(row.keep_from - row.start, row.keep_to - row.start)
        for col in grid.cols:
            cs = slice(col.keep_from - col.start, col.keep_to - col.start)
            out[:, row.keep_from:row.keep_to, col.keep_from:col.keep_to] = tiles[index, :, rs, cs]
            index += 1
    return out

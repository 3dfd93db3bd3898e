"""Run-length encoding exactly as Kaggle's Severstal competition defines it.

A mask is numbered top to bottom, then left to right (column-major, Fortran order),
starting at 1; the encoding is space-separated `start length` pairs of its runs of ones.
An empty mask encodes as the empty string. Both directions are vectorised numpy: a
256x1600 frame encodes in well under a millisecond, which matters on the publish path.
"""

from __future__ import annotations

import numpy as np


class RleError(ValueError):
    """An RLE string that does not describe a mask of the given shape."""


def encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (any dtype, non-zero = defect) as Kaggle RLE."""
    if mask.ndim != 2:
        raise RleError(f"mask must be 2-D, got shape {mask.shape}")
    # Column-major flattening, padded with zeros so every run has a start and an end.
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    padded = np.concatenate(([False], flat, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    if changes.size == 0:
        return ""
    starts = changes[0::2] + 1  # 1-indexed
    lengths = changes[1::2] - changes[0::2]
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def parse(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse an RLE string into (starts, lengths), 1-indexed starts, validating the form."""
    text = rle.strip() if isinstance(rle, str) else ""
    if not text:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except ValueError as exc:
        raise RleError(f"RLE holds a non-integer token: {exc}") from None
    if numbers.size % 2:
        raise RleError(f"RLE must hold start/length pairs, got {numbers.size} numbers")
    starts, lengths = numbers[0::2], numbers[1::2]
    if (starts < 1).any():
        raise RleError("RLE starts are 1-indexed; found a start below 1")
    if (lengths < 1).any():
        raise RleError("RLE run lengths must be positive")
    return starts, lengths


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode Kaggle RLE into a uint8 mask of `shape` (height, width) with values 0/1.

    Runs that leave the image, or that overlap or go backwards, are errors: a label row
    that does that belongs to another image size or is damaged, and guessing hides it.
    """
    height, width = shape
    starts, lengths = parse(rle)
    flat = np.zeros(height * width, dtype=np.uint8)
    if starts.size == 0:
        return flat.reshape((height, width), order="F")
    ends = starts - 1 + lengths  # exclusive, 0-indexed
    if ends[-1] > flat.size or (ends > flat.size).any():
        raise RleError(f"RLE runs past the end of a {height}x{width} mask")
    if (starts[1:] - 1 < ends[:-1]).any():
        raise RleError("RLE runs overlap or are not sorted")
    # The mask is alternating gaps and runs: one np.repeat writes every pixel once (a
    # cumulative sum over boundary marks cost 4x as much, in int64, per 256x1600 class).
    gaps = starts - 1 - np.concatenate(([0], ends[:-1]))
    segments = np.empty(2 * starts.size + 1, np.int64)
    segments[0:-1:2], segments[1::2] = gaps, lengths
    segments[-1] = flat.size - ends[-1]
    values = np.zeros(segments.size, np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, segments)
    return flat.reshape((height, width), order="F")


def area(rle: str) -> int:
    """Number of defect pixels an RLE string covers, without decoding it."""
    return int(parse(rle)[1].sum())

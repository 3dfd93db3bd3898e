"""The one interface every inference backend implements.

A backend takes a batch of uint8 tiles (N, C, H, W) and returns float32 per-class
probabilities (N, K, H, W). Normalisation and the sigmoid live inside the exported graph,
so a backend moves bytes and runs the graph, nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class BackendUnavailable(RuntimeError):
    """The backend's runtime library or device is not present on this machine."""


class Backend(ABC):
    """Runs one model; created by `create_backend`, used from one worker thread."""

    name: str = "abstract"

    @abstractmethod
    def infer(self, tiles: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K, H, W) float32 probabilities."""

    def infer_with_presence(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and, for models with a presence gate, (N, K) presence scores."""
        return self.infer(tiles), None

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        """Run the batch shapes serving will use, so that no frame on the line waits for
        a first-call allocation or kernel search. (C, H, W) tiles; batch 1 by default."""
        self.infer(np.zeros((1, *tile), np.uint8))

    def describe(self) -> dict[str, str]:
        """What runs where, for logs, heartbeats and benchmark reports."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release device memory and sessions."""


def bucket_size(count: int) -> int:
    """The batch size a GPU backend runs `count` tiles at: the next power of two.

    GPU runtimes tune kernels per input shape (cuDNN's algorithm search in ONNX Runtime's
    CUDA provider, engine profiles in its TensorRT provider); a screen that segments any
    number of tiles would otherwise meet a new shape, and a new search, at every batch.
    """
    return 1 << max(0, count - 1).bit_length()


def pad_batch(tiles: np.ndarray) -> np.ndarray:
    """`tiles` padded with copies of its first tile up to `bucket_size(len(tiles))`."""
    size = bucket_size(len(tiles))
    if size == len(tiles):
        return tiles
    return np.concatenate([tiles, np.repeat(tiles[:1], size - len(tiles), axis=0)])


def infer_in_batches(backend: Backend, tiles: np.ndarray,
                     max_batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (and presence, for gated models) of any number of tiles, at most
    `max_batch` per inference call."""
    parts = [backend.infer_with_presence(np.ascontiguousarray(tiles[i:i + max_batch]))
             for i in range(0, len(tiles), max_batch)]
    probabilities = np.concatenate([p for p, _ in parts])
    if parts[0][1] is None:
        return probabilities, None
    return probabilities, np.concatenate([g for _, g in parts])

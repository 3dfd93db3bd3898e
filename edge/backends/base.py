"""The one interface every inference backend implements.

A backend takes a batch of uint8 tiles (N, C, H, W) (and, for a graph that takes them,
per-tile class thresholds (N, K)) and returns the model's outputs by name. A bundle's
segmentation graph returns `scores` uint8 (N, K, H, W), `maxima` (N, K) and `areas`
(N, K) (export/score_tail.py); an older bundle's returns `probabilities` float32
(N, K, H, W); either may add `presence` (N, K) for a presence gate; a screening
classifier returns `presence` only. Normalisation, the sigmoid and the thresholds live
inside the exported graph, so a backend moves bytes and runs the graph, nothing else.
Loading (finding or building what to run) is the job of a loader beside the backend
(the TensorRT engine loader, ONNX Runtime's session options); a backend only runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

# Output and input names, as the exported graph names them (export/).
PROBABILITIES = "probabilities"
PRESENCE = "presence"
SCORES, MAXIMA, AREAS = "scores", "maxima", "areas"
THRESHOLDS = "thresholds"

Outputs = dict[str, np.ndarray]


class BackendUnavailable(RuntimeError):
    """The backend's runtime library or device is not present on this machine, or it
    cannot run what was asked for here; carries the reason."""


class Backend(ABC):
    """Runs one model; created by `create_backend`, used from one worker thread."""

    name: str = "abstract"

    @abstractmethod
    def infer(self, tiles: np.ndarray, thresholds: np.ndarray | None = None) -> Outputs:
        """(N, C, H, W) uint8 tiles (and (N, K) float32 thresholds, used by graphs that
        take them; None: the bundle's own) -> outputs by name."""

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        """Run the batch shapes serving will use, so that no frame on the line waits for
        a first-call allocation or kernel search. (C, H, W) tiles; batch 1 by default."""
        self.infer(np.zeros((1, *tile), np.uint8))

    def describe(self) -> dict[str, str]:
        """What runs where, for logs, heartbeats and benchmark reports."""
        return {"backend": self.name}

    def interrupt(self) -> bool:
        """From another thread: make the call now running on this backend end early with
        an error, so the cores go to more urgent work (a shadow model yielding to the
        serving one). False when this backend cannot (the call then runs to its end)."""
        return False

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


def infer_in_batches(backend: Backend, tiles: np.ndarray, max_batch: int,
                     thresholds: np.ndarray | None = None) -> Outputs:
    """Outputs for any number of tiles, at most `max_batch` per inference call."""
    parts = [backend.infer(np.ascontiguousarray(tiles[i:i + max_batch]),
                           None if thresholds is None else thresholds[i:i + max_batch])
             for i in range(0, len(tiles), max_batch)]
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

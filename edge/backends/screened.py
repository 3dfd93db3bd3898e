"""A screening classifier in front of the segmentation model: segment only flagged tiles.

Most tiles of a steel strip are clean (on Severstal about half the frames hold no defect
at all, and a defect rarely spans a whole 1600-pixel strip). A small classifier answers
"which classes are in this tile" for every tile; only tiles where some class scores at or
above its screening threshold are segmented, and only the flagged classes keep their
probabilities there. The 2019 Severstal winners used the same classifier gate for
accuracy (fewer false positives on clean steel); here it also saves most of the work.

Both models run behind the ordinary `Backend` interface, so any backend (ONNX Runtime,
TensorRT) can run either, and the daemon sees one backend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lineside.edge.backends.base import Backend
from lineside.edge.bundle import Bundle, BundleError, ClassSpec, load_bundle


@dataclass
class ScreenCounts:
    """Tiles seen and tiles segmented since start, for metrics and benchmark reports."""

    tiles: int = 0
    segmented: int = 0

    @property
    def segmented_share(self) -> float:
        return self.segmented / self.tiles if self.tiles else 0.0


def tiles_to_segment(flagged: np.ndarray) -> np.ndarray:
    """(N,) bool from (N, K) per-class flags: a tile is segmented when any class is flagged.
    The one rule, shared by the backend and the daemon's metrics."""
    return flagged.any(axis=1)


class ScreenedBackend(Backend):
    """Runs `screen` on every tile and `segment` on the flagged ones.

    `thresholds` holds one screening threshold per class, in the segmentation bundle's
    class order. A tile nobody flags gets all-zero probabilities (a clean tile); in a
    flagged tile, classes below their threshold get zeros too, as the classifier gate of
    the Severstal solutions does.
    """

    def __init__(self, screen: Backend, segment: Backend, thresholds: list[float],
                 class_ids: list[int]) -> None:
        if len(thresholds) != len(class_ids):
            raise ValueError(f"{len(thresholds)} screening thresholds for "
                             f"{len(class_ids)} classes")
        self.screen = screen
        self.segment = segment
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        self.name = f"{segment.name}+screen"
        self.counts = ScreenCounts()

    def flags(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, K) classifier scores and (N, K) bool: class flagged in tile."""
        scores = self.screen.infer(tiles)
        if scores.ndim != 2 or scores.shape[1] != len(self.thresholds):
            raise RuntimeError(f"screening classifier gives scores of shape {scores.shape}, "
                               f"expected (N, {len(self.thresholds)})")
        return scores, scores >= self.thresholds

    def infer(self, tiles: np.ndarray) -> np.ndarray:
        return self.infer_with_presence(tiles)[0]

    def infer_with_presence(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (zeros where screened out) and the classifier's (N, K) scores,
        which the runtime reports as the frame's presence."""
        scores, flagged = self.flags(tiles)
        keep = tiles_to_segment(flagged)
        height, width = tiles.shape[2:]
        probabilities = np.zeros((len(tiles), len(self.thresholds), height, width),
                                 dtype=np.float32)
        if keep.any():
            chosen = np.ascontiguousarray(tiles[keep])
            segmented = self.segment.infer(chosen)
            probabilities[keep] = segmented * flagged[keep][:, :, None, None]
        self.counts.tiles += len(tiles)
        self.counts.segmented += int(keep.sum())
        return probabilities, scores

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        # Warm tiles are blank and would not be flagged: warm each model directly.
        self.screen.warm_up(tile, max_batch)
        self.segment.warm_up(tile, max_batch)

    def describe(self) -> dict[str, str]:
        described = self.segment.describe()
        screen = self.screen.describe()
        return {**described, "backend": self.name,
                "screen": screen.get("backend", "?"),
                "screen_thresholds": ",".join(f"{t:g}" for t in self.thresholds)}

    def close(self) -> None:
        self.screen.close()
        self.segment.close()


def screening_thresholds(screen: Bundle, segment: Bundle,
                         overrides: dict[int, float] | None = None) -> list[float]:
    """One threshold per segmentation class: the classifier's tuned `gate_threshold`
    unless `overrides` names the class. Raises when the two bundles do not fit together."""
    seg, clf = segment.manifest, screen.manifest
    if clf.task != "classification":
        raise BundleError(f"screen {screen.root} holds a {clf.task} model; the screen must "
                          "be a screening classifier's bundle (architecture classifier)")
    if (clf.tile_height, clf.tile_width, clf.in_channels) != \
            (seg.tile_height, seg.tile_width, seg.in_channels):
        raise BundleError(f"screen {screen.root} takes {clf.in_channels}x{clf.tile_height}x"
                          f"{clf.tile_width} tiles, the segmentation model "
                          f"{seg.in_channels}x{seg.tile_height}x{seg.tile_width}: train the "
                          "classifier with the segmentation model's tile")
    if clf.class_ids != seg.class_ids:
        raise BundleError(f"screen {screen.root} scores classes {clf.class_ids}, the "
                          f"segmentation model predicts {seg.class_ids}")
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(seg.class_ids))
    if unknown:
        raise BundleError(f"screen thresholds name unknown classes {unknown}")
    return [float(overrides.get(c.id, c.gate_threshold)) for c in clf.classes]


def with_screen_gate(classes: list[ClassSpec], thresholds: list[float]) -> list[ClassSpec]:
    """Classes whose presence gate is the screen: the runtime reports the classifier's
    scores as presence, so they must be judged by the screening thresholds, not by the
    thresholds of a segmentation model's own presence head."""
    return [replace(c, gate_threshold=t) for c, t in zip(classes, thresholds, strict=True)]


def create_screened_backend(screen_path: str | Path, segment_bundle: Bundle,
                            segment: Backend, backend_name: str, precision: str,
                            threads: int = 0,
                            overrides: dict[int, float] | None = None) -> ScreenedBackend:
    """Load and check the classifier bundle at `screen_path` and put it in front of
    `segment`, on the same kind of backend."""
    from lineside.edge.backends import BACKENDS, create_backend

    screen = load_bundle(screen_path)
    thresholds = screening_thresholds(screen, segment_bundle, overrides)
    # With `auto`, the classifier runs where the segmentation model landed.
    if backend_name == "auto" and segment.name in BACKENDS:
        backend_name = segment.name
    classifier = create_backend(backend_name, screen, precision, threads)
    return ScreenedBackend(classifier, segment, thresholds, segment_bundle.manifest.class_ids)

"""The model a pipeline runs: a segmentation bundle on a backend, optionally behind a
screening classifier, optionally with injected faults. Composed here and only here, for
edge-serve, edge-bench and edge-eval alike (`compose_model`, `load_model`).

A `LoadedModel` is what a hot swap replaces as one unit (`ModelSlot`): stages read the
current one once per batch, so a swap happens between batches and no frame is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lineside.edge.backends import BACKENDS, Backend, BackendUnavailable, create_backend
from lineside.edge.backends.base import PROBABILITIES, SCORES
from lineside.edge.bundle import Bundle, BundleError, ClassSpec, load_bundle
from lineside.edge.config import CameraSettings, ModelSettings
from lineside.edge.postprocess import thresholds_of

log = logging.getLogger("lineside.edge.pipeline")


@dataclass
class Screen:
    """A screening classifier's bundle and backend, and one threshold per class of the
    segmentation model (in its class order): a tile is segmented for the classes whose
    score reaches the threshold (pipeline/screen.py)."""

    bundle: Bundle
    backend: Backend
    thresholds: np.ndarray  # (K,) float32

    def describe(self) -> dict[str, str]:
        return {"screen": self.backend.describe().get("backend", "?"),
                "screen_thresholds": ",".join(f"{t:g}" for t in self.thresholds)}


def screening_thresholds(screen: Bundle, segment: Bundle,
                         overrides: dict[int, float] | None = None) -> list[float]:
    """One threshold per segmentation class: the classifier's tuned `gate_threshold`
    unless `overrides` names the class. Raises when the two bundles do not fit together."""
    seg, clf = segment.manifest, screen.manifest
    if clf.task != "classification":
        raise BundleError(f"screen {screen.root} holds a {clf.task} model; the screen must "
                          "be a screening classifier's bundle (architecture classifier)")
    if seg.inference == "strip":
        raise BundleError(f"{segment.root} runs whole {seg.tile_height}x{seg.tile_width} "
                          "strips, a screen picks tiles to segment: export the segmentation "
                          "model with edge-export --inference tiles to use a screen")
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


@dataclass
class LoadedModel:
    """A verified bundle with its backend (and screen): what a hot swap replaces."""

    bundle: Bundle
    backend: Backend
    screen: Screen | None = None
    # A TensorRT engine of this precision would serve once built: the daemon builds it in
    # the background and swaps it in (pipeline/engine_build.py). "" = nothing pending.
    pending_engine: str = ""
    # id(camera settings) -> (the settings, their classes, their thresholds)
    _classes: dict[int, tuple[CameraSettings, list[ClassSpec], np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def tile_shape(self) -> tuple[int, int]:
        return (self.bundle.manifest.tile_height, self.bundle.manifest.tile_width)

    @property
    def tile(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input tile."""
        return (self.bundle.manifest.in_channels, *self.tile_shape)

    def classes_for(self, camera: CameraSettings) -> list[ClassSpec]:
        """The bundle's classes with a camera's overrides. Behind a screen, the presence
        gate is the screen: its scores are what the runtime reports as presence, so each
        class is judged by its screening threshold. Worked out once per camera settings
        object (asked for every frame, twice)."""
        cached = self._classes.get(id(camera))
        if cached is not None and cached[0] is camera:
            return cached[1]
        classes = self._classes_for(camera)
        thresholds = thresholds_of(classes)
        thresholds.flags.writeable = False  # shared by every frame of the camera
        if len(self._classes) >= 256:  # settings made per call (offline tools): stay small
            self._classes.clear()
        self._classes[id(camera)] = (camera, classes, thresholds)
        return classes

    def _classes_for(self, camera: CameraSettings) -> list[ClassSpec]:
        classes = self.bundle.manifest.classes
        if self.screen is not None:
            classes = [replace(c, gate_threshold=float(t))
                       for c, t in zip(classes, self.screen.thresholds, strict=True)]
        # `replace` keeps every other field, the presence gate's threshold included.
        return [replace(c, threshold=camera.thresholds.get(c.id, c.threshold),
                        min_area=camera.min_area.get(c.id, c.min_area))
                for c in classes]

    def thresholds_for(self, camera: CameraSettings) -> np.ndarray:
        """(K,) float32 pixel thresholds with a camera's overrides: what the graph is fed."""
        self.classes_for(camera)
        return self._classes[id(camera)][2]

    def describe(self) -> dict[str, str]:
        described = {"model": self.bundle.manifest.name, "bundle": str(self.bundle.root),
                     **self.backend.describe()}
        if self.screen is not None:
            described["backend"] = f"{described['backend']}+screen"
            described.update(self.screen.describe())
        return described

    def close(self) -> None:
        self.backend.close()
        if self.screen is not None:
            self.screen.backend.close()


def _main_backend(bundle: Bundle, settings: ModelSettings,
                  build_engines: bool) -> tuple[Backend, str]:
    """The segmentation model's backend, and the engine precision still to build ("").
    Without `build_engines`, a TensorRT engine that does not exist yet is not built here:
    the next backend serves (ONNX Runtime on CUDA, else the CPU) and the engine is pending."""
    from lineside.edge.backends.tensorrt.runner import EngineNotBuilt

    name, precision, threads = settings.backend, settings.precision, settings.threads
    if build_engines or name not in ("auto", "tensorrt"):
        return create_backend(name, bundle, precision, threads), ""
    try:
        return create_backend("tensorrt", bundle, precision, threads, build_engines=False), ""
    except EngineNotBuilt as exc:
        log.warning("%s: serving on the next backend while the engine is built", exc)
        return create_backend("auto", bundle, precision, threads, skip=("tensorrt",)), \
            exc.precision
    except BackendUnavailable:
        if name == "tensorrt":
            raise
        return create_backend("auto", bundle, precision, threads, skip=("tensorrt",)), ""


def compose_model(bundle: str | Path | Bundle, settings: ModelSettings,
                  build_engines: bool = True) -> LoadedModel:
    """The segmentation bundle on `settings.backend`, behind `settings.screen` when set,
    with `settings.inject_faults` when set (testing only). The one composition."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    backend, pending = _main_backend(bundle, settings, build_engines)
    screen = None
    if settings.screen:
        screen_bundle = load_bundle(settings.screen)
        thresholds = screening_thresholds(screen_bundle, bundle, settings.screen_thresholds)
        # With `auto`, the classifier runs where the segmentation model landed.
        where = backend.name if settings.backend == "auto" and backend.name in BACKENDS \
            else settings.backend
        screen = Screen(screen_bundle,
                        create_backend(where, screen_bundle,
                                       settings.screen_precision or settings.precision,
                                       settings.threads),
                        np.asarray(thresholds, np.float32))
    if settings.inject_faults:
        from lineside.edge.backends.fault_injection import FaultInjectingBackend

        backend = FaultInjectingBackend(backend, settings.inject_faults)
    return LoadedModel(bundle, backend, screen, pending)


def load_model(path: str | Path, settings: ModelSettings,
               build_engines: bool = False) -> LoadedModel:
    """Verify, compose and warm a segmentation bundle for serving; raises before anything
    is switched over (a broken model fails here, not on the line). Engines are not built
    here by default: serving starts at once (LoadedModel.pending_engine)."""
    bundle = load_bundle(path)
    if bundle.manifest.task != "segmentation":
        raise BundleError(f"{path} holds a {bundle.manifest.task} model (a screening "
                          "classifier); edge-serve runs segmentation bundles")
    model = compose_model(bundle, settings, build_engines)
    # Warm every batch shape serving will use, so the first frame is not slow. Warm tiles
    # are blank and a screen would flag none: warm each model directly.
    for backend in [model.backend] + ([model.screen.backend] if model.screen else []):
        backend.warm_up(model.tile, settings.max_batch)
    outputs = model.backend.infer(np.zeros((1, *model.tile), np.uint8))
    out = outputs.get(SCORES, outputs.get(PROBABILITIES))
    if out is None or out.shape[1] != len(bundle.manifest.classes):
        raise RuntimeError(f"model gives {None if out is None else out.shape[1]} classes "
                           f"(outputs {sorted(outputs)}), manifest lists "
                           f"{len(bundle.manifest.classes)}")
    return model


def load_candidate(path: str | Path, settings: ModelSettings,
                   serving: LoadedModel) -> LoadedModel:
    """A shadow candidate for `serving`: loaded and checked as a swap is, on one inference
    thread (it only ever gets the cores serving leaves), never with injected faults."""
    candidate = load_model(path, replace(settings, threads=1, inject_faults=""))
    ids = [c.id for c in candidate.bundle.manifest.classes]
    if ids != [c.id for c in serving.bundle.manifest.classes]:
        candidate.close()
        raise BundleError(f"shadow {path} predicts classes {ids}, the serving model "
                          f"{[c.id for c in serving.bundle.manifest.classes]}")
    return candidate


class ModelSlot:
    """The model in service, and hot swap: load and warm a candidate beside it, then
    switch between two batches. On any failure the serving model stays (roll back =
    never switched). Only bundles inside `allowed` are loaded: the control socket must not
    be a way to run any file on the box. `emit` publishes the `model` event; `on_swap`
    sees the outcome."""

    def __init__(self, model: LoadedModel, loader: Callable[[str], LoadedModel],
                 emit: Callable[[dict[str, Any]], None],
                 on_swap: Callable[[LoadedModel, str], None], allowed: Path,
                 keep_previous_s: float = 0.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.current = model
        self._loader = loader
        self._emit = emit
        self._on_swap = on_swap
        self.allowed = allowed.resolve()
        self._lock = threading.RLock()
        # The model served before the last swap, kept loaded until `_keep_until` so that
        # `rollback` is instant; after that, rollback loads its bundle again.
        self.keep_previous_s = keep_previous_s
        self._clock = clock
        self.previous: LoadedModel | None = None  # (closed by the infer stage once not kept)
        self._keep_until = 0.0

    def _replace(self, candidate: LoadedModel) -> None:
        self.previous, self.current = self.current, candidate
        self._keep_until = self._clock() + self.keep_previous_s

    def outside(self, path: str) -> str:
        """Why `path` may not be loaded ("" when it may): only bundles inside `allowed`
        are, so the control socket is not a way to run any file on the box."""
        if Path(path).resolve().is_relative_to(self.allowed):
            return ""
        return f"{path} is outside {self.allowed}, where bundles may be loaded from " \
               "(bundle_root)"

    def retained(self, model: LoadedModel) -> bool:
        """Whether `model` must stay loaded: it serves, or it is the previous model within
        its keep time (the infer stage closes retired models only when this says no)."""
        with self._lock:
            if model is self.current:
                return True
            return model is self.previous and self._clock() < self._keep_until

    def rollback(self) -> dict[str, Any]:
        """Serve the previous model again: at once while it is kept loaded, else by loading
        its bundle (a hot swap). The model rolled back from is closed."""
        with self._lock:
            if self.previous is None:
                return {"ok": False, "error": "nothing to roll back to: no swap yet",
                        "serving": str(self.current.bundle.root)}
            if not self.retained(self.previous):  # closed by now: load its bundle again
                return self.swap(str(self.previous.bundle.root), forget=True, why="rollback")
            leaving, self.current = self.current, self.previous
            self.previous = None
            self._on_swap(self.current, "ok")
            log.info("rolled back from %s to %s (kept loaded)", leaving.bundle.root,
                     self.current.bundle.root)
            self._emit({"kind": "model", "status": "rolled_back_by_operator",
                        "bundle": str(self.current.bundle.root),
                        "previous": str(leaving.bundle.root), "warm": True})
            return {"ok": True, "serving": str(self.current.bundle.root),
                    "rolled_back_from": str(leaving.bundle.root), "warm": True}

    def install(self, candidate: LoadedModel, why: str) -> None:
        """Switch to a model that was loaded and checked elsewhere (an engine built in
        the background); the old one is closed by the infer stage after its last batch."""
        with self._lock:
            previous = str(self.current.bundle.root)
            self._replace(candidate)
            self._on_swap(candidate, "ok")
            log.info("now serving %s (%s)", candidate.describe(), why)
            self._emit({"kind": "model", "status": "swapped", "bundle": previous,
                        "previous": previous, "reason": why, **candidate.backend.describe()})

    def swap(self, path: str, forget: bool = False, why: str = "swap") -> dict[str, Any]:
        """Load, check and warm the bundle at `path`, then serve it; `forget`: do not keep
        the model it replaces for a rollback (a rollback itself)."""
        with self._lock:
            began = time.monotonic()
            serving = str(self.current.bundle.root)
            if reason := self.outside(path):
                log.error("hot swap refused: %s", reason)
                self._on_swap(self.current, "refused")
                self._emit({"kind": "model", "status": "refused", "bundle": str(path),
                            "reason": reason, "serving": serving})
                return {"ok": False, "error": reason, "serving": serving}
            try:
                candidate = self._loader(path)
            except Exception as exc:
                log.error("hot swap to %s failed, still serving %s: %s", path, serving, exc)
                self._on_swap(self.current, "rolled_back")
                self._emit({"kind": "model", "status": "rolled_back", "bundle": str(path),
                            "reason": str(exc), "serving": serving})
                return {"ok": False, "error": str(exc), "serving": serving}
            self._replace(candidate)  # the batcher picks it up for its next batch
            if forget:
                self.previous = None
            self._on_swap(candidate, "ok")
            seconds = round(time.monotonic() - began, 3)
            log.info("%s %s -> %s in %.2f s", why, serving, path, seconds)
            self._emit({"kind": "model", "status": "swapped", "bundle": str(path),
                        "previous": serving, "load_s": seconds, "reason": why})
            return {"ok": True, "serving": str(path), "load_s": seconds,
                    **({"rolled_back_from": serving, "warm": False} if forget else {})}

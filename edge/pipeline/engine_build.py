"""Engine build off the hot path: serve at once, build the TensorRT engine beside it,
swap to it only when it agrees with what is serving.

Users of every comparable runtime meet the same surprise: an engine built silently on the
first request while the line waits (about 9.5 minutes on an Orin). Here the daemon starts
serving on ONNX Runtime (CUDA, else CPU) as soon as the bundle loads, when a TensorRT
engine would serve but none matches this GPU yet (LoadedModel.pending_engine). This stage
then builds the engine on its own thread (the state is in the log with a line every 30 s,
the heartbeat's `engine`, the `lineside_engine_build` metric and edge-doctor), loads it,
runs it and the serving model on the last frames the line sent, and swaps only if their
Kaggle Dice agreement is within the bundle's `accuracy_budget`. A failed build or check
leaves the fallback serving and says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from lineside.edge.config import ServeConfig
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.decide import agreement
from lineside.edge.pipeline.model import LoadedModel, ModelSlot, load_model

log = logging.getLogger("lineside.edge.engine")

STATES = ("idle", "building", "checking", "swapped", "failed")
CHECK_FRAMES = 8  # frames the engine and the serving model are compared on
PROGRESS_LOG_S = 30.0


class RecentFrames:
    """The last frames the line sent (references, no copies): what a candidate model is
    checked on before it may serve."""

    def __init__(self, size: int = 16) -> None:
        self._frames: deque[np.ndarray] = deque(maxlen=size)
        self._cond = threading.Condition()

    def add(self, pixels: np.ndarray) -> None:
        with self._cond:
            self._frames.append(pixels)
            self._cond.notify_all()

    def wait(self, count: int, timeout_s: float) -> list[np.ndarray]:
        """Up to the last `count` frames, waiting until there are that many or time ends."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._frames) >= count, timeout=timeout_s)
            return list(self._frames)[-count:]


class EngineBuild:
    name = "engine_build"

    def __init__(self, config: ServeConfig, slot: ModelSlot, recent: RecentFrames,
                 counters: DaemonCounters, emit: Callable[[dict[str, Any]], None],
                 resolve: Callable[..., Any] | None = None,
                 check_timeout_s: float = 300.0) -> None:
        self.config = config
        self.slot = slot
        self.recent = recent
        self.counters = counters
        self.emit = emit
        self._resolve = resolve  # the engine builder (tests inject theirs)
        self.check_timeout_s = check_timeout_s
        self.state, self.reason, self.precision = "idle", "", ""
        self._since = time.monotonic()
        self._thread: threading.Thread | None = None

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "precision": self.precision, "reason": self.reason,
                "seconds": round(time.monotonic() - self._since, 1)}

    def _enter(self, state: str, reason: str = "") -> None:
        self.state, self.reason, self._since = state, reason, time.monotonic()
        self.counters.engine_state(state)
        (log.error if state == "failed" else log.info)(
            "engine %s: %s%s", self.precision, state, f" ({reason})" if reason else "")
        if state in ("swapped", "failed"):
            self.emit({"kind": "engine", **self.describe()})

    def start(self, model: LoadedModel) -> None:
        """Build for `model` in the background if it has an engine pending."""
        if not model.pending_engine or (self._thread and self._thread.is_alive()):
            return
        self.precision = model.pending_engine
        self._thread = threading.Thread(target=self._run, args=(model,), name="edge-engine",
                                        daemon=True)
        self._thread.start()

    def _build(self, model: LoadedModel) -> None:
        from lineside.edge.backends.tensorrt.engine import engine_cache_dir
        from lineside.edge.backends.tensorrt.loader import resolve_engine

        resolve = self._resolve or resolve_engine
        done = threading.Event()

        def progress() -> None:  # TensorRT's build gives no progress: say it is alive
            while not done.wait(PROGRESS_LOG_S):
                log.info("engine %s: still building (%.0f s)", self.precision,
                         time.monotonic() - self._since)

        threading.Thread(target=progress, name="edge-engine-progress", daemon=True).start()
        try:
            resolve(model.bundle, self.precision, engine_cache_dir())
        finally:
            done.set()

    def _run(self, model: LoadedModel) -> None:
        self._enter("building")
        try:
            self._build(model)
            candidate = load_model(model.bundle.root, replace(self.config, backend="tensorrt"))
        except Exception as exc:  # the fallback keeps serving; say why
            self._enter("failed", f"build: {type(exc).__name__}: {exc}")
            return
        self._enter("checking")
        frames = self.recent.wait(CHECK_FRAMES, self.check_timeout_s)
        if not frames:
            candidate.close()
            self._enter("failed", f"no frames arrived in {self.check_timeout_s:.0f} s to "
                        "check the engine on; it stays unused")
            return
        serving = self.slot.current
        result = agreement(candidate, serving, frames).summary()
        budget = serving.bundle.manifest.accuracy_budget
        if result["dice"] < 1 - budget:
            candidate.close()
            self._enter("failed", f"the engine disagrees with {serving.backend.name} on "
                        f"{len(frames)} frames: Dice {result['dice']:.4f} < "
                        f"{1 - budget:.4f} (accuracy_budget {budget})")
            return
        self.slot.install(candidate, f"{self.precision} engine built here, Dice "
                          f"{result['dice']:.4f} vs {serving.backend.name} on "
                          f"{len(frames)} frames")
        self._enter("swapped", f"Dice {result['dice']:.4f} on {len(frames)} frames")

"""Shadow stage: a candidate model on the serving model's frames, on spare capacity only.

The decide stage tells this stage of every decided frame (after its verdict is out).
The candidate runs them on this stage's own thread, and only when the serving pipeline
has nothing to do (no frame queued, the model idle): under load, shadow work is dropped
and counted, never a serving verdict delayed. A frame that arrives while the candidate
is running interrupts it (Backend.interrupt: ONNX Runtime stops between two nodes) and
that shadow frame is dropped: measured on 2 cores, a shadow call left to finish at the
lowest CPU priority still cost the serving frame beside it a fifth of its latency
(docs/performance.md). The thread runs at the lowest CPU priority, on one inference
thread, for what is left.

For each frame the candidate is judged as the serving model is (its own thresholds with
the camera's overrides, the camera's rules), its verdict goes to the `shadow` topic
(never to the PLC) and `Agreement` keeps the running comparison: verdict agreement,
per-class Dice of its masks against the serving model's, disagreements per class. A
frame where they differ is recorded when a recorder is on ("disagreement").

`promote` (the daemon's control command) reads the agreement against the configured bar.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from lineside.edge import protocol
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.decide import Decided, judged
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.scoring import Agreement, Scorecard

log = logging.getLogger("lineside.edge.pipeline")

IDLE_POLL_S = 0.002  # how often a waiting shadow frame checks whether serving is idle
INTERRUPT_POLL_S = 0.0005  # how often a running shadow call checks whether serving has work


def lowest_priority() -> None:
    """Make the calling thread the last the kernel runs (Linux: nice 19 per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed
        log.warning("shadow thread keeps its priority: %s", exc)


class ShadowStage:
    name = "shadow"

    def __init__(self, config: Any, counters: DaemonCounters | None,
                 publish: Callable[[tuple[str, dict[str, Any]]], bool],
                 serving_idle: Callable[[], bool],
                 record: Callable[..., str] | None = None, queue_size: int = 4) -> None:
        """`publish` offers a message to the outbox without waiting; `serving_idle`
        says the serving pipeline has nothing queued or running; `record` keeps a
        disagreeing frame (Recorder.keep)."""
        self.config = config
        self.counters = counters
        self.publish = publish
        self.serving_idle = serving_idle
        self.record = record
        self._queue: queue.Queue[tuple[LoadedModel, Decided]] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self.candidate: LoadedModel | None = None
        self.agreement: Agreement | None = None
        self.dropped = 0
        self.since_ns = 0
        self._retired: list[LoadedModel] = []  # closed on the shadow thread, which ran them
        self.closed = threading.Event()  # the decide stage ended
        self._running: LoadedModel | None = None  # the candidate while it runs a frame
        self._busy = threading.Event()  # set while it does: the watcher sleeps otherwise
        self._interrupted = False
        self.preempted = 0  # shadow frames given up because serving needed the cores

    # -- control -------------------------------------------------------------------------
    def start(self, candidate: LoadedModel) -> None:
        """Shadow `candidate` from the next frame on (the comparison starts afresh)."""
        with self._lock:
            if self.candidate is not None:
                self._retired.append(self.candidate)
            self.candidate = candidate
            self.agreement = Agreement([c.id for c in candidate.bundle.manifest.classes])
            self.dropped, self.preempted, self.since_ns = 0, 0, time.time_ns()
        log.info("shadowing %s", candidate.describe())

    def stop(self) -> LoadedModel | None:
        """Stop shadowing; the candidate that was shadowed (closed later, on this stage's
        thread)."""
        with self._lock:
            candidate, self.candidate = self.candidate, None
            if candidate is not None:
                self._retired.append(candidate)
        return candidate

    def promote_refusal(self, serving: LoadedModel, heldout: str = ""
                        ) -> tuple[str, dict[str, Any]]:
        """Why the candidate may not replace `serving` ("" when it may) and the evidence:
        its live agreement against the configured bar, or with `heldout` (a labelled
        folder) its Dice there against the serving model's."""
        config, candidate = self.config, self.candidate
        if candidate is None:
            return agreement_bar(None, 0, 0, 0), {}
        if heldout:
            return heldout_check(candidate, serving, heldout, config.max_batch,
                                 config.promote_dice_tolerance)
        return agreement_bar(self.agreement, config.promote_min_frames,
                             config.promote_min_agreement, config.promote_min_dice), \
            {"agreement": self.describe()}

    def describe(self) -> dict[str, Any]:
        with self._lock:
            if self.candidate is None or self.agreement is None:
                return {}
            return {"model": self.candidate.bundle.manifest.name,
                    "bundle": str(self.candidate.bundle.root), "dropped": self.dropped,
                    "preempted": self.preempted,
                    "since_ns": self.since_ns, **self.agreement.summary()}

    # -- from the decide stage -----------------------------------------------------------
    def offer(self, decided: Decided) -> None:
        """Observer: queue a decided frame for the candidate, or count it dropped."""
        candidate = self.candidate
        if candidate is None or decided.masks is None:  # nothing to compare with
            return
        try:
            self._queue.put_nowait((candidate, decided))
        except queue.Full:
            self._count_dropped()

    # -- the stage's thread --------------------------------------------------------------
    def _yield_to_serving(self) -> None:
        """While the candidate runs, interrupt it as soon as serving has work."""
        while not self.closed.is_set():
            if not self._busy.wait(0.1):
                continue
            running = self._running
            if running is not None and not self.serving_idle():
                self._interrupted = True
                running.backend.interrupt()
                if running.screen is not None:
                    running.screen.backend.interrupt()
            time.sleep(INTERRUPT_POLL_S)

    def run(self) -> None:
        lowest_priority()
        watcher = threading.Thread(target=self._yield_to_serving, name="edge-shadow-yield",
                                   daemon=True)
        watcher.start()
        while True:
            self._close_retired()
            try:
                candidate, decided = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.closed.is_set():
                    break
                continue
            while not self.serving_idle() and not self.closed.is_set():
                time.sleep(IDLE_POLL_S)  # frames waiting behind this one are dropped
            if candidate is not self.candidate:
                continue  # shadowing stopped or moved on while this frame waited
            self._interrupted = False
            self._running = candidate
            self._busy.set()
            try:
                self.compare(candidate, decided)
            except Exception:
                if self._interrupted:  # serving needed the cores: this frame is dropped
                    self._count_dropped(preempted=True)
                else:
                    log.exception("shadow model failed on frame %s of %s",
                                  decided.frame.header.frame_id,
                                  decided.frame.header.camera_id)
            finally:
                self._busy.clear()
                self._running = None
        watcher.join()
        self.stop()
        self._close_retired()

    def _count_dropped(self, preempted: bool = False) -> None:
        with self._lock:
            self.dropped += 1
            self.preempted += preempted
        if self.counters is not None:
            self.counters.shadow_dropped()

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for model in retired:
            try:
                model.close()
            except Exception:
                log.exception("closing shadow model %s failed", model.bundle.root)

    def compare(self, candidate: LoadedModel, decided: Decided) -> dict[str, Any]:
        """Run the candidate on one frame, count the comparison, publish its verdict;
        the `shadow` message body."""
        camera = self.config.for_camera(decided.frame.header.camera_id)
        masks, summaries, verdict, reasons = judged(
            candidate, decided.frame.pixels, candidate.classes_for(camera), camera.rule,
            self.config.max_batch)
        assert decided.masks is not None
        with self._lock:
            if candidate is not self.candidate or self.agreement is None:
                return {}
            differences = self.agreement.add(masks, decided.masks, verdict, decided.verdict)
            gauges = self.agreement.gauges()
        if self.counters is not None:
            self.counters.shadow_compared(differences, gauges)
        body = {**protocol.frame_fields(decided.frame), "verdict": verdict,
                "reasons": reasons, "serving_verdict": decided.verdict,
                "agree": not differences, "differences": differences,
                "classes": {str(s.class_id): s.to_json() for s in summaries},
                "model": candidate.bundle.manifest.name,
                "serving_model": decided.model.bundle.manifest.name}
        self.publish((protocol.TOPIC_SHADOW, body))
        if differences and self.record is not None and not decided.recorded:
            self.record(decided, "disagreement",
                        shadow={"model": body["model"], "verdict": verdict,
                                "differences": differences, "classes": body["classes"]})
        return body


def heldout_dice(model: LoadedModel, folder: str, max_batch: int, limit: int = 0) -> float:
    """Kaggle Dice of `model` on a labelled folder (any layout lineside.edge.labels reads),
    judged with the bundle's thresholds: the held-out check a promote may ask for."""
    from lineside.edge.config import CameraSettings
    from lineside.edge.labels import open_dataset

    camera = CameraSettings()
    classes = model.classes_for(camera)
    card = Scorecard([c.id for c in classes])
    for sample in open_dataset(folder, require_labels=True, limit=limit).samples:
        gray = sample.image()
        masks, _, _, _ = judged(model, gray, classes, camera.rule, max_batch)
        card.add(masks, sample.masks(tuple(card.class_ids), gray.shape))
    return float(card.summary()["dice"])


def heldout_check(candidate: LoadedModel, serving: LoadedModel, folder: str,
                  max_batch: int, tolerance: float) -> tuple[str, dict[str, Any]]:
    """Why `candidate` may not replace `serving` on `folder`'s evidence ("" when it may:
    its Dice there at least the serving model's minus `tolerance`), and both Dice. Runs
    on a lowest-priority thread of its own, so the line keeps its cores."""
    scores: dict[str, Any] = {}

    def measure() -> None:
        lowest_priority()
        try:
            scores["candidate"] = heldout_dice(candidate, folder, max_batch)
            scores["serving"] = heldout_dice(serving, folder, max_batch)
        except Exception as exc:
            scores["error"] = str(exc)

    thread = threading.Thread(target=measure, name="edge-heldout", daemon=True)
    thread.start()
    thread.join()
    if "error" in scores:
        return f"held-out check on {folder} failed: {scores['error']}", {}
    check = {"heldout": {"folder": folder, "dice": scores}}
    if scores["candidate"] < scores["serving"] - tolerance:
        return (f"held-out Dice {scores['candidate']:.4f} is below the serving model's "
                f"{scores['serving']:.4f}"), check
    return "", check


def agreement_bar(agreement: Agreement | None, min_frames: int, min_agreement: float,
                  min_dice: float) -> str:
    """Why a shadow model may not be promoted yet ("" when it may)."""
    if agreement is None:
        return "no shadow model is running (start one with --shadow or `shadow`)"
    if agreement.frames < min_frames:
        return f"compared on {agreement.frames} frames, promote needs {min_frames}"
    if agreement.verdict_agreement < min_agreement:
        return (f"verdict agreement {agreement.verdict_agreement:.4f} is below "
                f"{min_agreement:g}")
    if agreement.mean_dice < min_dice:
        return f"mean Dice against the serving model {agreement.mean_dice:.4f} is below " \
               f"{min_dice:g}"
    return ""


__all__ = ["ShadowStage", "agreement_bar", "heldout_check", "heldout_dice",
           "lowest_priority"]

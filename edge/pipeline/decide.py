"""Decide stage: a frame's scores -> masks, defects, a verdict per frame, and the
messages that carry them (`reject`, and `mask` when masks are published).

Most frames of a line are clean: a frame whose classes all come out empty takes a fast
path with no pixel work (summaries from the maxima, a cached blank mask).

`Decider.messages` is a plain function of an inferred frame and the clock, so the rules
that decide what the PLC is told (thresholds, gate, rules, the deadline, the fail-safe
verdict for failed inference) are tested in-process without sockets.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lineside.edge import protocol, rle
from lineside.edge.bundle import ClassSpec
from lineside.edge.config import CameraSettings, ClassRule, ServeConfig
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.infer import InferredFrame, run_model
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.postprocess import (
    ClassSummary,
    Defect,
    FrameScores,
    class_masks,
    clean_summaries,
    decide,
    find_defects,
    kept_classes,
    label_map,
    thresholds_of,
)
from lineside.edge.protocol import Frame
from lineside.edge.scoring import Agreement

log = logging.getLogger("lineside.edge.pipeline")

Message = tuple[str, dict[str, Any]]


@dataclass
class Decided:
    """A frame with its verdict: what the stages after decide read (record, shadow)."""

    frame: Frame
    model: LoadedModel
    classes: list[ClassSpec]
    verdict: str
    failed: bool  # the fail-safe verdict: inference or post-processing failed, or late
    result: dict[str, Any]  # the `reject` message body
    masks: np.ndarray | None = None  # (K, H, W) 0/1; None when there was no prediction
    scores: FrameScores | None = None
    gate: np.ndarray | None = None
    recorded: str = ""  # why the record stage kept it ("" = not recorded)


@dataclass
class Verdict:
    """What deciding a frame produced, before anyone is told: its messages (`reject`,
    then `mask`), the frame as observers see it, and whether its deadline had passed."""

    messages: list[Message]
    decided: Decided
    late: bool = False


# Told of every decided frame (record, shadow, the operator view); must not block (a
# bounded queue) and should not raise.
Observer = Callable[[Decided], None]


def frame_verdict(model: LoadedModel, gray: np.ndarray,
                  classes: list[ClassSpec]) -> tuple[np.ndarray, str]:
    """One frame's masks and its verdict at `classes` (variants of one bundle share
    them) with the default rules (any defect rejects), off the line: edge-eval --compare."""
    masks, _, verdict, _ = judged(model, gray, classes, lambda _: ClassRule())
    return masks, verdict


def judged(model: LoadedModel, gray: np.ndarray, classes: list[ClassSpec],
           rule: Callable[[int], ClassRule], max_batch: int = 8
           ) -> tuple[np.ndarray, list[ClassSummary], str, list[str]]:
    """A frame through `model` and judged as the daemon judges it, outside the daemon:
    masks, per-class summaries, verdict and its reasons."""
    out = run_model(model, gray, max_batch, thresholds=thresholds_of(classes))
    masks, summaries, _ = judge(out.scores, out.gate, classes)
    verdict, reasons = decide(summaries, rule)
    return masks, summaries, verdict, reasons


def judge(frame: FrameScores, gate: np.ndarray | None, classes: list[ClassSpec]
          ) -> tuple[np.ndarray, list[ClassSummary], list[Defect]]:
    """Masks, per-class summaries and defects of one frame; a frame with no class left
    after threshold, minimum area and gate costs no pixel work (its masks are the blank
    scores)."""
    keep = kept_classes(frame, gate, classes)
    masks = class_masks(frame, keep)
    if not keep.any():
        return masks, clean_summaries(frame, classes), []
    summaries, defects = find_defects(frame, masks, classes)
    return masks, summaries, defects


def agreement(candidate: LoadedModel, reference: LoadedModel, frames: list[np.ndarray],
              camera: CameraSettings | None = None) -> Agreement:
    """How far `candidate` agrees with `reference` on `frames` (lineside.edge.scoring),
    each judged as a camera with `camera`'s settings would judge it: with its own
    bundle's thresholds (an engine and its graph share them; a shadow candidate may be
    retuned) under the camera's overrides and rules. The shadow stage's rule too."""
    camera = camera or CameraSettings()
    result = Agreement([c.id for c in reference.classes_for(camera)])
    for gray in frames:
        masks, _, verdict, _ = judged(candidate, gray, candidate.classes_for(camera),
                                      camera.rule)
        ref_masks, _, ref_verdict, _ = judged(reference, gray, reference.classes_for(camera),
                                              camera.rule)
        result.add(masks, ref_masks, verdict, ref_verdict)
    return result


def failsafe_result(base: dict[str, Any], verdict: str, reason: str) -> Message:
    """The result for a frame the daemon cannot vouch for (inference failed, deadline
    passed): the fail-safe verdict, the reason, no classes."""
    return (protocol.TOPIC_REJECT, {**base, "verdict": verdict, "reasons": [reason],
                                    "classes": {}, "defects": []})


class Decider:
    name = "decide"

    def __init__(self, config: ServeConfig, counters: DaemonCounters | None = None,
                 observers: list[Observer] | None = None) -> None:
        self.config = config
        self.counters = counters
        self.observers = observers or []  # record, shadow, the operator view

    def _tell(self, decided: Decided) -> None:
        for observer in self.observers:
            try:
                observer(decided)
            except Exception:  # recording or shadowing must never cost a verdict
                log.exception("%r failed on frame %s of %s", observer,
                              decided.frame.header.frame_id, decided.frame.header.camera_id)

    def messages(self, item: InferredFrame, now_ns: int | None = None) -> list[Message]:
        """The messages for one frame, observers told: `verdict` then `deliver`, in one
        call (what the daemon does on its decide threads, without the in-flight check)."""
        out: list[Message] = []
        self.deliver(self.verdict(item, now_ns), out.append)
        return out

    def verdict(self, item: InferredFrame, now_ns: int | None = None) -> Verdict:
        """One frame's verdict and messages; `now_ns` (Unix ns) is when the deadline is
        judged. Never raises: a frame whose post-processing fails gets the fail-safe
        verdict (without a verdict here the part would pass). Tells no one: the daemon
        delivers it only if the frame is still its to settle (pipeline/watchdog.py)."""
        base = protocol.frame_fields(item.frame)
        if item.scores is None:
            return self._failed(item, failsafe_result(base, self.config.failsafe_verdict,
                                                      item.error))
        try:
            return self._judged(item, base, now_ns)
        except Exception as exc:
            return self.failed(item, exc)

    def failed(self, item: InferredFrame, exc: BaseException) -> Verdict:
        """The fail-safe verdict of a frame whose post-processing raised `exc`."""
        log.error("post-processing failed for frame %s of %s", item.frame.header.frame_id,
                  item.frame.header.camera_id, exc_info=exc)
        if self.counters is not None:
            self.counters.decide_failure()
        return self._failed(item, failsafe_result(
            protocol.frame_fields(item.frame), self.config.failsafe_verdict,
            f"post-processing failed: {type(exc).__name__}: {exc}"))

    def deliver(self, verdict: Verdict, put: Callable[[Message], object]) -> None:
        """Send a settled frame's messages with `put`, count a missed deadline, and tell
        the observers (record, shadow, the operator view)."""
        if verdict.late and self.counters is not None:
            self.counters.deadline_missed()
        for message in verdict.messages:
            put(message)
        if self.observers:
            self._tell(verdict.decided)

    def _failed(self, item: InferredFrame, message: Message) -> Verdict:
        camera = self.config.for_camera(item.frame.header.camera_id)
        return Verdict([message], Decided(item.frame, item.model, item.model.classes_for(camera),
                                          message[1]["verdict"], True, message[1]))

    def _judged(self, item: InferredFrame, base: dict[str, Any],
                now_ns: int | None) -> Verdict:
        camera = self.config.for_camera(item.frame.header.camera_id)
        classes = item.model.classes_for(camera)
        if not np.array_equal(item.scores.thresholds, thresholds_of(classes)):
            raise RuntimeError(f"frame scored at thresholds {item.scores.thresholds.tolist()},"
                               f" camera {item.frame.header.camera_id!r} has "
                               f"{thresholds_of(classes).tolist()}")
        masks, summaries, defects = judge(item.scores, item.gate, classes)
        verdict, reasons = decide(summaries, camera.rule)
        now_ns = time.time_ns() if now_ns is None else now_ns
        elapsed_ms = (now_ns - item.frame.received_ns) / 1e6
        late = bool(camera.deadline_ms and elapsed_ms > camera.deadline_ms)
        if late:
            reasons = [f"deadline missed: {elapsed_ms:.1f} ms > {camera.deadline_ms:g} ms",
                       *reasons]
            verdict = self.config.failsafe_verdict
        reject = {**base, "verdict": verdict, "reasons": reasons,
                  "classes": {str(s.class_id): s.to_json() for s in summaries},
                  "defects": [d.to_json() for d in defects],
                  "model": item.model.bundle.manifest.name,
                  "infer_ms": round(item.infer_ms, 3)}
        if item.gate is not None:
            reject["presence"] = {str(c.id): round(float(item.gate[k]), 4)
                                  for k, c in enumerate(classes)}
        messages: list[Message] = [(protocol.TOPIC_REJECT, reject)]
        if self.config.publish_masks:
            messages.append((protocol.TOPIC_MASK,
                             self.mask_body(base, item.scores.scores, masks, defects, classes)))
        return Verdict(messages, Decided(item.frame, item.model, classes, verdict, late,
                                         reject, masks, item.scores, item.gate), late)

    def mask_body(self, base: dict[str, Any], scores: np.ndarray, masks: np.ndarray,
                  defects: list[Defect], classes: list[ClassSpec]) -> dict[str, Any]:
        height, width = masks.shape[1:]
        body = {**base, "height": height, "width": width, "encoding": self.config.mask_format}
        blank = not defects  # a kept class always has at least one region
        if self.config.mask_format == "png":
            body[protocol.ATTACHMENT] = blank_png(height, width) if blank else \
                png_bytes(label_map(scores, masks, [c.id for c in classes]))
        else:
            body["classes"] = {str(c.id): "" if blank else rle.encode(masks[k])
                               for k, c in enumerate(classes)}
        return body


def png_bytes(labels: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", labels)
    if not ok:
        raise RuntimeError("OpenCV could not encode the label map")
    return png.tobytes()


@functools.lru_cache(maxsize=8)
def blank_png(height: int, width: int) -> bytes:
    """The PNG of a frame with no defect, encoded once per frame shape."""
    return png_bytes(np.zeros((height, width), np.uint8))

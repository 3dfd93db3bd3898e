"""Record stage: frames worth labelling, written as a data set the project's tools read.

The decide stage (and the shadow stage, for disagreements) offers every decided frame;
`RecordPolicy` picks the ones to keep: every REJECT and ERROR, frames whose prediction is
uncertain (a class's maximum probability within `band` of its threshold, or its presence
within `band` of its gate) and a sampled fraction of OK frames, with an optional rate
limit per camera. Picked frames wait in a bounded queue for this stage's own thread, so
recording never holds up a verdict: when the queue is full, the recording is dropped and
counted, never the frame.

What is written under the recording folder (docs/operations.md, "Learning from the line"):

    images/<stem>.png    the frame as the model saw it (lossless)
    images/<stem>.json   a draft LabelMe file (polygons of the predicted masks)
    masks/<stem>.png     the same draft as a label map (pixel = class id)
    meta/<stem>.json     camera, frame id, line position, model, verdict, why recorded,
                         per-class areas and probabilities

`open_dataset(DIR)` reads it as image + mask folders, `open_dataset(DIR/images)` as
LabelMe (what a person corrected), so edge-train, edge-eval and edge-calibrate take
either. `<stem>` starts with the frame's UTC receive time, so names sort oldest first:
the disk quota deletes whole records from the oldest.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lineside.edge.files import write_file_atomically
from lineside.edge.labels.drafts import json_bytes, labelme_document, png
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.decide import Decided
from lineside.edge.postprocess import VERDICT_REJECT, label_map

log = logging.getLogger("lineside.edge.pipeline")

REASONS = ("reject", "error", "uncertain", "disagreement", "sample")
# What a sidecar keeps of the frame's result message (docs/protocol.md).
SIDECAR_FIELDS = ("timestamp_ns", "line_position", "verdict", "reasons", "classes",
                  "defects", "presence", "model")
FOLDERS = ("images", "masks", "meta")


def sampled(camera_id: str, frame_id: int, fraction: float) -> bool:
    """Whether an OK frame falls in the sampled `fraction`: a hash of its camera and id,
    so the choice is the same in every run and anyone can check it from the results."""
    if fraction <= 0:
        return False
    return zlib.crc32(f"{camera_id}:{frame_id}".encode()) < fraction * 2**32


def near(values: np.ndarray, limits: np.ndarray, band: float) -> bool:
    """Any value within `band` of its limit (limits of 0 are off and never near)."""
    values, limits = np.asarray(values, np.float64), np.asarray(limits, np.float64)
    return bool(np.any((limits > 0) & (np.abs(values - limits) <= band)))


@dataclass(frozen=True)
class RecordPolicy:
    ok_fraction: float = 0.05  # OK frames sampled
    band: float = 0.1  # |probability - threshold| that counts as uncertain
    rate_per_s: float = 0.0  # recordings per second per camera (0: no limit)

    def reason(self, *, failed: bool, verdict: str, maxima: np.ndarray | None,
               thresholds: np.ndarray | None, gate: np.ndarray | None,
               gate_thresholds: np.ndarray | None, camera_id: str, frame_id: int) -> str:
        """Why a decided frame is recorded, "" when it is not (REASONS, first that holds).
        `thresholds` and `gate_thresholds` are needed only with `maxima` and `gate`."""
        if failed:
            return "error"
        if verdict == VERDICT_REJECT:
            return "reject"
        if maxima is not None and near(maxima, thresholds, self.band):
            return "uncertain"
        if gate is not None and near(gate, gate_thresholds, self.band):
            return "uncertain"
        return "sample" if sampled(camera_id, frame_id, self.ok_fraction) else ""


@dataclass
class Record:
    """One frame to write: its pixels, the draft masks and what the sidecar says."""

    camera_id: str
    frame_id: int
    received_ns: int
    pixels: np.ndarray  # (H, W) uint8
    masks: np.ndarray | None  # (K, H, W) 0/1, None when no prediction (an ERROR)
    scores: np.ndarray | None  # (K, H, W) uint8 scores, to resolve overlaps in the label map
    class_ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        when = datetime.fromtimestamp(self.received_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%S%f")
        camera = re.sub(r"[^A-Za-z0-9_.-]", "-", self.camera_id)[:64] or "camera"
        return f"{when}_{camera}_{self.frame_id:012d}"


class TokenBucket:
    """At most `rate` events per second on average, bursts of up to `rate` (>= 1)."""

    def __init__(self, rate: float, clock=time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.capacity = max(1.0, rate)
        self.tokens, self.stamp = self.capacity, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Recorder:
    """The record stage: `offer` from any thread (never blocks), `run` on its own."""

    name = "record"

    def __init__(self, root: str | Path, policy: RecordPolicy, quota_bytes: int,
                 counters: DaemonCounters | None = None, queue_size: int = 64) -> None:
        self.root = Path(root)
        self.policy = policy
        self.quota_bytes = quota_bytes
        self.counters = counters
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=queue_size)
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()  # no more offers: write what is queued, then end
        for folder in FOLDERS:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._kept: deque[tuple[str, int]] = deque(self._existing())  # (stem, bytes), oldest first
        self.bytes = sum(size for _, size in self._kept)
        self._enforce_quota()

    def _paths(self, stem: str) -> list[Path]:
        return [self.root / "images" / f"{stem}.png", self.root / "images" / f"{stem}.json",
                self.root / "masks" / f"{stem}.png", self.root / "meta" / f"{stem}.json"]

    def _existing(self) -> list[tuple[str, int]]:
        """Records already in the folder (from an earlier run), oldest first."""
        kept = []
        for meta in sorted((self.root / "meta").glob("*.json")):
            size = sum(p.stat().st_size for p in self._paths(meta.stem) if p.exists())
            kept.append((meta.stem, size))
        return kept

    # -- from the decide / shadow stages -------------------------------------------------
    def consider(self, decided: Decided) -> str:
        """Apply the policy to one decided frame and queue it when picked; the reason
        ("" when not picked). Cheap on the decide thread, which runs it for every frame:
        the frame's maxima against the thresholds it was scored at, and a copy of the
        scores only for a picked frame with a defect."""
        frame, scores, gate = decided.frame, decided.scores, decided.gate
        reason = self.policy.reason(
            failed=decided.failed, verdict=decided.verdict,
            maxima=None if scores is None else scores.maxima,
            thresholds=None if scores is None else scores.thresholds, gate=gate,
            gate_thresholds=None if gate is None else
            np.array([c.gate_threshold for c in decided.classes]),
            camera_id=frame.header.camera_id, frame_id=frame.header.frame_id)
        decided.recorded = self.keep(decided, reason) if reason else ""
        return decided.recorded

    def keep(self, decided: Decided, reason: str, **extra: Any) -> str:
        """Queue a decided frame for writing (the policy picked it for `reason`, or the
        shadow stage saw a disagreement); `extra` goes into its sidecar."""
        masks, scores = decided.masks, decided.scores
        defect = masks is not None and bool(masks.any())
        meta = {key: decided.result[key] for key in SIDECAR_FIELDS if key in decided.result}
        meta.update(bundle=str(decided.model.bundle.root), **extra)
        record = Record(decided.frame.header.camera_id, decided.frame.header.frame_id,
                        decided.frame.received_ns, decided.frame.pixels,
                        masks if defect else None,
                        # a backend may reuse its output buffers for the next batch
                        scores.scores.copy() if defect and scores is not None else None,
                        [c.id for c in decided.classes], meta)
        return reason if self.offer(record, reason) else ""

    def offer(self, record: Record, reason: str) -> bool:
        """Queue `record` (picked for `reason`) for writing; False when it was dropped
        (rate limit or a full queue), which is counted."""
        record.meta["recorded_because"] = reason
        with self._lock:
            bucket = self._buckets.get(record.camera_id)
            if bucket is None and self.policy.rate_per_s > 0:
                bucket = self._buckets[record.camera_id] = TokenBucket(self.policy.rate_per_s)
            if bucket is not None and not bucket.take():
                self._dropped("rate")
                return False
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped("queue_full")
            return False
        return True

    def _dropped(self, why: str) -> None:
        if self.counters is not None:
            self.counters.record_dropped(why)

    # -- the stage's thread --------------------------------------------------------------
    def run(self) -> None:
        """Write queued records until `closed` is set and the queue is empty."""
        while True:
            try:
                record = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self.closed.is_set():
                    return
                continue
            try:
                self.write(record)
            except Exception:  # a full or failing disk must not stop the daemon
                log.exception("recording frame %s of %s failed", record.frame_id,
                              record.camera_id)
                self._dropped("write_failed")

    def write(self, record: Record) -> str:
        """Write one record's files; the stem written."""
        stem = record.stem
        image_png, labelme_json, mask_png, meta_json = self._paths(stem)
        masks = record.masks
        if masks is None:  # no defect predicted (or no prediction): an empty draft
            masks = np.zeros((len(record.class_ids), *record.pixels.shape), np.uint8)
        # where classes overlap the label map keeps the more probable (masks alone: the first)
        labels = label_map(masks if record.scores is None else record.scores, masks,
                           record.class_ids)
        size = write_file_atomically(image_png, png(np.ascontiguousarray(record.pixels)))
        size += write_file_atomically(mask_png, png(labels))
        document = labelme_document(masks, record.class_ids, image_png.name,
                                    flags={"draft": True})
        size += write_file_atomically(labelme_json, json_bytes(document))
        body = {"camera_id": record.camera_id, "frame_id": record.frame_id,
                "received_ns": record.received_ns, "image": f"images/{image_png.name}",
                "draft": {"labelme": f"images/{labelme_json.name}",
                          "mask": f"masks/{mask_png.name}"},
                **record.meta}
        size += write_file_atomically(meta_json, json_bytes(body))  # last: then it exists
        self._kept.append((stem, size))
        self.bytes += size
        if self.counters is not None:
            self.counters.recorded(record.camera_id, record.meta["recorded_because"])
        self._enforce_quota()
        return stem

    def _enforce_quota(self) -> None:
        while self.bytes > self.quota_bytes and self._kept:
            stem, size = self._kept.popleft()
            for path in reversed(self._paths(stem)):  # the sidecar first: then it is gone
                path.unlink(missing_ok=True)
            self.bytes -= size
            if self.counters is not None:
                self.counters.record_deleted()
        if self.counters is not None:
            self.counters.record_bytes(self.bytes)

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.root), "records": len(self._kept), "bytes": self.bytes,
                "quota_bytes": self.quota_bytes, "queued": self._queue.qsize()}


def read_meta(root: str | Path) -> list[dict[str, Any]]:
    """Every record's sidecar under a recording folder, oldest first."""
    return [json.loads(p.read_text()) for p in sorted((Path(root) / "meta").glob("*.json"))]


__all__ = ["REASONS", "Record", "RecordPolicy", "Recorder", "TokenBucket", "near",
           "read_meta", "sampled"]

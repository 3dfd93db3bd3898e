"""Receive stage: frame messages off the input socket, decoded, cut to the camera's region
of interest, checked for gaps (SUB mode), into the per-camera queues.

Every message received ends as exactly one of a result, a drop event or an error event
(docs/protocol.md). This stage emits the errors (malformed messages) and the drops it
causes (full queues, ids that never arrived); the rest go on as frames.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from lineside.edge import protocol
from lineside.edge.config import ServeConfig
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.frame_queues import FrameQueues

POLL_MS = 100
MAX_GAP_EVENTS = 1000  # a larger SUB gap is reported as one range event after these

Emit = Callable[[dict[str, Any]], None]


class GapDetector:
    """SUB drops silently under load: which frame ids of a camera never arrived."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def missing(self, camera_id: str, frame_id: int) -> range:
        last = self._last.get(camera_id)
        self._last[camera_id] = max(frame_id, last if last is not None else -1)
        if last is None or frame_id <= last + 1:
            return range(0)
        return range(last + 1, frame_id)


def gap_events(camera_id: str, missing: range) -> list[dict[str, Any]]:
    """Drop events for ids that never arrived: one per id, then one range event."""
    reason = "never arrived (gap in the SUB stream)"
    events: list[dict[str, Any]] = [
        {"kind": "drop", "camera_id": camera_id, "frame_id": lost, "reason": reason}
        for lost in missing[:MAX_GAP_EVENTS]]
    if len(missing) > MAX_GAP_EVENTS:
        events.append({"kind": "drop", "camera_id": camera_id, "frame_id": None,
                       "frame_ids": [missing[MAX_GAP_EVENTS], missing[-1]],
                       "reason": reason.replace(")", ", range)")})
    return events


def apply_roi(frame: protocol.Frame, roi: list[int] | None) -> protocol.Frame:
    """The frame cut to a camera's [x, y, width, height]; FrameError when it does not fit."""
    if roi is None:
        return frame
    x, y, w, h = roi
    height, width = frame.pixels.shape
    if x + w > width or y + h > height:
        raise protocol.FrameError(f"camera ROI {roi} does not fit a {height}x{width} frame",
                                  frame.header.camera_id, frame.header.frame_id)
    frame.pixels = frame.pixels[y:y + h, x:x + w]
    return frame


class ReceiveStage:
    name = "receive"

    def __init__(self, config: ServeConfig, context: zmq.Context,
                 queues: FrameQueues[protocol.Frame], counters: DaemonCounters,
                 emit: Emit) -> None:
        self.config = config
        self.context = context
        self.queues = queues
        self.counters = counters
        self.emit = emit
        self.gaps = GapDetector()
        self.accepting = threading.Event()

    def _open(self) -> zmq.Socket:
        sub = self.config.input_mode == "sub"
        sock = self.context.socket(zmq.SUB if sub else zmq.PULL)
        if sub:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 64)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        sock.setsockopt(zmq.LINGER, 0)
        for endpoint in self.config.input:
            sock.connect(endpoint) if sub else sock.bind(endpoint)
        return sock

    def run(self, stop: threading.Event) -> None:
        sock = self._open()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        self.accepting.set()
        try:
            while not stop.is_set():
                if poller.poll(POLL_MS):
                    self.accept(sock.recv_multipart(copy=True))
            # Frames already queued in the socket were sent to us: serve them too.
            while poller.poll(0):
                self.accept(sock.recv_multipart(copy=True))
        finally:
            self.accepting.clear()
            sock.close()
            self.queues.close()

    def accept(self, parts: list[bytes]) -> None:
        received_ns = time.time_ns()
        began = time.perf_counter()
        try:
            frame = protocol.parse_frame(parts, received_ns)
            frame = apply_roi(frame, self.config.for_camera(frame.header.camera_id).roi)
        except protocol.FrameError as exc:
            camera = exc.camera_id or "unknown"
            self.counters.received(camera)
            self.counters.malformed(camera)
            self.emit({"kind": "error", "camera_id": exc.camera_id, "frame_id": exc.frame_id,
                       "reason": exc.reason, "received_ns": received_ns})
            return
        header = frame.header
        self.counters.received(header.camera_id)
        self.counters.stage_time("decode", time.perf_counter() - began)
        if self.config.input_mode == "sub":
            missing = self.gaps.missing(header.camera_id, header.frame_id)
            if missing:
                self.counters.dropped(header.camera_id, "never_arrived", len(missing))
                for event in gap_events(header.camera_id, missing):
                    self.emit(event)
        overload = self.config.for_camera(header.camera_id).overload
        for dropped in self.queues.put(header.camera_id, frame):
            self.counters.dropped(dropped.header.camera_id, "overload")
            self.emit({"kind": "drop", "camera_id": dropped.header.camera_id,
                       "frame_id": dropped.header.frame_id, "reason": f"overload: {overload}",
                       "received_ns": dropped.received_ns})

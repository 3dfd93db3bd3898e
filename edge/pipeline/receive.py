"""Receive stage: frame messages off the input socket, decoded, cut to the camera's region
of interest, checked for gaps (SUB mode), into the per-camera queues.

Every message received ends as exactly one of a result, a drop event or an error event
(docs/protocol.md). This stage emits the errors (malformed messages) and the drops it
causes (full queues, ids that never arrived); the rest go on as frames.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from lineside.edge import protocol
from lineside.edge.config import ServeConfig
from lineside.edge.curve import curve_server
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.frame_queues import FrameQueues
from lineside.edge.pipeline.watchdog import InFlight, Progress

POLL_MS = 100
MAX_GAP_EVENTS = 1000  # a larger SUB gap is reported as one range event after these

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class IdCheck:
    """What one frame id says about its camera's stream."""

    missing: range = range(0)  # ids that never arrived (SUB mode)
    issue: str = ""  # "" | "repeated" | "backwards" | "restart"
    previous: int | None = None  # the highest id seen before this one


class FrameIdTracker:
    """Frame ids per camera: gaps (SUB drops silently under load; a camera bridge that
    sends the camera's own block ids shows what was lost before it), repeats, ids that go
    backwards, and restarts (a new `stream_id`, or in SUB mode any id that goes backwards:
    a camera or bridge that starts counting from 0 again). After a restart, gaps are
    counted within the new stream, so they stay exact across restarts."""

    def __init__(self, report_gaps: bool) -> None:
        self.report_gaps = report_gaps  # for every camera (SUB mode)
        self._last: dict[str, int] = {}
        self._stream: dict[str, str | None] = {}

    def observe(self, camera_id: str, frame_id: int, stream_id: str | None = None,
                report_gaps: bool = False) -> IdCheck:
        last = self._last.get(camera_id)
        restarted = camera_id in self._stream and stream_id != self._stream[camera_id]
        self._stream[camera_id] = stream_id
        if last is None or frame_id > last or restarted:
            self._last[camera_id] = frame_id
            if restarted:
                return IdCheck(issue="restart", previous=last)
            if last is not None and (self.report_gaps or report_gaps) and frame_id > last + 1:
                return IdCheck(missing=range(last + 1, frame_id))
            return IdCheck()
        if frame_id == last:
            return IdCheck(issue="repeated", previous=last)
        # Backwards: judge what follows within the new count (a restart without a
        # stream_id), instead of calling every later frame out of order.
        self._last[camera_id] = frame_id
        return IdCheck(issue="restart" if self.report_gaps else "backwards", previous=last)


ISSUES = {"repeated": "frame id repeated: this camera already sent it",
          "backwards": "frame id went backwards (a camera restart without a new stream_id, "
                       "or two senders with one camera_id)",
          "restart": "the camera's frame ids started again (a camera or bridge restart)"}


def gap_events(camera_id: str, missing: range, sub: bool = True) -> list[dict[str, Any]]:
    """Drop events for ids that never arrived: one per id, then one range event."""
    reason = "never arrived (gap in the SUB stream)" if sub else \
        "never arrived (gap in the camera's own frame count, lost before the daemon)"
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
                 emit: Emit, in_flight: InFlight | None = None,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.context = context
        self.queues = queues
        self.counters = counters
        self.emit = emit
        self.in_flight = in_flight if in_flight is not None else InFlight()
        self.progress = progress or Progress(self.name)
        self.ids = FrameIdTracker(report_gaps=config.input_mode == "sub")
        self.accepting = threading.Event()
        self._serial = itertools.count(1)
        self.cameras: set[str] = set()  # admitted cameras: the only ones with state

    def _admit(self, camera_id: str) -> str:
        """Why frames of `camera_id` are refused ("" = admitted). Per-camera state
        (queues, metrics series, id tracking, the operator view) exists only for
        admitted cameras, so a flood of made-up ids leaves memory flat."""
        if camera_id in self.cameras:
            return ""
        allowed = self.config.camera_ids
        if allowed and camera_id not in allowed:
            return f"camera_id {camera_id!r} is not one of the configured cameras"
        if len(self.cameras) >= self.config.max_cameras:
            return (f"camera_id {camera_id!r} refused: already {len(self.cameras)} cameras "
                    f"(max_cameras)")
        self.cameras.add(camera_id)
        return ""

    def _label(self, camera_id: str | None) -> str:
        """The metrics label for a camera: its id once admitted, else `unknown`."""
        return camera_id if camera_id in self.cameras else "unknown"

    def _open(self) -> zmq.Socket:
        sub = self.config.input_mode == "sub"
        sock = self.context.socket(zmq.SUB if sub else zmq.PULL)
        if sub:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        if self.config.curve_on("input"):
            curve_server(sock, self.config.curve_secret)
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
                self.progress.beat()
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
            refused = self._admit(frame.header.camera_id)
            if refused:
                raise protocol.FrameError(refused, frame.header.camera_id,
                                          frame.header.frame_id)
            frame = apply_roi(frame, self.config.for_camera(frame.header.camera_id).roi)
        except protocol.FrameError as exc:
            camera = self._label(exc.camera_id)
            self.counters.received(camera)
            self.counters.malformed(camera)
            self.emit({"kind": "error", "camera_id": exc.camera_id, "frame_id": exc.frame_id,
                       "reason": exc.reason, "received_ns": received_ns})
            return
        header = frame.header
        self.counters.received(header.camera_id)
        self.counters.stage_time("decode", time.perf_counter() - began)
        self._check_ids(header)
        camera = self.config.for_camera(header.camera_id)
        frame.serial = next(self._serial)
        self.in_flight.add(frame, camera.deadline_ms)
        for dropped in self.queues.put(header.camera_id, frame):
            if not self.in_flight.settle(dropped.serial):
                continue  # it already got its fail-safe verdict at its deadline
            self.counters.dropped(dropped.header.camera_id, "overload")
            self.emit({"kind": "drop", "camera_id": dropped.header.camera_id,
                       "frame_id": dropped.header.frame_id,
                       "reason": f"overload: {camera.overload}",
                       "received_ns": dropped.received_ns})

    def _check_ids(self, header: protocol.FrameHeader) -> None:
        """Gap drops and frame-order events; the frame itself goes on to its verdict."""
        check = self.ids.observe(header.camera_id, header.frame_id, header.stream_id,
                                 self.config.for_camera(header.camera_id).report_gaps)
        if check.missing:
            self.counters.dropped(header.camera_id, "never_arrived", len(check.missing))
            for event in gap_events(header.camera_id, check.missing, self.ids.report_gaps):
                self.emit(event)
        if check.issue:
            self.counters.frame_order(header.camera_id, check.issue)
            self.emit({"kind": "frame_order", "issue": check.issue,
                       "camera_id": header.camera_id, "frame_id": header.frame_id,
                       "previous": check.previous, "stream_id": header.stream_id,
                       "reason": ISSUES[check.issue]})

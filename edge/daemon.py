"""The runtime daemon: frames in over ZeroMQ, verdicts and masks out.

Four stages, each a thread, joined by bounded queues (a full queue blocks the stage
before it, so backpressure reaches the camera's PUSH socket instead of growing memory):

    receive+decode -> tile+batch+infer -> stitch+decide -> publish

Every received message ends as exactly one of: a `reject` result, or an `event` of kind
`error` (malformed input). A backend failure gives the frames of that batch an ERROR
verdict. The ZeroMQ sockets are each owned by one thread, as ZeroMQ requires.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from lineside.edge import protocol, rle
from lineside.edge.backends import Backend, create_backend
from lineside.edge.bundle import Bundle, ClassSpec, load_bundle
from lineside.edge.config import ServeConfig
from lineside.edge.postprocess import (
    VERDICT_ERROR,
    decide,
    summarise,
    threshold_masks,
)
from lineside.edge.tiling import TileGrid, cut, make_grid, stitch

log = logging.getLogger("lineside.edge.daemon")

_END = object()  # end marker passed down the stages on shutdown
_POLL_MS = 100


class Counters:
    """Frame accounting shared by the stages; every field only grows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {"received": 0, "results": 0, "rejects": 0, "errors": 0,
                        "dropped": 0, "infer_failures": 0}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


@dataclass
class InferredFrame:
    frame: protocol.Frame
    grid: TileGrid
    tiles_out: np.ndarray | None  # (N, K, th, tw) probabilities; None when inference failed
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def _put(q: queue.Queue, item: Any) -> None:
    """Blocking put (the WAIT policy): a full queue holds the producer, never drops."""
    q.put(item)


class Daemon:
    def __init__(self, config: ServeConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.bundle: Bundle = load_bundle(config.bundle)
        self.classes = self._effective_classes(self.bundle, config)
        self.max_area = {c.id: config.max_area.get(c.id, 0) for c in self.classes}
        manifest = self.bundle.manifest
        self.tile_shape = (manifest.tile_height, manifest.tile_width)
        self.backend: Backend = create_backend(
            config.backend, self.bundle.model_path(config.precision), config.threads)
        self.counters = Counters()
        self.stop_event = threading.Event()
        self._decoded: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._inferred: queue.Queue = queue.Queue(maxsize=config.queue_size)
        # Publishing is cheap and results must never be dropped: this queue is larger.
        self._outbox: queue.Queue = queue.Queue(maxsize=config.queue_size * 8)
        self._grids: dict[tuple[int, int], TileGrid] = {}
        self._threads: list[threading.Thread] = []
        self._first_error: BaseException | None = None
        self.started_ns = time.time_ns()
        self._warm_up()

    @staticmethod
    def _effective_classes(bundle: Bundle, config: ServeConfig) -> list[ClassSpec]:
        return [ClassSpec(c.id, c.name, config.thresholds.get(c.id, c.threshold),
                          config.min_area.get(c.id, c.min_area))
                for c in bundle.manifest.classes]

    def _warm_up(self) -> None:
        """Run one batch before accepting frames, so the first frame is not slow."""
        tiles = np.zeros((1, self.bundle.manifest.in_channels, *self.tile_shape), np.uint8)
        self.backend.infer(tiles)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._receive_loop, "receive"), (self._infer_loop, "infer"),
                             (self._decide_loop, "decide"), (self._publish_loop, "publish")):
            thread = threading.Thread(target=self._guard(target), name=f"edge-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("serving %s on %s -> %s with %s", self.bundle.root, self.config.input,
                 self.config.output, self.backend.describe())

    def _guard(self, target):
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # keep the first error; stop the others
                log.exception("stage %s failed", threading.current_thread().name)
                self._first_error = self._first_error or exc
                self.stop_event.set()
        return run

    def stop(self) -> None:
        """Stop accepting frames; the stages drain what was accepted, then exit."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        self.backend.close()
        if self._first_error is not None:
            raise RuntimeError("a pipeline stage failed") from self._first_error

    # -- stages ----------------------------------------------------------------------
    def _receive_loop(self) -> None:
        sock = self.context.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, max(1, self.config.queue_size))
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.config.input)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self.stop_event.is_set():
                if not poller.poll(_POLL_MS):
                    continue
                self._accept(sock.recv_multipart(copy=True))
            # Frames already queued in the socket were sent to us: serve them too.
            while poller.poll(0):
                self._accept(sock.recv_multipart(copy=True))
        finally:
            sock.close()
            _put(self._decoded, _END)

    def _accept(self, parts: list[bytes]) -> None:
        self.counters.add("received")
        received_ns = time.time_ns()
        try:
            frame = protocol.parse_frame(parts, received_ns)
        except protocol.FrameError as exc:
            self.counters.add("errors")
            _put(self._outbox, (protocol.TOPIC_EVENT, {
                "kind": "error", "camera_id": exc.camera_id, "frame_id": exc.frame_id,
                "reason": exc.reason, "received_ns": received_ns}))
            return
        _put(self._decoded, frame)

    def _grid_for(self, shape: tuple[int, int]) -> TileGrid:
        grid = self._grids.get(shape)
        if grid is None:
            grid = self._grids[shape] = make_grid(shape, self.tile_shape)
        return grid

    def _next_batch(self) -> tuple[list[protocol.Frame], bool]:
        """Frames for one inference call: at least one, up to max_batch tiles or max_wait."""
        first = self._decoded.get()
        if first is _END:
            return [], True
        frames = [first]
        tiles = self._grid_for(first.pixels.shape).count
        deadline = time.monotonic() + self.config.max_wait_ms / 1000
        while tiles < self.config.max_batch:
            try:
                item = self._decoded.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _END:
                return frames, True
            frames.append(item)
            tiles += self._grid_for(item.pixels.shape).count
        return frames, False

    def _infer_loop(self) -> None:
        channels = self.bundle.manifest.in_channels
        done = False
        while not done:
            frames, done = self._next_batch()
            if not frames:
                break
            start = time.perf_counter()
            grids = [self._grid_for(f.pixels.shape) for f in frames]
            tiles = np.concatenate([cut(f.pixels, g) for f, g in zip(frames, grids, strict=True)])
            if channels != 1:
                tiles = np.repeat(tiles, channels, axis=1)
            try:
                outputs = np.concatenate([
                    self.backend.infer(np.ascontiguousarray(tiles[i:i + self.config.max_batch]))
                    for i in range(0, len(tiles), self.config.max_batch)])
                error = ""
            except Exception as exc:  # the frames get ERROR verdicts; the daemon goes on
                log.exception("inference failed for %d frame(s)", len(frames))
                self.counters.add("infer_failures")
                outputs, error = None, f"inference failed: {type(exc).__name__}: {exc}"
            infer_ms = (time.perf_counter() - start) * 1000
            offset = 0
            for frame, grid in zip(frames, grids, strict=True):
                part = None if outputs is None else outputs[offset:offset + grid.count]
                offset += grid.count
                _put(self._inferred, InferredFrame(frame, grid, part, error,
                                                   {"infer_ms": infer_ms}))
        _put(self._inferred, _END)

    def _decide_loop(self) -> None:
        while True:
            item = self._inferred.get()
            if item is _END:
                break
            for message in self._results_for(item):
                _put(self._outbox, message)
        _put(self._outbox, _END)

    def _results_for(self, item: InferredFrame) -> list[tuple[str, dict[str, Any]]]:
        header = item.frame.header
        base: dict[str, Any] = {
            "camera_id": header.camera_id, "frame_id": header.frame_id,
            "timestamp_ns": header.timestamp_ns, "received_ns": item.frame.received_ns,
        }
        if header.line_position is not None:
            base["line_position"] = header.line_position
        if item.tiles_out is None:
            return [(protocol.TOPIC_REJECT, {
                **base, "verdict": VERDICT_ERROR, "reasons": [item.error], "classes": {}})]
        probabilities = stitch(item.tiles_out, item.grid)
        masks = threshold_masks(probabilities, self.classes)
        summaries = summarise(probabilities, masks, self.classes)
        verdict, reasons = decide(summaries, self.max_area)
        reject = {**base, "verdict": verdict, "reasons": reasons,
                  "classes": {str(s.class_id): s.to_json() for s in summaries},
                  "infer_ms": round(item.timings["infer_ms"], 3)}
        messages = [(protocol.TOPIC_REJECT, reject)]
        if self.config.publish_masks:
            messages.append((protocol.TOPIC_MASK, {
                **base, "height": item.grid.frame_height, "width": item.grid.frame_width,
                "encoding": "rle",
                "classes": {str(c.id): rle.encode(masks[k]) for k, c in enumerate(self.classes)},
            }))
        return messages

    def _publish_loop(self) -> None:
        sock = self.context.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 2000)  # flush the last results on shutdown
        sock.bind(self.config.output)
        next_heartbeat = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_heartbeat:
                    sock.send_multipart(self._heartbeat())
                    next_heartbeat = now + self.config.heartbeat_s
                try:
                    message = self._outbox.get(timeout=min(0.1, self.config.heartbeat_s))
                except queue.Empty:
                    continue
                if message is _END:
                    sock.send_multipart(self._heartbeat(final=True))
                    break
                topic, body = message
                if topic == protocol.TOPIC_REJECT:
                    self._account_result(body)
                sock.send_multipart(protocol.encode_message(topic, body))
        finally:
            sock.close()

    def _account_result(self, body: dict[str, Any]) -> None:
        # Latency is stamped at the last moment before the result leaves.
        published_ns = time.time_ns()
        body["published_ns"] = published_ns
        body["latency_ms"] = round((published_ns - body["received_ns"]) / 1e6, 3)
        self.counters.add("results")
        if body["verdict"] == "REJECT":
            self.counters.add("rejects")

    def _heartbeat(self, final: bool = False) -> list[bytes]:
        return protocol.encode_message(protocol.TOPIC_EVENT, {
            "kind": "heartbeat", "final": final, "time_ns": time.time_ns(),
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 3),
            "counters": self.counters.snapshot(),
            "queues": {"decoded": self._decoded.qsize(), "inferred": self._inferred.qsize(),
                       "outbox": self._outbox.qsize()},
            "model": self.bundle.manifest.name, **self.backend.describe(),
        })

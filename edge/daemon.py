"""The runtime daemon: frames in over ZeroMQ, verdicts, masks and events out.

Stages, each a thread, joined by bounded queues:

    receive+decode -> per-camera queues -> tile+batch -> infer -> stitch+decide -> publish

The backend only ever runs inference: decoding, tiling and post-processing of other
frames happen on other threads while a batch runs. Every received message ends as exactly
one of: a `reject` result, an `event` of kind `drop`, or an `event` of kind `error`
(docs/protocol.md). ZeroMQ sockets are each owned by one thread, as ZeroMQ requires.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import zmq
import zmq.auth

from lineside.edge import protocol, rle
from lineside.edge.backends import Backend, create_backend
from lineside.edge.backends.base import infer_in_batches
from lineside.edge.backends.screened import (
    create_screened_backend,
    tiles_to_segment,
    with_screen_gate,
)
from lineside.edge.bundle import Bundle, BundleError, ClassSpec, load_bundle
from lineside.edge.config import CameraSettings, ServeConfig
from lineside.edge.frame_queues import FrameQueues
from lineside.edge.metrics import DaemonMetrics, MetricsServer
from lineside.edge.postprocess import (
    VERDICT_REJECT,
    apply_gate,
    decide,
    find_defects,
    label_map,
    threshold_masks,
)
from lineside.edge.tiling import TileGrid, cut, make_grid, stitch

log = logging.getLogger("lineside.edge.daemon")

_END = object()  # end marker passed down the stages on shutdown
_POLL_MS = 100
MAX_GAP_EVENTS = 1000  # a larger SUB gap is reported as one range event after these


class Counters:
    """Frame accounting shared by the stages; every field only grows."""

    NAMES = ("received", "results", "rejects", "errors", "dropped", "infer_failures",
             "deadline_missed", "never_arrived")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


@dataclass
class LoadedModel:
    """A verified bundle with a warmed-up backend: what a hot swap replaces as one unit."""

    bundle: Bundle
    backend: Backend
    # With a screening classifier: its per-class thresholds, which then gate the classes
    # (the frame presence the runtime reports is the classifier's).
    screen_thresholds: list[float] | None = None

    @property
    def tile_shape(self) -> tuple[int, int]:
        return (self.bundle.manifest.tile_height, self.bundle.manifest.tile_width)

    def classes_for(self, camera: CameraSettings) -> list[ClassSpec]:
        classes = self.bundle.manifest.classes
        if self.screen_thresholds is not None:
            classes = with_screen_gate(classes, self.screen_thresholds)
        # `replace` keeps every other field, the presence gate's threshold included.
        return [replace(c, threshold=camera.thresholds.get(c.id, c.threshold),
                        min_area=camera.min_area.get(c.id, c.min_area))
                for c in classes]

    def describe(self) -> dict[str, str]:
        return {"model": self.bundle.manifest.name, "bundle": str(self.bundle.root),
                **self.backend.describe()}


def load_model(path: str, config: ServeConfig) -> LoadedModel:
    """Verify, load and warm a bundle; raises before anything is switched over."""
    bundle = load_bundle(path)
    if bundle.manifest.task != "segmentation":
        raise BundleError(f"{path} holds a {bundle.manifest.task} model (a screening "
                          "classifier); edge-serve runs segmentation bundles")
    backend = create_backend(config.backend, bundle, config.precision, config.threads)
    screen_thresholds: list[float] | None = None
    if config.screen:
        backend = create_screened_backend(
            config.screen, bundle, backend, config.backend,
            config.screen_precision or config.precision, config.threads,
            config.screen_thresholds)
        screen_thresholds = list(backend.thresholds)
    if config.inject_faults:
        from lineside.edge.backends.fault_injection import FaultInjectingBackend

        backend = FaultInjectingBackend(backend, config.inject_faults)
    manifest = bundle.manifest
    # One batch before serving, so the first frame is not slow (and a broken model fails
    # here, not on the line).
    tile = (manifest.in_channels, manifest.tile_height, manifest.tile_width)
    backend.warm_up(tile, config.max_batch)
    out = backend.infer(np.zeros((1, *tile), np.uint8))
    if out.shape[1] != len(manifest.classes):
        raise RuntimeError(f"model gives {out.shape[1]} classes, manifest lists "
                           f"{len(manifest.classes)}")
    return LoadedModel(bundle, backend, screen_thresholds)


@dataclass
class Batch:
    frames: list[protocol.Frame]
    grids: list[TileGrid]
    tiles: np.ndarray
    model: LoadedModel
    formed_ns: int


@dataclass
class InferredFrame:
    frame: protocol.Frame
    grid: TileGrid
    model: LoadedModel
    tiles_out: np.ndarray | None  # (N, K, th, tw) probabilities; None when inference failed
    presence: np.ndarray | None = None  # (K,) frame presence (max over tiles), gated models
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)


class Daemon:
    def __init__(self, config: ServeConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.model = load_model(config.bundle, config)
        self.counters = Counters()
        self.metrics = DaemonMetrics()
        self.metrics.model.info(self.model.describe())
        self.stop_event = threading.Event()
        self._accepting = threading.Event()
        self._swap_lock = threading.Lock()
        self._queues: FrameQueues[protocol.Frame] = FrameQueues(self._camera_limits)
        self._batches: queue.Queue = queue.Queue(maxsize=2)
        self._inferred: queue.Queue = queue.Queue(maxsize=16)
        # Publishing is cheap and results must never be dropped: this queue is larger.
        self._outbox: queue.Queue = queue.Queue(maxsize=4096)
        self._grids: dict[tuple[tuple[int, int], tuple[int, int]], TileGrid] = {}
        self._last_frame_id: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._first_error: BaseException | None = None
        self._metrics_server: MetricsServer | None = None
        self._authenticator = None
        self.view = None  # the operator view, when --http is on
        self.started_ns = time.time_ns()

    def model_description(self) -> dict[str, str]:
        return self.model.describe()

    def _camera_limits(self, camera_id: str) -> tuple[str, int]:
        settings = self.config.for_camera(camera_id)
        return settings.overload, settings.queue_size

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        stages = [(self._receive_loop, "receive"), (self._batch_loop, "batch"),
                  (self._infer_loop, "infer"), (self._decide_loop, "decide"),
                  (self._publish_loop, "publish")]
        if self.config.control:
            stages.append((self._control_loop, "control"))
        for target, name in stages:
            thread = threading.Thread(target=self._guard(target), name=f"edge-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.config.curve_secret:
            self._start_curve_authenticator()
        if self.config.http:
            from lineside.edge.operator_view import OperatorView

            self.view = OperatorView(
                self.config.http,
                classes=lambda: [(c.id, c.name) for c in self.model.bundle.manifest.classes],
                describe=self.model_description, counters=self.counters.snapshot)
            self.view.start()
        if self.config.metrics:
            self._metrics_server = MetricsServer(self.config.metrics, self.metrics,
                                                 self.healthy, self.ready)
            self._metrics_server.start()
        log.info("serving %s on %s (%s) -> %s", self.model.describe(), self.config.input,
                 self.config.input_mode, self.config.output)

    def _start_curve_authenticator(self) -> None:
        """ZAP handler that admits only the configured gateways' public keys."""
        from zmq.auth.thread import ThreadAuthenticator

        self._authenticator = ThreadAuthenticator(self.context)
        self._authenticator.start()
        self._authenticator.configure_curve(
            domain="*", location=self.config.curve_clients or zmq.auth.CURVE_ALLOW_ANY)

    def _secure(self, sock: zmq.Socket) -> None:
        if not self.config.curve_secret:
            return
        public, secret = zmq.auth.load_certificate(self.config.curve_secret)
        if secret is None:
            raise RuntimeError(f"{self.config.curve_secret} holds no secret key")
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server else None

    def healthy(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads) \
            and self._first_error is None

    def ready(self) -> bool:
        return self.healthy() and self._accepting.is_set() and not self.stop_event.is_set()

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
        if self._metrics_server:
            self._metrics_server.stop()
        if self._authenticator is not None:
            self._authenticator.stop()
        if self.view is not None:
            self.view.stop()
        if self._first_error is not None:
            raise RuntimeError("a pipeline stage failed") from self._first_error

    # -- hot swap --------------------------------------------------------------------
    def swap_model(self, path: str | None = None) -> dict[str, Any]:
        """Load and warm a bundle beside the running one, then switch between batches.
        On any failure the running model keeps serving (roll back = never switched)."""
        path = path or self.config.bundle
        with self._swap_lock:
            began = time.monotonic()
            try:
                candidate = load_model(path, self.config)
            except Exception as exc:
                self.metrics.swaps.labels("rolled_back").inc()
                log.error("hot swap to %s failed, still serving %s: %s", path,
                          self.model.bundle.root, exc)
                self._event({"kind": "model", "status": "rolled_back", "bundle": str(path),
                             "reason": str(exc), "serving": str(self.model.bundle.root)})
                return {"ok": False, "error": str(exc), "serving": str(self.model.bundle.root)}
            previous = self.model
            self.model = candidate  # the batcher picks it up for its next batch
            self.metrics.model.info(candidate.describe())
            self.metrics.swaps.labels("ok").inc()
            seconds = round(time.monotonic() - began, 3)
            log.info("hot swap %s -> %s in %.2f s", previous.bundle.root, path, seconds)
            self._event({"kind": "model", "status": "swapped", "bundle": str(path),
                         "previous": str(previous.bundle.root), "load_s": seconds})
            return {"ok": True, "serving": str(path), "load_s": seconds}

    def _control_loop(self) -> None:
        sock = self.context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.config.control)
        try:
            while not self.stop_event.is_set():
                if not sock.poll(_POLL_MS):
                    continue
                try:
                    request = protocol.json_loads_limited(sock.recv())
                    command = request.get("command") if isinstance(request, dict) else None
                except ValueError as exc:
                    sock.send_json({"ok": False, "error": f"bad request: {exc}"})
                    continue
                if command == "swap":
                    reply = self.swap_model(request.get("bundle"))
                elif command == "status":
                    reply = {"ok": True, **self.model.describe(),
                             "counters": self.counters.snapshot()}
                else:
                    reply = {"ok": False, "error": f"unknown command {command!r}; "
                             "known: swap, status"}
                sock.send_json(reply)
        finally:
            sock.close()

    # -- stages ----------------------------------------------------------------------
    def _event(self, body: dict[str, Any]) -> None:
        self._outbox.put((protocol.TOPIC_EVENT, body))

    def _open_input(self) -> zmq.Socket:
        if self.config.input_mode == "sub":
            sock = self.context.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            connect = True
        else:
            sock = self.context.socket(zmq.PULL)
            connect = False
        sock.setsockopt(zmq.RCVHWM, 64)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        sock.setsockopt(zmq.LINGER, 0)
        for endpoint in self.config.input:
            sock.connect(endpoint) if connect else sock.bind(endpoint)
        return sock

    def _receive_loop(self) -> None:
        sock = self._open_input()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        self._accepting.set()
        try:
            while not self.stop_event.is_set():
                if poller.poll(_POLL_MS):
                    self._accept(sock.recv_multipart(copy=True))
            # Frames already queued in the socket were sent to us: serve them too.
            while poller.poll(0):
                self._accept(sock.recv_multipart(copy=True))
        finally:
            self._accepting.clear()
            sock.close()
            self._queues.close()

    def _accept(self, parts: list[bytes]) -> None:
        received_ns = time.time_ns()
        began = time.perf_counter()
        self.counters.add("received")
        try:
            frame = protocol.parse_frame(parts, received_ns)
            frame = self._apply_roi(frame)
        except protocol.FrameError as exc:
            self.counters.add("errors")
            camera = exc.camera_id or "unknown"
            self.metrics.frames_received.labels(camera).inc()
            self.metrics.frames_errors.labels(camera).inc()
            self._event({"kind": "error", "camera_id": exc.camera_id,
                         "frame_id": exc.frame_id, "reason": exc.reason,
                         "received_ns": received_ns})
            return
        header = frame.header
        self.metrics.frames_received.labels(header.camera_id).inc()
        self.metrics.stage_seconds.labels("decode").observe(time.perf_counter() - began)
        if self.config.input_mode == "sub":
            self._report_gap(header.camera_id, header.frame_id)
        for dropped in self._queues.put(header.camera_id, frame):
            self._drop(dropped, "overload: " + self.config.for_camera(header.camera_id).overload)

    def _apply_roi(self, frame: protocol.Frame) -> protocol.Frame:
        roi = self.config.for_camera(frame.header.camera_id).roi
        if roi is None:
            return frame
        x, y, w, h = roi
        height, width = frame.pixels.shape
        if x + w > width or y + h > height:
            raise protocol.FrameError(f"camera ROI {roi} does not fit a {height}x{width} frame",
                                      frame.header.camera_id, frame.header.frame_id)
        frame.pixels = frame.pixels[y:y + h, x:x + w]
        return frame

    def _report_gap(self, camera_id: str, frame_id: int) -> None:
        """SUB drops silently under load: name every frame id that never arrived."""
        last = self._last_frame_id.get(camera_id)
        self._last_frame_id[camera_id] = max(frame_id, last if last is not None else -1)
        if last is None or frame_id <= last + 1:
            return
        missing = range(last + 1, frame_id)
        self.counters.add("dropped", len(missing))
        self.counters.add("never_arrived", len(missing))
        self.metrics.frames_dropped.labels(camera_id, "never_arrived").inc(len(missing))
        for lost in missing[:MAX_GAP_EVENTS]:
            self._event({"kind": "drop", "camera_id": camera_id, "frame_id": lost,
                         "reason": "never arrived (gap in the SUB stream)"})
        if len(missing) > MAX_GAP_EVENTS:
            self._event({"kind": "drop", "camera_id": camera_id, "frame_id": None,
                         "frame_ids": [missing[MAX_GAP_EVENTS], missing[-1]],
                         "reason": "never arrived (gap in the SUB stream, range)"})

    def _drop(self, frame: protocol.Frame, reason: str) -> None:
        self.counters.add("dropped")
        self.metrics.frames_dropped.labels(frame.header.camera_id, reason.split(":")[0]).inc()
        self._event({"kind": "drop", "camera_id": frame.header.camera_id,
                     "frame_id": frame.header.frame_id, "reason": reason,
                     "received_ns": frame.received_ns})

    def _grid_for(self, shape: tuple[int, int], tile: tuple[int, int]) -> TileGrid:
        grid = self._grids.get((shape, tile))
        if grid is None:
            grid = self._grids[(shape, tile)] = make_grid(shape, tile)
        return grid

    def _batch_loop(self) -> None:
        while True:
            model = self.model
            frames = self._queues.take(
                cost=lambda f, tile=model.tile_shape: self._grid_for(f.pixels.shape, tile).count,
                budget=self.config.max_batch, max_wait_s=self.config.max_wait_ms / 1000)
            if frames is None:
                break
            began = time.perf_counter()
            grids = [self._grid_for(f.pixels.shape, model.tile_shape) for f in frames]
            channels = model.bundle.manifest.in_channels
            tiles = np.concatenate([cut(f.pixels, g, channels)
                                    for f, g in zip(frames, grids, strict=True)])
            self.metrics.stage_seconds.labels("tile").observe(time.perf_counter() - began)
            self._batches.put(Batch(frames, grids, tiles, model, time.time_ns()))
        self._batches.put(_END)

    def _infer_loop(self) -> None:
        while (batch := self._batches.get()) is not _END:
            began = time.perf_counter()
            try:
                outputs, presence = infer_in_batches(batch.model.backend, batch.tiles,
                                                     self.config.max_batch)
                error = ""
            except Exception as exc:  # the frames get ERROR verdicts; the daemon goes on
                log.exception("inference failed for %d frame(s)", len(batch.frames))
                self.counters.add("infer_failures")
                outputs, presence = None, None
                error = f"inference failed: {type(exc).__name__}: {exc}"
            infer_s = time.perf_counter() - began
            self.metrics.stage_seconds.labels("infer").observe(infer_s)
            self.metrics.batch_tiles.observe(len(batch.tiles))
            if presence is not None and batch.model.screen_thresholds is not None:
                flagged = presence >= np.asarray(batch.model.screen_thresholds, np.float32)
                segmented = int(tiles_to_segment(flagged).sum())
                self.metrics.screen_tiles.labels("segmented").inc(segmented)
                self.metrics.screen_tiles.labels("skipped").inc(len(presence) - segmented)
            offset = 0
            for frame, grid in zip(batch.frames, batch.grids, strict=True):
                part = None if outputs is None else outputs[offset:offset + grid.count]
                frame_presence = None if presence is None else \
                    presence[offset:offset + grid.count].max(axis=0)
                offset += grid.count
                self._inferred.put(InferredFrame(frame, grid, batch.model, part, frame_presence,
                                                 error, {"infer_ms": infer_s * 1000}))
        self._inferred.put(_END)

    def _decide_loop(self) -> None:
        while (item := self._inferred.get()) is not _END:
            began = time.perf_counter()
            for message in self._results_for(item):
                self._outbox.put(message)
            self.metrics.stage_seconds.labels("postprocess").observe(time.perf_counter() - began)
        self._outbox.put(_END)

    def _results_for(self, item: InferredFrame) -> list[tuple[str, dict[str, Any]]]:
        header = item.frame.header
        camera = self.config.for_camera(header.camera_id)
        base: dict[str, Any] = {
            "camera_id": header.camera_id, "frame_id": header.frame_id,
            "timestamp_ns": header.timestamp_ns, "received_ns": item.frame.received_ns,
        }
        if header.line_position is not None:
            base["line_position"] = header.line_position
        if item.tiles_out is None:
            return [(protocol.TOPIC_REJECT, {
                **base, "verdict": self.config.failsafe_verdict, "reasons": [item.error],
                "classes": {}, "defects": []})]
        classes = item.model.classes_for(camera)
        probabilities = stitch(item.tiles_out, item.grid)
        masks = apply_gate(threshold_masks(probabilities, classes), item.presence, classes)
        summaries, defects = find_defects(probabilities, masks, classes)
        verdict, reasons = decide(summaries, camera.rule)
        elapsed_ms = (time.time_ns() - item.frame.received_ns) / 1e6
        if camera.deadline_ms and elapsed_ms > camera.deadline_ms:
            self.counters.add("deadline_missed")
            reasons = [f"deadline missed: {elapsed_ms:.1f} ms > {camera.deadline_ms:g} ms",
                       *reasons]
            verdict = self.config.failsafe_verdict
        reject = {**base, "verdict": verdict, "reasons": reasons,
                  "classes": {str(s.class_id): s.to_json() for s in summaries},
                  "defects": [d.to_json() for d in defects],
                  "model": item.model.bundle.manifest.name,
                  "infer_ms": round(item.timings["infer_ms"], 3)}
        if item.presence is not None:
            reject["presence"] = {str(c.id): round(float(item.presence[k]), 4)
                                  for k, c in enumerate(classes)}
        messages = [(protocol.TOPIC_REJECT, reject)]
        if self.view is not None:
            self.view.offer(header.camera_id, header.frame_id, item.frame.pixels, masks, verdict)
        if self.config.publish_masks:
            messages.append((protocol.TOPIC_MASK, self._mask_body(base, item, probabilities,
                                                                  masks, classes)))
        return messages

    def _mask_body(self, base: dict[str, Any], item: InferredFrame, probabilities: np.ndarray,
                   masks: np.ndarray, classes: list[ClassSpec]) -> dict[str, Any]:
        body = {**base, "height": item.grid.frame_height, "width": item.grid.frame_width,
                "encoding": self.config.mask_format}
        if self.config.mask_format == "png":
            labels = label_map(probabilities, masks, [c.id for c in classes])
            ok, png = cv2.imencode(".png", labels)
            if not ok:
                raise RuntimeError("OpenCV could not encode the label map")
            body[protocol.ATTACHMENT] = png.tobytes()
        else:
            body["classes"] = {str(c.id): rle.encode(masks[k]) for k, c in enumerate(classes)}
        return body

    def _publish_loop(self) -> None:
        sock = self.context.socket(zmq.PUB)
        self._secure(sock)
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
        if body["verdict"] == VERDICT_REJECT:
            self.counters.add("rejects")
        self.metrics.frames_results.labels(body["camera_id"], body["verdict"]).inc()
        if self.view is not None:
            self.view.record(body)
        self.metrics.stage_seconds.labels("end_to_end").observe(body["latency_ms"] / 1000)

    def _heartbeat(self, final: bool = False) -> list[bytes]:
        depths = {"batches": self._batches.qsize(), "inferred": self._inferred.qsize(),
                  "outbox": self._outbox.qsize()}
        for camera, depth in self._queues.depth().items():
            depths[f"camera:{camera}"] = depth
        for stage, depth in depths.items():
            self.metrics.queue_depth.labels(stage).set(depth)
        return protocol.encode_message(protocol.TOPIC_EVENT, {
            "kind": "heartbeat", "final": final, "time_ns": time.time_ns(),
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 3),
            "counters": self.counters.snapshot(), "queues": depths,
            **self.model.describe(),
        })


__all__ = ["Daemon", "LoadedModel", "load_model"]

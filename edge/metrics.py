"""The daemon's counters (one place: heartbeat and Prometheus) and its HTTP endpoints.

One registry per daemon (no process-wide state): frames in/out/dropped/errored per camera,
stage latencies as histograms, queue depths, batch sizes, the backend in use. Served over
HTTP with `/metrics`, `/healthz` (the stages are alive) and `/readyz` (a model is loaded
and warm, and frames are being accepted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class DaemonCounters:
    """Every count the daemon keeps, in one place: the heartbeat's `counters` snapshot and
    the Prometheus series both come from the calls below, so they cannot disagree.

    One registry per daemon (no process-wide state). Safe to call from any stage thread.
    """

    # The heartbeat's counters (docs/protocol.md); every field only grows.
    NAMES = ("received", "results", "rejects", "errors", "dropped", "infer_failures",
             "decide_failures",
             "deadline_missed", "never_arrived", "late_results", "out_of_order",
             "recorded", "record_dropped", "record_deleted",
             "shadow_compared", "shadow_dropped", "shadow_disagreed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)
        self.registry = CollectorRegistry()
        r = self.registry
        self._received = Counter("lineside_frames_received", "Messages received",
                                 ["camera"], registry=r)
        self._results = Counter("lineside_frames_results", "Results published",
                                ["camera", "verdict"], registry=r)
        self._dropped = Counter("lineside_frames_dropped", "Frames dropped",
                                ["camera", "reason"], registry=r)
        self._errors = Counter("lineside_frames_errors", "Frames refused as malformed",
                               ["camera"], registry=r)
        self._infer_failures = Counter("lineside_infer_failures", "Inference calls that "
                                       "failed (their frames got the fail-safe verdict)",
                                       registry=r)
        self._decide_failures = Counter("lineside_decide_failures", "Frames whose "
                                        "post-processing failed (fail-safe verdict)",
                                        registry=r)
        self._deadline_missed = Counter("lineside_deadline_missed", "Frames that missed "
                                        "their deadline (fail-safe verdict)", registry=r)
        self._frame_order = Counter("lineside_frame_order", "Frames whose id repeated, went "
                                    "backwards or restarted a camera's stream",
                                    ["camera", "issue"], registry=r)
        self._late_results = Counter("lineside_late_results", "Results computed after their "
                                     "frame got its fail-safe verdict (never published)",
                                     registry=r)
        self.stage_seconds = Histogram("lineside_stage_seconds", "Time spent per stage",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_tiles = Histogram("lineside_batch_tiles", "Tiles per inference call",
                                     buckets=BATCH_BUCKETS, registry=r)
        self._screen_tiles = Counter("lineside_screen_tiles", "Tiles the screening "
                                     "classifier sent to segmentation or skipped",
                                     ["outcome"], registry=r)
        self.queue_depth = Gauge("lineside_queue_depth", "Items waiting before a stage",
                                 ["stage"], registry=r)
        self._model = Info("lineside_model", "Model bundle and backend in use", registry=r)
        self._engine = Gauge("lineside_engine_build", "1 for the state of the background "
                             "TensorRT engine build (idle, building, checking, swapped, "
                             "failed)", ["state"], registry=r)
        self._swaps = Counter("lineside_model_swaps", "Hot model swaps", ["result"],
                              registry=r)
        self._recorded = Counter("lineside_recorded", "Frames recorded for labelling",
                                 ["camera", "reason"], registry=r)
        self._record_dropped = Counter("lineside_record_dropped", "Recordings dropped "
                                       "(never frames): rate limit, full queue, failed write",
                                       ["reason"], registry=r)
        self._record_deleted = Counter("lineside_record_deleted", "Recordings deleted, oldest "
                                       "first, to stay within the disk quota", registry=r)
        self._record_bytes = Gauge("lineside_record_bytes", "Bytes in the recording folder",
                                   registry=r)
        self._shadow = Counter("lineside_shadow_frames", "Frames offered to the shadow model: "
                               "compared, or dropped to keep serving first",
                               ["outcome"], registry=r)
        self._shadow_disagreements = Counter("lineside_shadow_disagreements", "Frames where "
                                             "the shadow model and the serving one differ",
                                             ["what"], registry=r)
        self._shadow_agreement = Gauge("lineside_shadow_agreement", "Shadow against serving "
                                       "model since the shadow started: verdict agreement, "
                                       "mean Dice (per class and overall)", ["measure"],
                                       registry=r)

    def _add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    # -- frames: each received message ends as a result, a drop or an error ------------
    def received(self, camera: str) -> None:
        self._add("received")
        self._received.labels(camera).inc()

    def malformed(self, camera: str) -> None:
        """A message refused before it became a frame (it also counts as received)."""
        self._add("errors")
        self._errors.labels(camera).inc()

    def dropped(self, camera: str, reason: str, count: int = 1) -> None:
        """`reason`: the label (overload policy, `never_arrived`)."""
        self._add("dropped", count)
        if reason == "never_arrived":
            self._add("never_arrived", count)
        self._dropped.labels(camera, reason).inc(count)

    def result(self, camera: str, verdict: str, rejected: bool) -> None:
        self._add("results")
        if rejected:
            self._add("rejects")
        self._results.labels(camera, verdict).inc()

    def infer_failure(self) -> None:
        self._add("infer_failures")
        self._infer_failures.inc()

    def decide_failure(self) -> None:
        self._add("decide_failures")
        self._decide_failures.inc()

    def deadline_missed(self) -> None:
        self._add("deadline_missed")
        self._deadline_missed.inc()

    def frame_order(self, camera: str, issue: str) -> None:
        if issue != "restart":  # a restart is news, not a fault
            self._add("out_of_order")
        self._frame_order.labels(camera, issue).inc()

    def late_result(self) -> None:
        self._add("late_results")
        self._late_results.inc()

    # -- stages ------------------------------------------------------------------------
    def stage_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def screened(self, segmented: int, skipped: int) -> None:
        self._screen_tiles.labels("segmented").inc(segmented)
        self._screen_tiles.labels("skipped").inc(skipped)

    def queue_depths(self, depths: dict[str, int]) -> None:
        for stage, depth in depths.items():
            self.queue_depth.labels(stage).set(depth)

    def model_info(self, description: dict[str, str]) -> None:
        self._model.info(description)

    def swap(self, result: str) -> None:
        self._swaps.labels(result).inc()

    # -- learning from the line --------------------------------------------------------
    def recorded(self, camera: str, reason: str) -> None:
        self._add("recorded")
        self._recorded.labels(camera, reason).inc()

    def record_dropped(self, reason: str) -> None:
        self._add("record_dropped")
        self._record_dropped.labels(reason).inc()

    def record_deleted(self) -> None:
        self._add("record_deleted")
        self._record_deleted.inc()

    def record_bytes(self, size: int) -> None:
        self._record_bytes.set(size)

    def shadow_dropped(self) -> None:
        self._add("shadow_dropped")
        self._shadow.labels("dropped").inc()

    def shadow_compared(self, differences: list[str], agreement: dict[str, float]) -> None:
        """One frame compared; `differences`: "verdict" and/or "class:<id>" that differed;
        `agreement`: the running measures (Agreement.gauges)."""
        self._add("shadow_compared")
        self._shadow.labels("compared").inc()
        if differences:
            self._add("shadow_disagreed")
        for what in differences:
            self._shadow_disagreements.labels(what).inc()
        for measure, value in agreement.items():
            self._shadow_agreement.labels(measure).set(value)

    def engine_state(self, state: str) -> None:
        for name in ("idle", "building", "checking", "swapped", "failed"):
            self._engine.labels(name).set(name == state)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass  # scrapes every few seconds would drown the daemon's log


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class WsgiServer:
    """A threaded WSGI server on its own thread (one thread per connection, so a
    long-lived stream such as server-sent events does not block other requests)."""

    def __init__(self, address: str, app, name: str) -> None:
        host, _, port = address.rpartition(":")
        self.server = make_server(host, int(port), app, server_class=_ThreadingServer,
                                  handler_class=_QuietHandler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name=name,
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


Check = Callable[[], tuple[bool, str]]  # (ok, why not)


class MetricsServer(WsgiServer):
    """HTTP server for /metrics, /healthz and /readyz on its own thread. A failing check
    answers 503 with its reason in the body."""

    def __init__(self, address: str, metrics: DaemonCounters, healthy: Check,
                 ready: Check) -> None:
        metrics_app = make_wsgi_app(metrics.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            for route, check in (("/healthz", healthy), ("/readyz", ready)):
                if path == route:
                    ok, reason = check()
                    start_response("200 OK" if ok else "503 Service Unavailable",
                                   [("Content-Type", "text/plain")])
                    return [b"ok\n" if ok else f"not ok: {reason}\n".encode()]
            return metrics_app(environ, start_response)

        super().__init__(address, app, "edge-metrics")

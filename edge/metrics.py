"""Prometheus metrics and health endpoints for the daemon.

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


class DaemonMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_received = Counter("lineside_frames_received", "Messages received",
                                       ["camera"], registry=r)
        self.frames_results = Counter("lineside_frames_results", "Results published",
                                      ["camera", "verdict"], registry=r)
        self.frames_dropped = Counter("lineside_frames_dropped", "Frames dropped",
                                      ["camera", "reason"], registry=r)
        self.frames_errors = Counter("lineside_frames_errors", "Frames refused as malformed",
                                     ["camera"], registry=r)
        self.stage_seconds = Histogram("lineside_stage_seconds", "Time spent per stage",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_tiles = Histogram("lineside_batch_tiles", "Tiles per inference call",
                                     buckets=BATCH_BUCKETS, registry=r)
        self.screen_tiles = Counter("lineside_screen_tiles", "Tiles the screening "
                                    "classifier sent to segmentation or skipped",
                                    ["outcome"], registry=r)
        self.queue_depth = Gauge("lineside_queue_depth", "Items waiting before a stage",
                                 ["stage"], registry=r)
        self.model = Info("lineside_model", "Model bundle and backend in use", registry=r)
        self.swaps = Counter("lineside_model_swaps", "Hot model swaps", ["result"], registry=r)


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


class MetricsServer(WsgiServer):
    """HTTP server for /metrics, /healthz and /readyz on its own thread."""

    def __init__(self, address: str, metrics: DaemonMetrics,
                 healthy: Callable[[], bool], ready: Callable[[], bool]) -> None:
        metrics_app = make_wsgi_app(metrics.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            for route, check in (("/healthz", healthy), ("/readyz", ready)):
                if path == route:
                    ok = check()
                    start_response("200 OK" if ok else "503 Service Unavailable",
                                   [("Content-Type", "text/plain")])
                    return [b"ok\n" if ok else b"not ok\n"]
            return metrics_app(environ, start_response)

        super().__init__(address, app, "edge-metrics")

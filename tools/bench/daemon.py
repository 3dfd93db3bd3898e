"""Stage 2 of edge-bench: the whole daemon over ZeroMQ on 127.0.0.1.

A real `edge-serve` process, a camera simulator (PUSH, scheduled sends) and a listener
(SUB) in this process. Saturation is how fast a backlog of frames drains; latency is
camera timestamp to the `reject` message arriving at the listener, at offered loads that
are fractions of saturation.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from lineside.edge.accounting import RESULT, Ledger
from lineside.edge.bundle import Bundle
from lineside.edge.cli.args import serve_command
from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.config import ModelSettings
from lineside.edge.protocol import FrameHeader, encode_header
from lineside.tools.bench.bare import BenchVariant


@contextlib.contextmanager
def _timed_phase():
    """No garbage collection in this process while a phase is timed (as timeit does): a
    full collection here (torch and ONNX Runtime loaded: tens of milliseconds) held the
    listener and showed as a daemon latency spike that the daemon never had."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class LoadResult:
    offered_fps: float
    achieved_fps: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    frames: int
    # Mean milliseconds per observation of each daemon stage during this load (decode
    # and postprocess per frame, tile and infer per batch): where the time goes.
    stages_ms: dict[str, float] = field(default_factory=dict)


def stage_means(before: dict[str, tuple[float, float]],
                after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean ms per observation of each stage between two `stage_totals` readings."""
    means = {}
    for stage, (seconds, count) in after.items():
        old_seconds, old_count = before.get(stage, (0.0, 0.0))
        if count > old_count:
            means[stage] = round(1000 * (seconds - old_seconds) / (count - old_count), 3)
    return means


class DaemonUnderTest:
    """edge-serve on one variant (precision, optional screen), fed `strips` in turn."""

    def __init__(self, bundle: Bundle, variant: BenchVariant, base: ModelSettings,
                 strips: list[np.ndarray], replay: Path | None = None,
                 shadow: str = "", decide_workers: int = 0) -> None:
        """`replay`: recorded model outputs (tools/bench/replay.py): the daemon runs on a
        ReplayBackend instead of the model (edge-bench --stages pipeline); `shadow`: a
        candidate bundle the daemon shadows on spare capacity (edge-serve --shadow);
        `decide_workers`: edge-serve --decide-workers (0: its default)."""
        self.frames_in, self.results_out = _free_endpoint(), _free_endpoint()
        self.metrics_port = int(_free_endpoint().rsplit(":", 1)[1])
        settings = variant.settings(base)
        command = serve_command(str(bundle.root), {
            "backend": settings.backend, "precision": settings.precision,
            "threads": settings.threads or None, "max_batch": settings.max_batch,
            "screen": settings.screen or None,
            "screen_thresholds": settings.screen_thresholds if settings.screen else None,
            "shadow": shadow or None, "decide_workers": decide_workers or None,
            "input": [self.frames_in], "output": self.results_out, "queue_size": 64,
            "metrics": f"127.0.0.1:{self.metrics_port}"},
            extra=["--replay", str(replay)] if replay else (),
            module="lineside.tools.bench.replay" if replay else "lineside.edge.cli.serve")
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.subscriber = ResultSubscriber(self.results_out)
        self.sender = FrameSender(self.frames_in, high_water_mark=1000)
        self.subscriber.wait_ready(120)
        self.strips = strips
        self.shape = strips[0].shape
        # Pixels encoded once: at a thousand frames a second the camera side must not be
        # what limits the measurement.
        self.payloads = [np.ascontiguousarray(s).tobytes() for s in strips]
        self.next_id = 0
        self.saturation_stages_ms: dict[str, float] = {}

    def _send(self) -> None:
        header = FrameHeader("bench", self.next_id, time.time_ns(), "mono8", self.shape)
        self.sender.send_raw([encode_header(header),
                              self.payloads[self.next_id % len(self.payloads)]], copy=False)
        self.next_id += 1

    def _take(self, book: Ledger, latencies: list[float], timeout_s: float) -> None:
        """Book the next message (if one comes within `timeout_s`); a result's latency is
        camera timestamp to arrival here."""
        message = self.subscriber.receive(timeout_s)
        if message is None:
            return
        seen = book.add(*message)
        if seen is not None and seen.kind == RESULT:
            latencies.append((time.time_ns() - seen.body["timestamp_ns"]) / 1e6)

    def _receive(self, count: int, timeout_s: float) -> list[float]:
        """Latencies of the results among the next `count` frames accounted for; a drop
        or error is a benchmark failure (this stage measures a daemon that keeps up)."""
        book, latencies = Ledger(), []
        deadline = time.monotonic() + timeout_s
        while book.accounted < count and time.monotonic() < deadline:
            self._take(book, latencies, 0.2)
        if len(latencies) < count:
            raise RuntimeError(f"only {len(latencies)} of {count} results arrived "
                               f"({book.counts})")
        return latencies

    def saturation(self, frames: int) -> float:
        """Frames/s draining a backlog of `frames` (after a short warm-up)."""
        for _ in range(4):
            self._send()
        self._receive(4, 120)
        before = self.stage_totals()
        with _timed_phase():
            began = time.monotonic()
            for _ in range(frames):
                self._send()
            self._receive(frames, 600)
            rate = frames / (time.monotonic() - began)
        self.saturation_stages_ms = stage_means(before, self.stage_totals())
        return rate

    def at_rate(self, fps: float, frames: int) -> LoadResult:
        period = 1.0 / fps
        before = self.stage_totals()
        latencies: list[float] = []
        book = Ledger()
        sent = 0
        with _timed_phase():
            began = time.monotonic()
            while sent < frames or book.accounted < frames:
                if sent < frames and time.monotonic() >= began + sent * period:
                    self._send()
                    sent += 1
                    continue
                self._take(book, latencies, 0.001)
                if time.monotonic() - began > frames * period + 120:
                    raise RuntimeError(f"results stopped arriving ({book.counts})")
            elapsed = time.monotonic() - began
        if len(latencies) < frames:
            raise RuntimeError(f"only {len(latencies)} of {frames} results ({book.counts})")
        ordered = sorted(latencies)
        return LoadResult(fps, frames / elapsed, statistics.median(ordered),
                          ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
                          ordered[-1], frames, stage_means(before, self.stage_totals()))

    def _metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def shadow_frames(self) -> dict[str, float]:
        """Frames the shadow model compared and dropped so far (its /metrics)."""
        out = {"compared": 0.0, "dropped": 0.0}
        for family in text_string_to_metric_families(self._metrics()):
            for sample in family.samples:
                if sample.name == "lineside_shadow_frames_total":
                    out[sample.labels["outcome"]] = sample.value
        return out

    def stage_totals(self) -> dict[str, tuple[float, float]]:
        """(seconds, observations) per daemon stage so far, from its /metrics."""
        text = self._metrics()
        totals: dict[str, list[float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in ("lineside_stage_seconds_sum", "lineside_stage_seconds_count"):
                    pair = totals.setdefault(sample.labels["stage"], [0.0, 0.0])
                    pair[sample.name.endswith("_count")] += sample.value
        return {stage: (pair[0], pair[1]) for stage, pair in totals.items()}

    def close(self) -> None:
        self.sender.close()
        self.subscriber.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

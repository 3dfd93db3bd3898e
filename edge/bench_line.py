"""Stage 2 of edge-bench: the whole daemon over ZeroMQ on 127.0.0.1.

A real `edge-serve` process, a camera simulator (PUSH, scheduled sends) and a listener
(SUB) in this process. Saturation is how fast a backlog of frames drains; latency is
camera timestamp to the `reject` message arriving at the listener, at offered loads that
are fractions of saturation.
"""

from __future__ import annotations

import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from lineside.edge.bundle import Bundle
from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.protocol import FrameHeader


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


class DaemonUnderTest:
    def __init__(self, bundle: Bundle, precision: str, backend: str, max_batch: int,
                 threads: int = 0) -> None:
        self.frames_in, self.results_out = _free_endpoint(), _free_endpoint()
        command = [sys.executable, "-m", "lineside.edge.cli.serve", str(bundle.root),
                   "--backend", backend, "--precision", precision, "--max-batch",
                   str(max_batch), "--input", self.frames_in, "--output", self.results_out,
                   "--queue-size", "64"]
        if threads:
            command += ["--threads", str(threads)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.subscriber = ResultSubscriber(self.results_out)
        self.sender = FrameSender(self.frames_in, high_water_mark=1000)
        self.subscriber.wait_ready(120)
        manifest = bundle.manifest
        shape = (manifest.frame_height, manifest.frame_width)
        rng = np.random.default_rng(0)
        self.strips = [rng.integers(60, 140, shape, dtype=np.uint8) for _ in range(4)]
        self.shape = shape
        self.next_id = 0

    def _send(self) -> None:
        header = FrameHeader("bench", self.next_id, time.time_ns(), "mono8", self.shape)
        self.sender.send(header, self.strips[self.next_id % len(self.strips)])
        self.next_id += 1

    def _receive(self, count: int, timeout_s: float) -> list[float]:
        """Latencies (ms, camera timestamp to arrival here) of `count` results."""
        latencies = []
        deadline = time.monotonic() + timeout_s
        while len(latencies) < count and time.monotonic() < deadline:
            message = self.subscriber.receive(0.2)
            if message and message[0] == "reject":
                latencies.append((time.time_ns() - message[1]["timestamp_ns"]) / 1e6)
        if len(latencies) < count:
            raise RuntimeError(f"only {len(latencies)} of {count} results arrived")
        return latencies

    def saturation(self, frames: int) -> float:
        """Frames/s draining a backlog of `frames` (after a short warm-up)."""
        for _ in range(4):
            self._send()
        self._receive(4, 120)
        began = time.monotonic()
        for _ in range(frames):
            self._send()
        self._receive(frames, 600)
        return frames / (time.monotonic() - began)

    def at_rate(self, fps: float, frames: int) -> LoadResult:
        period = 1.0 / fps
        began = time.monotonic()
        latencies: list[float] = []
        sent = 0
        while sent < frames or len(latencies) < frames:
            if sent < frames and time.monotonic() >= began + sent * period:
                self._send()
                sent += 1
                continue
            message = self.subscriber.receive(0.001)
            if message and message[0] == "reject":
                latencies.append((time.time_ns() - message[1]["timestamp_ns"]) / 1e6)
            if time.monotonic() - began > frames * period + 120:
                raise RuntimeError("results stopped arriving")
        elapsed = time.monotonic() - began
        ordered = sorted(latencies)
        return LoadResult(fps, frames / elapsed, statistics.median(ordered),
                          ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
                          ordered[-1], frames)

    def close(self) -> None:
        self.sender.close()
        self.subscriber.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

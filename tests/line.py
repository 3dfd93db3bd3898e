"""Test helpers: a real edge-serve process on 127.0.0.1, and an accounting listener."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.protocol import FrameHeader

from .conftest import free_endpoint


@dataclass
class RunningDaemon:
    proc: subprocess.Popen
    frames_in: str
    results_out: str
    subscriber: ResultSubscriber
    sender: FrameSender | None


@contextlib.contextmanager
def serve(bundle, *args: str, input_mode: str = "pull", frames_in: str | None = None,
          results_out: str | None = None,
          curve: tuple[str, str] | None = None) -> Iterator[RunningDaemon]:
    """Start edge-serve as its own process; yields once its heartbeat is seen."""
    frames_in = frames_in or free_endpoint()
    results_out = results_out or free_endpoint()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineside.edge.cli.serve", str(bundle), "--backend", "ort-cpu",
         "--input", frames_in, "--input-mode", input_mode, "--output", results_out, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    subscriber = ResultSubscriber(results_out, curve=curve)
    sender = FrameSender(frames_in) if input_mode == "pull" else None
    try:
        subscriber.wait_ready(timeout_s=90)
        yield RunningDaemon(proc, frames_in, results_out, subscriber, sender)
    finally:
        if sender:
            sender.close()
        subscriber.close()
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (the daemon drains and exits 0), then SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Daemon config with one camera whose frames always REJECT (every pixel counts as class 1)
# and one whose frames are always OK (no probability exceeds 1.0): known verdicts from a
# real model, whatever it learnt.
SPLIT_VERDICTS_CONFIG = """
[serve.cameras.bad.thresholds]
1 = 0.0
[serve.cameras.good.thresholds]
1 = 1.0
2 = 1.0
3 = 1.0
4 = 1.0
"""


def strip(seed: int, shape: tuple[int, int] = (256, 1600)) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 140, shape, dtype=np.uint8)


def header(camera: str, frame_id: int, shape: tuple[int, int] = (256, 1600)) -> FrameHeader:
    return FrameHeader(camera, frame_id, time.time_ns(), "mono8", shape)


@dataclass
class Accounting:
    """What a gateway saw, per (camera, frame id): the frame-accounting invariant."""

    results: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    drops: list[dict] = field(default_factory=list)
    others: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def accounted(self) -> int:
        return len(self.results) + len(self.errors) + len(self.drops)

    def ids(self, kind: str, camera: str | None = None) -> list:
        return [m["frame_id"] for m in getattr(self, kind)
                if camera is None or m.get("camera_id") == camera]

    def outcomes(self) -> dict[tuple[str, int], list[str]]:
        seen: dict[tuple[str, int], list[str]] = {}
        for kind in ("results", "errors", "drops"):
            for m in getattr(self, kind):
                seen.setdefault((m.get("camera_id"), m.get("frame_id")), []).append(kind)
        return seen


def collect(subscriber: ResultSubscriber, expected: int, timeout_s: float = 120,
            into: Accounting | None = None) -> Accounting:
    """Gather messages until `expected` frames are accounted for (or time runs out)."""
    book = into or Accounting()
    deadline = time.monotonic() + timeout_s
    while book.accounted < expected and time.monotonic() < deadline:
        message = subscriber.receive(0.2)
        if message is None:
            continue
        topic, body = message
        if topic == "reject":
            book.results.append(body)
        elif topic == "event" and body["kind"] == "error":
            book.errors.append(body)
        elif topic == "event" and body["kind"] == "drop":
            book.drops.append(body)
        elif not (topic == "event" and body["kind"] == "heartbeat"):
            book.others.append((topic, body))
    return book


def assert_every_frame_once(book: Accounting, sent: set[tuple[str, int]]) -> None:
    """Each frame the camera side sent is exactly one of result, drop or error."""
    outcomes = book.outcomes()
    missing = sorted(sent - set(outcomes))
    twice = {k: v for k, v in outcomes.items() if len(v) > 1}
    assert not missing, f"frames never accounted for: {missing[:20]}"
    assert not twice, f"frames accounted for more than once: {list(twice.items())[:20]}"

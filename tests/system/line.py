"""Test helpers: a real edge-serve process on 127.0.0.1, and an accounting listener."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lineside.edge.accounting import DROP, ERROR, RESULT, Ledger
from lineside.edge.cli.args import serve_command
from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.protocol import FrameHeader
from tests.helpers import free_endpoint


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
    command = serve_command(str(bundle), {"backend": "ort-cpu", "input": [frames_in],
                                          "input_mode": input_mode, "output": results_out},
                            extra=args)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    subscriber = ResultSubscriber(results_out, curve=curve)
    sender = FrameSender(frames_in) if input_mode == "pull" else None
    try:
        try:
            subscriber.wait_ready(timeout_s=90)
        except TimeoutError:
            stop_process(proc, 5)
            raise AssertionError(f"edge-serve never sent a heartbeat (exit {proc.returncode})"
                                 f":\n{proc.stderr.read()[-3000:]}") from None
        yield RunningDaemon(proc, frames_in, results_out, subscriber, sender)
    finally:
        if sender:
            sender.close()
        subscriber.close()
        stop_process(proc)


class Supervisor:
    """What systemd's Restart=on-failure does: runs `command` and starts it again whenever
    it exits, recording each exit status."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.current: subprocess.Popen | None = None
        self.exits: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self.current = proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
            while proc.poll() is None and not self._stop.is_set():
                time.sleep(0.05)
            if proc.poll() is None:
                stop_process(proc, 30)
            else:
                self.exits.append(proc.returncode)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(90)


def next_heartbeat(subscriber: ResultSubscriber, timeout_s: float, where=None) -> dict:
    """The next heartbeat (for which `where(body)` holds, when given)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = subscriber.receive(0.2)
        if message and message[1].get("kind") == "heartbeat" and \
                (where is None or where(message[1])):
            return message[1]
    raise AssertionError(f"no such heartbeat within {timeout_s} s")


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


def header(camera: str, frame_id: int, shape: tuple[int, int] = (256, 1600),
           line_position: float | None = None) -> FrameHeader:
    return FrameHeader(camera, frame_id, time.time_ns(), "mono8", shape,
                       line_position=line_position)


def send_frames(daemon: RunningDaemon, camera: str, count: int,
                shape: tuple[int, int] = (256, 1600)) -> set[tuple[str, int]]:
    """Frames 0..count-1 of `camera` into `daemon`; the (camera, id) pairs sent."""
    assert daemon.sender is not None
    for i in range(count):
        daemon.sender.send(header(camera, i, shape), strip(i, shape))
    return {(camera, i) for i in range(count)}


class Accounting(Ledger):
    """What a gateway saw, per (camera, frame id): the frame-accounting invariant, with
    the lists of result, error and drop bodies the tests read."""

    @property
    def results(self) -> list[dict]:
        return self.bodies(RESULT)

    @property
    def errors(self) -> list[dict]:
        return self.bodies(ERROR)

    @property
    def drops(self) -> list[dict]:
        return self.bodies(DROP)

    def ids(self, kind: str, camera: str | None = None) -> list:
        """Frame ids of `results`, `errors` or `drops` (ranges expanded)."""
        return super().ids({"results": RESULT, "errors": ERROR, "drops": DROP}.get(kind, kind),
                           camera)


def collect(subscriber: ResultSubscriber, expected: int, timeout_s: float = 120,
            into: Accounting | None = None) -> Accounting:
    """Gather messages until `expected` frames are accounted for (or time runs out)."""
    book = into or Accounting()
    deadline = time.monotonic() + timeout_s
    while book.accounted < expected and time.monotonic() < deadline:
        message = subscriber.receive(0.2)
        if message is not None:
            book.add(*message)
    return book


def assert_every_frame_once(book: Accounting, sent: set[tuple[str, int]]) -> None:
    """Each frame the camera side sent is exactly one of result, drop or error."""
    outcomes = book.by_frame()
    missing = sorted(sent - set(outcomes))
    twice = {k: v for k, v in outcomes.items() if len(v) > 1}
    assert not missing, f"frames never accounted for: {missing[:20]}"
    assert not twice, f"frames accounted for more than once: {list(twice.items())[:20]}"

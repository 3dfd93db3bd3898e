"""The daemon as a real process on real ZeroMQ sockets (127.0.0.1)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.protocol import FrameHeader

from .conftest import free_endpoint

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(trained_bundle):
    frames_in, results_out = free_endpoint(), free_endpoint()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineside.edge.cli.serve", str(trained_bundle),
         "--backend", "ort-cpu", "--masks", "--input", frames_in, "--output", results_out],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    subscriber = ResultSubscriber(results_out)
    sender = FrameSender(frames_in)
    try:
        subscriber.wait_ready(timeout_s=60)
        yield proc, sender, subscriber
    finally:
        sender.close()
        subscriber.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def strip(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(60, 140, (256, 1600), dtype=np.uint8)


def collect(subscriber: ResultSubscriber, expected: int, timeout_s: float = 120):
    """Results and error events until `expected` frames are accounted for."""
    results, errors = [], []
    deadline = time.monotonic() + timeout_s
    while len(results) + len(errors) < expected and time.monotonic() < deadline:
        message = subscriber.receive(0.5)
        if message is None:
            continue
        topic, body = message
        if topic == "reject":
            results.append(body)
        elif topic == "event" and body["kind"] == "error":
            errors.append(body)
    return results, errors


def test_n_frames_give_exactly_n_results(daemon):
    _, sender, subscriber = daemon
    n = 12
    for i in range(n):
        sender.send(FrameHeader("cam0", i, time.time_ns(), "mono8", (256, 1600)), strip(i))
    results, errors = collect(subscriber, n)
    assert errors == []
    assert [r["frame_id"] for r in results] == list(range(n))  # all, once, in order
    for r in results:
        assert r["verdict"] in ("OK", "REJECT")
        assert set(r["classes"]) == {"1", "2", "3", "4"}
        assert r["latency_ms"] >= 0
    # Nothing more arrives: no duplicates.
    extra, _ = collect(subscriber, 1, timeout_s=1.0)
    assert extra == []


def test_malformed_frame_gives_error_event_and_daemon_keeps_serving(daemon):
    proc, sender, subscriber = daemon
    sender.send_raw([json.dumps({"schema": 1, "camera_id": "cam0", "frame_id": 5,
                                 "timestamp_ns": 1, "encoding": "mono8",
                                 "shape": [256, 1600]}).encode(), b"too short"])
    sender.send_raw([b"\x00garbage"])
    sender.send(FrameHeader("cam0", 6, time.time_ns(), "mono8", (256, 1600)), strip(6))
    results, errors = collect(subscriber, 3)
    assert [e["frame_id"] for e in errors] == [5, None]
    assert "payload is 9 bytes" in errors[0]["reason"]
    assert [r["frame_id"] for r in results] == [6]
    assert proc.poll() is None


def test_masks_are_published_per_class(daemon):
    _, sender, subscriber = daemon
    sender.send(FrameHeader("cam0", 1, time.time_ns(), "mono8", (256, 1600)), strip(1))
    deadline = time.monotonic() + 60
    mask = None
    while mask is None and time.monotonic() < deadline:
        message = subscriber.receive(0.5)
        if message and message[0] == "mask":
            mask = message[1]
    assert mask is not None and mask["frame_id"] == 1
    assert (mask["height"], mask["width"]) == (256, 1600)
    assert set(mask["classes"]) == {"1", "2", "3", "4"}


def test_sigterm_drains_and_exits_zero(daemon):
    proc, sender, subscriber = daemon
    n = 6
    for i in range(n):
        sender.send(FrameHeader("cam1", i, time.time_ns(), "mono8", (256, 1600)), strip(i))
    # Wait until the daemon has taken the frames, then ask it to stop.
    first, _ = collect(subscriber, 1)
    proc.send_signal(signal.SIGTERM)
    rest, errors = collect(subscriber, n - 1)
    assert errors == []
    assert [r["frame_id"] for r in first + rest] == list(range(n))
    assert proc.wait(timeout=30) == 0

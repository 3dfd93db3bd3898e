"""Nothing is lost: every frame sent is exactly one of result, drop or error, under fuzzed
input, sustained load, camera reconnects, slow listeners, backend faults and SIGKILL.

Each test records its figures (frames sent, results, drops, errors, lost, memory growth,
recovery time); with LINESIDE_RELIABILITY_REPORT=path they are written there as JSON
(docs/reliability.md is made from such a run). LINESIDE_SOAK_S lengthens the soak.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineside.edge.cli.args import serve_command
from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.protocol import FrameHeader, encode_frame
from tests.helpers import free_endpoint
from tests.system.line import (
    Accounting,
    Supervisor,
    assert_every_frame_once,
    collect,
    header,
    next_heartbeat,
    serve,
    strip,
)

pytestmark = pytest.mark.slow

FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def write_report():
    yield
    path = os.environ.get("LINESIDE_RELIABILITY_REPORT")
    if path and FIGURES:
        Path(path).write_text(json.dumps(FIGURES, indent=2) + "\n")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def book_figures(book: Accounting, sent: int, **extra) -> dict:
    return {"sent": sent, "results": len(book.results), "drops": len(book.drops),
            "errors": len(book.errors), "lost": sent - book.accounted, **extra}


# -- fuzzing --------------------------------------------------------------------------

GOOD = {"schema": 1, "camera_id": "fuzz", "frame_id": 1, "timestamp_ns": 1,
        "encoding": "mono8", "shape": [32, 48]}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@st.composite
def hostile_messages(draw) -> list[bytes]:
    kind = draw(st.sampled_from(["mutated", "random", "truncated", "deep", "huge",
                                 "encoding", "utf8"]))
    if kind == "mutated":  # a valid header with one field replaced by anything
        body = dict(GOOD)
        body[draw(st.sampled_from(sorted(GOOD)))] = draw(json_values)
        return [json.dumps(body).encode(), draw(st.binary(max_size=64))]
    if kind == "random":
        return draw(st.lists(st.binary(max_size=128), min_size=1, max_size=4))
    if kind == "truncated":
        parts = encode_frame(FrameHeader("fuzz", 1, 1, "mono8", (32, 48)), bytes(32 * 48))
        cut = draw(st.integers(0, len(parts[1]) - 1))
        return [parts[0][:draw(st.integers(0, len(parts[0])))], parts[1][:cut]][
            :draw(st.integers(1, 2))]
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        return [b"[" * depth + b"]" * depth, b""]
    if kind == "huge":
        side = draw(st.integers(16385, 2**31))
        return [json.dumps({**GOOD, "shape": [side, side]}).encode(), b""]
    if kind == "encoding":
        body = {**GOOD, "encoding": draw(st.sampled_from(["jpeg", "png", "bgr8"])),
                "shape": [32, 48, 3]}
        return [json.dumps(body).encode(), draw(st.binary(max_size=256))]
    return [draw(st.binary(min_size=1, max_size=64)).replace(b"{", b"\xff"), b""]


@pytest.fixture(scope="module")
def fuzz_daemon(trained_bundle):
    with serve(trained_bundle) as d:
        yield d


FUZZ_STATE = {"sent": 0, "book": Accounting()}


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(message=hostile_messages())
def test_fuzzed_input_gets_one_answer_each_and_never_a_crash(fuzz_daemon, message):
    d = fuzz_daemon
    d.sender.send_raw(message)
    FUZZ_STATE["sent"] += 1
    book = collect(d.subscriber, FUZZ_STATE["sent"], timeout_s=30, into=FUZZ_STATE["book"])
    assert book.accounted == FUZZ_STATE["sent"], "a message got no answer (or two)"
    assert d.proc.poll() is None


def test_after_fuzzing_the_daemon_still_serves_and_memory_is_bounded(fuzz_daemon):
    d = fuzz_daemon
    before = rss_mb(d.proc.pid)
    rng = random.Random(1)
    sent = 3000
    for i in range(sent):
        size = rng.choice([0, 10, 1000, 100_000])
        d.sender.send_raw([json.dumps({**GOOD, "frame_id": i, "shape": [4000, 4000]}).encode(),
                           b"\0" * size])
    book = collect(d.subscriber, sent, timeout_s=120)
    growth = rss_mb(d.proc.pid) - before
    d.sender.send(header("fuzz", 10**6, (32, 48)), strip(0, (32, 48)))
    assert collect(d.subscriber, 1, timeout_s=60).ids("results") == [10**6]
    fuzzed = FUZZ_STATE["book"]
    FIGURES["fuzz"] = {**book_figures(fuzzed, FUZZ_STATE["sent"]),
                       "note": "hypothesis: mutated/random/truncated/deep/huge/non-UTF-8"}
    FIGURES["malformed_flood"] = book_figures(book, sent, rss_growth_mb=round(growth, 1))
    assert len(book.errors) == sent
    assert growth < 50, f"RSS grew {growth:.1f} MB over {sent} malformed messages"


# -- load -----------------------------------------------------------------------------

def test_soak_at_ninety_percent_of_saturation_keeps_memory_flat(trained_bundle):
    shape = (256, 512)
    with serve(trained_bundle, "--max-batch", "6") as d:
        burst = 30  # saturation: how fast a backlog drains
        began = time.monotonic()
        for i in range(burst):
            d.sender.send(header("sat", i, shape), strip(i, shape))
        collect(d.subscriber, burst)
        saturation = burst / (time.monotonic() - began)
        rate = 0.9 * saturation
        duration = float(os.environ.get("LINESIDE_SOAK_S", "45"))
        samples, book, sent = [], Accounting(), 0
        start = time.monotonic()
        next_sample = start
        while time.monotonic() - start < duration:
            now = time.monotonic()
            target = int((now - start) * rate)
            while sent < target:
                d.sender.send(header("soak", sent, shape), strip(sent % 50, shape))
                sent += 1
            if now >= next_sample:
                samples.append((now - start, rss_mb(d.proc.pid)))
                next_sample = now + 1.0
            collect(d.subscriber, 10**9, timeout_s=0.01, into=book)  # drain what arrived
        collect(d.subscriber, sent, into=book)
        assert_every_frame_once(book, {("soak", i) for i in range(sent)})
        quarter = [rss for t, rss in samples if t >= duration * 0.25]
        growth = max(quarter) - quarter[0]
        latencies = sorted(r["latency_ms"] for r in book.results)
        FIGURES["soak"] = {**book_figures(book, sent), "duration_s": duration,
                           "saturation_fps": round(saturation, 2),
                           "offered_fps": round(rate, 2),
                           "rss_start_mb": round(quarter[0], 1),
                           "rss_max_mb": round(max(quarter), 1),
                           "rss_growth_mb": round(growth, 1),
                           "latency_p50_ms": latencies[len(latencies) // 2],
                           "latency_p99_ms": latencies[int(len(latencies) * 0.99)]}
        assert growth < 40, f"RSS grew {growth:.1f} MB during the soak (after warm-up)"


# -- faults ---------------------------------------------------------------------------

def test_camera_disconnect_and_reconnect_loses_nothing(trained_bundle):
    with serve(trained_bundle) as d:
        sent = set()
        for round_ in range(3):
            camera = FrameSender(d.frames_in)
            for i in range(5):
                frame_id = round_ * 100 + i
                camera.send(header("cam", frame_id, (256, 512)), strip(i, (256, 512)))
                sent.add(("cam", frame_id))
            camera.close()  # the camera goes away (linger flushes what it sent)
            time.sleep(0.3)
        book = collect(d.subscriber, len(sent))
        assert_every_frame_once(book, sent)
        FIGURES["camera_reconnect"] = book_figures(book, len(sent), reconnects=3)


def test_a_stalled_listener_does_not_stall_inference(trained_bundle):
    with serve(trained_bundle) as d:
        stalled = zmq.Context.instance().socket(zmq.SUB)
        stalled.setsockopt(zmq.RCVHWM, 1)
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(d.results_out)  # never reads
        try:
            time.sleep(0.5)
            n = 40
            began = time.monotonic()
            for i in range(n):
                d.sender.send(header("cam", i, (256, 512)), strip(i, (256, 512)))
            book = collect(d.subscriber, n)
            assert_every_frame_once(book, {("cam", i) for i in range(n)})
            FIGURES["stalled_listener"] = book_figures(
                book, n, seconds=round(time.monotonic() - began, 2))
        finally:
            stalled.close(linger=0)


def test_backend_fault_mid_batch_gives_error_verdicts_and_recovers(trained_bundle):
    with serve(trained_bundle, "--inject-faults", "infer-every=3", "--max-batch", "3") as d:
        n = 30
        for i in range(n):
            d.sender.send(header("cam", i, (256, 512)), strip(i, (256, 512)))
        book = collect(d.subscriber, n)
        assert_every_frame_once(book, {("cam", i) for i in range(n)})
        failed = [r for r in book.results if r["verdict"] == "ERROR"]
        assert failed and all("injected backend fault" in r["reasons"][0] for r in failed)
        assert len(failed) < n  # the batches after a fault are served normally
        assert d.proc.poll() is None
        FIGURES["backend_fault"] = book_figures(book, n, error_verdicts=len(failed))


def test_sigkill_under_a_supervisor_resumes_quickly(trained_bundle):
    frames_in, results_out = free_endpoint(), free_endpoint()
    command = serve_command(str(trained_bundle), {"backend": "ort-cpu", "input": [frames_in],
                                                  "output": results_out})
    subscriber = ResultSubscriber(results_out)
    sender = FrameSender(frames_in)
    try:
        with Supervisor(command) as supervisor:
            subscriber.wait_ready(90)
            sender.send(header("cam", 1, (256, 512)), strip(1, (256, 512)))
            assert collect(subscriber, 1).ids("results") == [1]
            killed_at = time.monotonic()
            supervisor.current.send_signal(signal.SIGKILL)
            time.sleep(0.5)
            next_heartbeat(subscriber, 60, lambda b: b["counters"]["received"] == 0)
            recovery = time.monotonic() - killed_at
            sender.send(header("cam", 2, (256, 512)), strip(2, (256, 512)))
            assert collect(subscriber, 1).ids("results") == [2]
        FIGURES["sigkill_restart"] = {"recovery_s": round(recovery, 2),
                                      "stated_limit_s": 30}
        assert recovery < 30
    finally:
        sender.close()
        subscriber.close()


def test_a_hundred_thousand_made_up_camera_ids_leave_memory_flat(trained_bundle):
    """Past max_cameras, frames of new cameras are refused with an error event and no
    per-camera state (no queue, no metrics series, no id tracking) is created."""
    n, cameras = 100_000, 16
    with serve(trained_bundle, "--max-cameras", str(cameras)) as d:
        parts = [protocol_frame(f"cam{i:06d}", i) for i in range(n)]
        for message in parts[:2000]:  # warm-up: the admitted cameras and the error path
            d.sender.send_raw(message)
        warm = Accounting(keep=False)
        collect(d.subscriber, 2000, into=warm)
        before = rss_mb(d.proc.pid)
        book = Accounting(keep=False)
        for message in parts[2000:]:
            d.sender.send_raw(message)
        collect(d.subscriber, n - 2000, timeout_s=300, into=book)
        after = rss_mb(d.proc.pid)
        assert warm.counts["result"] == cameras and warm.counts["error"] == 2000 - cameras
        assert book.counts == {"result": 0, "error": n - 2000, "drop": 0}
        assert after - before < 20, f"RSS {before:.1f} -> {after:.1f} MB"
        assert d.proc.poll() is None
    FIGURES["camera_flood"] = {"sent": n, "admitted_cameras": cameras,
                               "error_events": warm.counts["error"] + book.counts["error"],
                               "rss_before_mb": round(before, 1),
                               "rss_after_mb": round(after, 1)}


def protocol_frame(camera: str, frame_id: int) -> list[bytes]:
    return encode_frame(FrameHeader(camera, frame_id, 1, "mono8", (8, 8)),
                        np.zeros((8, 8), np.uint8))

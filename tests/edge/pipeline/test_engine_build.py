"""Never build on the hot path: with TensorRT present but no engine for this GPU, the
daemon serves on ONNX Runtime at once, builds the engine in the background, and swaps to it
only when it agrees with what serves. A real daemon in-process on real sockets and real
ONNX Runtime; TensorRT is the contract fake (tests/fakes/trt_contract.py), whose engine
outputs zeros: the tests judge our logic, never TensorRT's numerics."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.config import ServeConfig
from lineside.edge.daemon import Daemon
from lineside.edge.pipeline.model import load_model
from lineside.edge.protocol import FrameHeader
from tests.edge.test_tensorrt import bundle_with
from tests.fakes import trt_contract
from tests.helpers import free_endpoint
from tests.system.line import collect, next_heartbeat


def run_line(tmp_path, monkeypatch, value: int):
    """A daemon on the toy bundle (fp16 via `auto`), frames of one grey `value`."""
    monkeypatch.setenv("LINESIDE_ENGINE_CACHE", str(tmp_path / "engines"))
    trt_contract.install(monkeypatch, "10.3.0", build_delay_s=1.0)
    bundle = bundle_with(tmp_path)
    config = ServeConfig(bundle=str(bundle.root), backend="auto", precision="fp16",
                         input=[free_endpoint()], output=free_endpoint(), heartbeat_s=0.2)
    config.validate()
    model = load_model(bundle.root, config)
    assert model.pending_engine == "fp16" and model.backend.name == "ort-cpu"
    daemon = Daemon(config, model)
    subscriber = ResultSubscriber(config.output)
    daemon.start()
    subscriber.wait_ready(30)
    sender = FrameSender(config.input[0])
    building = next_heartbeat(subscriber, 10, lambda b: "engine" in b)["engine"]
    assert building["state"] == "building" and building["precision"] == "fp16"
    for i in range(12):  # the line runs while the engine builds
        sender.send(FrameHeader("cam0", i, 1, "mono8", (64, 256)),
                    np.full((64, 256), value, np.uint8))
        time.sleep(0.05)
    book = collect(subscriber, 12, timeout_s=30)
    deadline = time.monotonic() + 30
    while daemon.engine_build.state in ("building", "checking") and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon, subscriber, sender, book


@pytest.fixture
def line(tmp_path, monkeypatch, request):
    made = []

    def start(value: int):
        made.append(run_line(tmp_path, monkeypatch, value))
        return made[-1]

    yield start
    for daemon, subscriber, sender, _ in made:
        sender.close()
        daemon.stop()
        daemon.join(30)
        subscriber.close()


def test_the_line_serves_while_the_engine_builds_then_swaps_when_it_agrees(line):
    daemon, subscriber, sender, book = line(0)  # dark frames: both models find nothing
    assert book.accounted == 12 and all(r["verdict"] == "OK" for r in book.results)
    assert {r["model"] for r in book.results} == {"toy"}
    assert daemon.engine_build.state == "swapped", daemon.engine_build.describe()
    assert daemon.model.backend.name == "tensorrt"
    sender.send(FrameHeader("cam0", 100, 1, "mono8", (64, 256)),
                np.zeros((64, 256), np.uint8))
    after = collect(subscriber, 1, timeout_s=30)
    assert after.ids("results") == [100] and after.results[0]["verdict"] == "OK"
    swapped = [b for t, b in after.others + book.others if b.get("kind") == "engine"]
    assert swapped and swapped[-1]["state"] == "swapped"
    assert next_heartbeat(subscriber, 5)["backend"] == "tensorrt"


def test_an_engine_that_disagrees_never_serves_and_says_why(line):
    daemon, subscriber, _, book = line(255)  # bright: the toy finds defects, the fake none
    assert book.accounted == 12 and all(r["verdict"] == "REJECT" for r in book.results)
    assert daemon.engine_build.state == "failed"
    assert "disagrees" in daemon.engine_build.reason
    assert daemon.model.backend.name == "ort-cpu"  # the fallback keeps serving
    beat = next_heartbeat(subscriber, 5)
    assert beat["engine"]["state"] == "failed" and beat["backend"] == "ort-cpu"

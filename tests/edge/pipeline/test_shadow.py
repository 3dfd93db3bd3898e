"""The shadow stage in-process on real ONNX Runtime sessions: it runs only while serving
is idle, a running shadow call gives way the moment serving has work (the frame is
dropped and counted), and its comparison is the two models' own."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lineside.edge.backends import create_backend
from lineside.edge.bundle import load_bundle
from lineside.edge.config import CameraSettings, ModelSettings, ServeConfig
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.decide import Decided, judge
from lineside.edge.pipeline.infer import run_model
from lineside.edge.pipeline.model import load_model
from lineside.edge.pipeline.shadow import ShadowStage, agreement_bar
from lineside.edge.postprocess import decide, thresholds_of
from lineside.edge.protocol import Frame, FrameHeader
from lineside.edge.scoring import Agreement

pytestmark = pytest.mark.slow


def test_an_interrupted_onnxruntime_call_ends_early_and_the_next_runs(trained_bundle):
    backend = create_backend("ort-cpu", load_bundle(trained_bundle))
    tiles = np.random.default_rng(0).integers(0, 255, (48, 1, 256, 256), dtype=np.uint8)
    began = time.perf_counter()
    backend.infer(tiles)
    whole = time.perf_counter() - began
    failure: list[BaseException] = []

    def run() -> None:
        try:
            backend.infer(tiles)
        except Exception as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    began = time.perf_counter()
    thread.start()
    time.sleep(whole / 10)
    assert backend.interrupt()
    thread.join()
    assert failure, "the interrupted call should have ended with an error"
    assert time.perf_counter() - began < whole  # it did not run to its end
    assert backend.infer(tiles[:2])["scores"].shape[0] == 2  # the next call is whole


def decided_frame(model, gray: np.ndarray, frame_id: int) -> Decided:
    classes = model.classes_for(CameraSettings())
    out = run_model(model, gray, thresholds=thresholds_of(classes))
    masks, summaries, _ = judge(out.scores, out.gate, classes)
    verdict, _ = decide(summaries, CameraSettings().rule)
    frame = Frame(FrameHeader("cam0", frame_id, 1, "mono8", gray.shape), gray, 1, frame_id)
    return Decided(frame, model, classes, verdict, False, {"verdict": verdict}, masks,
                   out.scores, out.gate)


class ServingLoad:
    """What the daemon's `serving_idle` says, set by the test: busy, idle, or idle for
    one look only (the shadow starts a frame, then serving gets work)."""

    def __init__(self) -> None:
        self.mode = "busy"
        self.lock = threading.Lock()

    def idle(self) -> bool:
        with self.lock:
            if self.mode == "once":
                self.mode = "busy"
                return True
            return self.mode == "idle"


def test_shadow_runs_only_when_serving_is_idle_and_yields_at_once(trained_bundle,
                                                                  strip_bundle):
    settings = ModelSettings(backend="ort-cpu")
    serving = load_model(trained_bundle, settings)
    candidate = load_model(strip_bundle, ModelSettings(backend="ort-cpu", threads=1))
    published: list = []
    load = ServingLoad()
    counters = DaemonCounters()
    stage = ShadowStage(ServeConfig(bundle=str(trained_bundle)), counters,
                        lambda m: published.append(m) or True, load.idle)
    stage.start(candidate)
    frames = [np.random.default_rng(i).integers(60, 140, (256, 1600), dtype=np.uint8)
              for i in range(6)]
    decided = [decided_frame(serving, gray, i) for i, gray in enumerate(frames)]
    runner = threading.Thread(target=stage.run)
    runner.start()
    try:
        for item in decided:
            stage.offer(item)  # the queue holds 4: two are dropped at once
        time.sleep(0.5)
        assert published == [] and stage.dropped == 2  # serving busy: nothing runs
        load.mode = "once"  # a gap: the shadow starts a frame, then a frame arrives
        deadline = time.monotonic() + 30
        while stage.preempted == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert stage.preempted == 1 and published == [] and stage.dropped == 3
        load.mode = "idle"
        deadline = time.monotonic() + 60
        while len(published) + stage.dropped < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stage.closed.set()
        runner.join(60)
    assert len(published) == 3 and stage.dropped == 3
    assert counters.snapshot()["shadow_compared"] == 3
    assert counters.snapshot()["shadow_dropped"] == 3
    # Each comparison is the two models' own, frame by frame (the stage closed its
    # candidate when it ended: the same bundle, loaded again).
    again = load_model(strip_bundle, ModelSettings(backend="ort-cpu", threads=1))
    reference = Agreement([1, 2, 3, 4])
    for topic, body in published:
        item = decided[body["frame_id"]]
        masks, summaries, _ = judge(*_scored(again, item.frame.pixels), item.classes)
        verdict, _ = decide(summaries, CameraSettings().rule)
        assert body["verdict"] == verdict and topic == "shadow"
        reference.add(masks, item.masks, verdict, item.verdict)
    assert stage.agreement.summary() == reference.summary()


def _scored(model, gray):
    classes = model.classes_for(CameraSettings())
    out = run_model(model, gray, thresholds=thresholds_of(classes))
    return out.scores, out.gate


def test_promote_bar_names_what_is_missing():
    assert "no shadow" in agreement_bar(None, 10, 0.9, 0.9)
    agreement = Agreement([1])
    empty = np.zeros((1, 4, 4), np.uint8)
    found = np.ones((1, 4, 4), np.uint8)
    for _ in range(3):
        agreement.add(empty, empty, "OK", "OK")
    assert "needs 10" in agreement_bar(agreement, 10, 0.9, 0.9)
    assert agreement_bar(agreement, 3, 0.9, 0.9) == ""
    agreement.add(found, empty, "REJECT", "OK")
    assert "verdict agreement 0.7500" in agreement_bar(agreement, 3, 0.9, 0.0)
    assert "mean Dice" in agreement_bar(agreement, 3, 0.0, 0.9)

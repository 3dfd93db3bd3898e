"""The pipeline's stages in-process, without sockets: batch formation, model stages (and
their failures), decide with a deadline, receive's errors, drops and gaps. Real ONNX
Runtime sessions on a toy bundle whose outputs are known in advance (tests/toy_bundle)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lineside.edge import protocol
from lineside.edge.config import CameraSettings, ModelSettings, ServeConfig
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.batch import BatchStage
from lineside.edge.pipeline.decide import Decider
from lineside.edge.pipeline.frame_queues import FrameQueues
from lineside.edge.pipeline.infer import ModelStages
from lineside.edge.pipeline.model import compose_model, load_model
from lineside.edge.pipeline.receive import (
    MAX_GAP_EVENTS,
    FrameIdTracker,
    ReceiveStage,
    gap_events,
)
from lineside.edge.protocol import Frame, FrameHeader
from tests.toy_bundle import toy_frame, write_toy_bundle


# Every stage test runs on both graph forms: scored on the device (what edge-export
# writes) and probabilities scored on the host (bundles made before it).
@pytest.fixture(scope="module", params=["scored", "probabilities"])
def toy(tmp_path_factory, request):
    return write_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle",
                            scored=request.param == "scored")


@pytest.fixture(scope="module", params=["scored", "probabilities"])
def gated_toy(tmp_path_factory, request):
    return write_toy_bundle(tmp_path_factory.mktemp("gated") / "bundle", gate=True,
                            gate_threshold=0.5, scored=request.param == "scored")


def frame(camera: str, frame_id: int, pixels: np.ndarray, received_ns: int = 0) -> Frame:
    header = FrameHeader(camera, frame_id, 1, "mono8", pixels.shape)
    return Frame(header, pixels, received_ns or time.time_ns())


def settings(**changes) -> ModelSettings:
    return ModelSettings(backend="ort-cpu", **changes)


def test_batch_formation_fills_the_tile_budget_round_robin_across_cameras(toy):
    model = compose_model(toy, settings())
    queues: FrameQueues[Frame] = FrameQueues(lambda camera: ("block", 8))
    for i in range(3):
        for camera in ("a", "b"):
            queues.put(camera, frame(camera, i, toy_frame(10 * i)))
    stage = BatchStage(queues, max_batch=8, max_wait_ms=0, counters=DaemonCounters())
    batch = stage.next(model)
    # 64x256 frames are 4 tiles of 64x64: two frames fill a budget of 8 tiles.
    assert [(f.header.camera_id, f.header.frame_id) for f in batch.frames] == [("a", 0),
                                                                              ("b", 0)]
    assert batch.tiles.shape == (8, 1, 64, 64) and [g.count for g in batch.grids] == [4, 4]
    assert (batch.tiles[4:] == 0).all()
    queues.close()
    rest = []
    while (more := stage.next(model)) is not None:
        rest += [(f.header.camera_id, f.header.frame_id) for f in more.frames]
    assert rest == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_model_stages_give_each_frame_its_own_tiles_and_the_gate(gated_toy):
    model = load_model(gated_toy, settings(max_batch=4))
    frames = [frame("a", 0, toy_frame(51)), frame("a", 1, toy_frame(204))]
    stage = BatchStage(FrameQueues(lambda c: ("block", 8)), 4, 0, DaemonCounters())
    items = ModelStages(max_batch=4).run(stage.form(frames, model))
    assert [i.frame.header.frame_id for i in items] == [0, 1]
    for item, value in zip(items, (51, 204), strict=True):
        # p = pixel / 255, scored (by the graph, or on the host for the older form) at
        # the bundle's threshold 0.5.
        scores = item.scores
        assert item.error == "" and scores.scores.shape == (4, 64, 256)
        assert (scores.scores == (value if value / 255 > 0.5 else 0)).all()
        np.testing.assert_allclose(scores.maxima, value / 255, rtol=1e-6)
        assert scores.areas.tolist() == [64 * 256 if value / 255 > 0.5 else 0] * 4
        np.testing.assert_allclose(item.presence, [value / 255] * 4, rtol=1e-6)
        assert item.gate is item.presence and item.screen_scores is None


def test_a_failing_backend_gives_failsafe_verdicts_and_a_gated_model_keeps_its_gate(gated_toy):
    counters = DaemonCounters()
    model = compose_model(gated_toy, settings(inject_faults="infer-every=2"))
    stage = BatchStage(FrameQueues(lambda c: ("block", 8)), 4, 0, counters)
    stages = ModelStages(max_batch=4, counters=counters)
    ok = stages.run(stage.form([frame("a", 0, toy_frame(255))], model))
    failed = stages.run(stage.form([frame("a", 1, toy_frame(255))], model))
    assert ok[0].presence is not None, "fault injection must not hide the presence gate"
    assert failed[0].scores is None and "injected backend fault" in failed[0].error
    assert counters.snapshot()["infer_failures"] == 1
    decider = Decider(ServeConfig(bundle="x"), counters)
    ((topic, body),) = decider.messages(failed[0])
    assert topic == "reject" and body["verdict"] == "ERROR" and body["frame_id"] == 1
    assert "injected" in body["reasons"][0]


def test_decide_turns_a_late_frame_into_the_failsafe_verdict(toy):
    model = load_model(toy, settings(max_batch=4))
    never = dict.fromkeys((1, 2, 3, 4), 1.0)  # no probability exceeds 1: always OK in time
    config = ServeConfig(bundle=str(toy), failsafe_verdict="REJECT",
                         cameras={"late": CameraSettings(deadline_ms=20, thresholds=never)},
                         camera=CameraSettings(thresholds=never))
    counters = DaemonCounters()
    stage = BatchStage(FrameQueues(lambda c: ("block", 8)), 4, 0, counters,
                       camera_for=config.for_camera)
    received = 1_000_000_000_000
    on_time, late = (ModelStages(4).run(stage.form([frame(c, 7, toy_frame(100), received)],
                                                    model))[0] for c in ("ontime", "late"))
    ((_, body),) = Decider(config, counters).messages(on_time, now_ns=received + 10**9)
    assert body["verdict"] == "OK"  # no deadline for this camera; nothing above 1.0
    ((_, body),) = Decider(config, counters).messages(late, now_ns=received + 19_000_000)
    assert body["verdict"] == "OK"  # 19 ms: in time
    ((_, body),) = Decider(config, counters).messages(late, now_ns=received + 25_000_000)
    assert body["verdict"] == "REJECT" and body["reasons"][0].startswith("deadline missed")
    assert counters.snapshot()["deadline_missed"] == 1


def test_decide_thresholds_gate_and_masks(gated_toy):
    model = load_model(gated_toy, settings(max_batch=4))
    config = ServeConfig(bundle=str(gated_toy), publish_masks=True,
                         camera=CameraSettings(thresholds={1: 0.1, 2: 0.9}))
    # The camera's thresholds go into the batch: the graph (or the host, for this older
    # bundle) scores each tile at them.
    stage = BatchStage(FrameQueues(lambda c: ("block", 8)), 4, 0, DaemonCounters(),
                       camera_for=config.for_camera)
    pixels = toy_frame(0)
    pixels[:, :40] = 153  # p = 0.6 in one corner: over class 1's 0.1, under class 2's 0.9
    (item,) = ModelStages(4).run(stage.form([frame("a", 3, pixels)], model))
    (_, reject), (_, mask) = Decider(config).messages(item)
    assert reject["verdict"] == "REJECT" and reject["classes"]["1"]["area"] == 64 * 40
    assert reject["classes"]["2"]["area"] == 0  # under its threshold
    assert reject["classes"]["3"]["area"] == 64 * 40  # bundle threshold 0.5
    assert reject["presence"]["1"] == pytest.approx(0.6, abs=1e-4)
    assert mask["height"] == 64 and mask["width"] == 256 and set(mask["classes"]) == \
        {"1", "2", "3", "4"}
    # The presence gate (0.5 in this bundle) drops a class whose frame maximum is below it.
    (item,) = ModelStages(4).run(stage.form([frame("a", 4, np.full((64, 256), 102,
                                                                   np.uint8))], model))
    (_, reject), _ = Decider(config).messages(item)
    assert reject["presence"]["1"] == pytest.approx(0.4, abs=1e-4)
    assert reject["classes"]["1"]["area"] == 0 and reject["verdict"] == "OK"


class Events(list):
    def __call__(self, body):
        self.append(body)


def receiver(**config) -> tuple[ReceiveStage, Events, FrameQueues, DaemonCounters]:
    events, counters = Events(), DaemonCounters()
    serve = ServeConfig(bundle="x", **config)
    queues: FrameQueues[Frame] = FrameQueues(
        lambda c: (serve.for_camera(c).overload, serve.for_camera(c).queue_size))
    return ReceiveStage(serve, None, queues, counters, events), events, queues, counters


def test_receive_turns_every_bad_message_into_an_error_with_what_it_knows():
    stage, events, queues, counters = receiver()
    good = json.dumps({"schema": 1, "camera_id": "c", "frame_id": 9, "timestamp_ns": 1,
                       "encoding": "mono8", "shape": [4, 4]}).encode()
    stage.accept([good, b"short"])
    stage.accept([b"{not json", b""])
    stage.accept(protocol.encode_frame(FrameHeader("c", 10, 1, "mono8", (4, 4)),
                                       np.zeros((4, 4), np.uint8)))
    assert [(e["kind"], e["camera_id"], e["frame_id"]) for e in events] == \
        [("error", "c", 9), ("error", None, None)]
    assert queues.depth() == {"c": 1}
    assert counters.snapshot()["received"] == 3 and counters.snapshot()["errors"] == 2


def test_receive_reports_drops_of_a_full_queue_and_an_roi_that_does_not_fit():
    stage, events, queues, counters = receiver(
        camera=CameraSettings(overload="drop-oldest", queue_size=2, roi=[0, 0, 4, 4]))
    for i in range(4):
        stage.accept(protocol.encode_frame(FrameHeader("c", i, 1, "mono8", (8, 8)),
                                           np.zeros((8, 8), np.uint8)))
    stage.accept(protocol.encode_frame(FrameHeader("c", 9, 1, "mono8", (2, 2)),
                                       np.zeros((2, 2), np.uint8)))
    assert [(e["kind"], e["frame_id"]) for e in events] == [("drop", 0), ("drop", 1),
                                                            ("error", 9)]
    assert events[0]["reason"] == "overload: drop-oldest" and "ROI" in events[2]["reason"]
    assert queues.depth() == {"c": 2} and counters.snapshot()["dropped"] == 2


def test_gap_detection_names_every_missing_id_and_a_range_after_the_limit():
    ids = FrameIdTracker(report_gaps=True)
    checks = [ids.observe("c", i) for i in (0, 1, 4, 5)]
    assert [list(c.missing) for c in checks] == [[], [], [2, 3], []]
    events = gap_events("c", range(10, 10 + MAX_GAP_EVENTS + 5))
    assert len(events) == MAX_GAP_EVENTS + 1
    assert events[-1]["frame_id"] is None and events[-1]["frame_ids"] == \
        [10 + MAX_GAP_EVENTS, 10 + MAX_GAP_EVENTS + 4]
    stage, events, _, counters = receiver(input_mode="sub")
    for frame_id in (0, 1, 4):
        stage.accept(protocol.encode_frame(FrameHeader("c", frame_id, 1, "mono8", (2, 2)),
                                           np.zeros((2, 2), np.uint8)))
    assert [e["frame_id"] for e in events] == [2, 3]
    assert counters.snapshot()["never_arrived"] == 2


def test_frame_ids_across_a_camera_restart_give_exactly_the_lost_ids():
    sub = FrameIdTracker(report_gaps=True)
    before = [sub.observe("c", i, "boot-1") for i in (0, 1, 2, 5, 6)]  # 3, 4 lost
    restart = sub.observe("c", 0, "boot-2")  # the camera restarted, counting from 0
    after = [sub.observe("c", i, "boot-2") for i in (1, 4)]  # 2, 3 lost
    assert [list(c.missing) for c in before] == [[], [], [], [3, 4], []]
    assert (restart.issue, restart.previous, list(restart.missing)) == ("restart", 6, [])
    assert [list(c.missing) for c in after] == [[], [2, 3]]
    # Without a stream id, an id that goes backwards in SUB mode is a counter reset too.
    plain = FrameIdTracker(report_gaps=True)
    assert [plain.observe("c", i).issue for i in (7, 8, 0, 1)] == ["", "", "restart", ""]
    assert list(plain.observe("c", 3).missing) == [2]


def test_pull_mode_flags_repeated_and_backward_ids_and_reports_no_gaps():
    pull = FrameIdTracker(report_gaps=False)
    checks = [pull.observe("c", i) for i in (0, 1, 5, 5, 3, 4)]
    assert [(c.issue, list(c.missing)) for c in checks] == [
        ("", []), ("", []), ("", []), ("repeated", []), ("backwards", []), ("", [])]
    assert checks[3].previous == 5


def test_repeated_ids_get_an_event_and_still_exactly_one_verdict_each(toy):
    stage, events, queues, counters = receiver()
    for frame_id in (4, 4, 2):
        stage.accept(protocol.encode_frame(FrameHeader("c", frame_id, 1, "mono8", (4, 4)),
                                           np.zeros((4, 4), np.uint8)))
    assert [(e["kind"], e["issue"], e["frame_id"]) for e in events] == [
        ("frame_order", "repeated", 4), ("frame_order", "backwards", 2)]
    assert queues.depth() == {"c": 3} and len(stage.in_flight) == 3  # all three go on
    assert counters.snapshot()["out_of_order"] == 2


def test_unknown_and_surplus_cameras_are_refused_without_new_state():
    stage, events, queues, _ = receiver(camera_ids=["lane1", "lane2"])
    for camera in ("lane1", "intruder", "lane2"):
        stage.accept(protocol.encode_frame(FrameHeader(camera, 1, 1, "mono8", (4, 4)),
                                           np.zeros((4, 4), np.uint8)))
    assert [(e["camera_id"], "not one of" in e["reason"]) for e in events] == [
        ("intruder", True)]
    assert set(queues.depth()) == stage.cameras == {"lane1", "lane2"}
    capped, events, queues, _ = receiver(max_cameras=2)
    for i in range(1000):
        capped.accept(protocol.encode_frame(FrameHeader(f"cam{i}", 1, 1, "mono8", (4, 4)),
                                            np.zeros((4, 4), np.uint8)))
    assert len(capped.cameras) == 2 and len(queues.depth()) == 2
    assert len(events) == 998 and all("max_cameras" in e["reason"] for e in events)
    labels = {s.labels.get("camera") for m in capped.counters.registry.collect()
              for s in m.samples if "camera" in s.labels}
    assert labels == {"cam0", "cam1", "unknown"}  # no metrics series per made-up camera


def test_a_camera_that_counts_at_the_source_has_its_upstream_losses_reported_in_pull_mode():
    stage, events, _, counters = receiver(camera=CameraSettings(report_gaps=True))
    for frame_id in (10, 11, 14):  # a bridge lost 12 and 13 between camera and daemon
        stage.accept(protocol.encode_frame(FrameHeader("gige0", frame_id, 1, "mono8", (2, 2),
                                                       stream_id="gige0-1"),
                                           np.zeros((2, 2), np.uint8)))
    assert [(e["kind"], e["frame_id"]) for e in events] == [("drop", 12), ("drop", 13)]
    assert "lost before the daemon" in events[0]["reason"]
    assert counters.snapshot()["dropped"] == 2


class Closing:
    """Records where a backend was closed (a spy around a real ONNX Runtime backend)."""

    def __init__(self, backend) -> None:
        self.backend, self.closed_on = backend, None

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def close(self) -> None:
        import threading

        self.closed_on = threading.current_thread().name
        self.backend.close()


def test_a_swapped_out_model_is_closed_on_the_infer_thread_after_its_last_batch(toy):
    import threading

    old, new = compose_model(toy, settings()), compose_model(toy, settings())
    old.backend, new.backend = Closing(old.backend), Closing(new.backend)
    stages = ModelStages(max_batch=8)
    batcher = BatchStage(FrameQueues(lambda c: ("block", 8)), 8, 0, DaemonCounters())
    seen = []

    def infer_thread() -> None:
        for model in (old, old, new, new):
            seen.append(stages.run(batcher.form([frame("c", len(seen), toy_frame(9))],
                                                model))[0].error)

    worker = threading.Thread(target=infer_thread, name="edge-infer")
    worker.start()
    worker.join(30)
    assert seen == ["", "", "", ""]  # every batch ran on its own model
    assert old.backend.closed_on == "edge-infer" and new.backend.closed_on is None
    assert stages.closed == 1


def test_a_frame_scored_at_other_thresholds_gets_the_failsafe_verdict_not_silence(gated_toy):
    """Post-processing that fails (here: the batch was scored at the bundle's thresholds,
    the camera has its own) must still give the frame a verdict: its in-flight entry is
    settled before decide runs, so silence would let the part pass."""
    model = load_model(gated_toy, settings(max_batch=4))
    config = ServeConfig(bundle=str(gated_toy), failsafe_verdict="REJECT",
                         camera=CameraSettings(thresholds={1: 0.1}))
    counters = DaemonCounters()
    stage = BatchStage(FrameQueues(lambda c: ("block", 8)), 4, 0, counters)  # no camera_for
    (item,) = ModelStages(4).run(stage.form([frame("a", 5, toy_frame(0))], model))
    ((topic, body),) = Decider(config, counters).messages(item)
    assert topic == "reject" and body["verdict"] == "REJECT" and body["frame_id"] == 5
    assert body["reasons"][0].startswith("post-processing failed")
    assert counters.snapshot()["decide_failures"] == 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rollback_is_instant_while_the_previous_model_is_kept_then_reloads(toy, tmp_path):
    """ModelSlot keeps the model it swapped out for `keep_previous_s`; the infer stage
    does not close it meanwhile, and closes it once the time is up."""
    import shutil
    from pathlib import Path

    from lineside.edge.pipeline.model import ModelSlot

    second = tmp_path / "second"
    shutil.copytree(toy, second)
    loads, events, clock = [], [], Clock()

    def loader(path: str):
        loads.append(Path(path))
        model = compose_model(path, settings())
        model.backend = Closing(model.backend)
        return model

    first = loader(str(toy))
    slot = ModelSlot(first, loader, events.append, lambda m, r: None, tmp_path.parent.parent,
                     keep_previous_s=60, clock=clock)
    stages = ModelStages(max_batch=8, retained=slot.retained)
    batcher = BatchStage(FrameQueues(lambda c: ("block", 8)), 8, 0, DaemonCounters())

    def one_batch() -> None:
        stages.run(batcher.form([frame("c", 0, toy_frame(9))], slot.current))

    one_batch()
    assert slot.swap(str(second))["ok"]
    swapped_in = slot.current
    one_batch()  # the first model's last batch is behind us, but it is kept
    assert first.backend.closed_on is None and slot.retained(first)
    back = slot.rollback()
    assert back == {"ok": True, "serving": str(toy), "rolled_back_from": str(second),
                    "warm": True}
    assert slot.current is first and len(loads) == 2  # nothing loaded again
    one_batch()  # the model rolled back from is not kept: closed now
    assert swapped_in.backend.closed_on is not None and stages.closed == 1
    assert "nothing to roll back" in slot.rollback()["error"]
    # After the keep time, a rollback loads the previous bundle again.
    assert slot.swap(str(second))["ok"]
    clock.now = 61
    one_batch()
    assert first.backend.closed_on is not None  # no longer kept: closed
    cold = slot.rollback()
    assert cold["ok"] and cold["warm"] is False and cold["serving"] == str(toy)
    assert loads[-1] == toy and slot.current is not first

"""The daemon as a real process on real ZeroMQ sockets (127.0.0.1)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from lineside.edge import protocol
from lineside.edge.protocol import FrameHeader
from tests.helpers import free_endpoint
from tests.system.line import assert_every_frame_once, collect, header, serve, strip

pytestmark = pytest.mark.slow


def test_n_frames_give_exactly_n_results(trained_bundle):
    with serve(trained_bundle) as d:
        n = 12
        for i in range(n):
            d.sender.send(header("cam0", i), strip(i))
        book = collect(d.subscriber, n)
        assert book.errors == [] and book.drops == []
        assert book.ids("results") == list(range(n))  # all, once, in order
        for r in book.results:
            assert r["verdict"] in ("OK", "REJECT")
            assert set(r["classes"]) == {"1", "2", "3", "4"}
            assert r["latency_ms"] >= 0
        assert collect(d.subscriber, 1, timeout_s=1.0).accounted == 0  # no duplicates


@pytest.mark.parametrize("decide_workers", ["1", "3"])
def test_two_cameras_every_frame_in_order_per_camera(trained_bundle, decide_workers):
    # 3: post-processing on a pool, where a clean frame finishes before a defective one
    with serve(trained_bundle, "--max-batch", "14", "--decide-workers", decide_workers) as d:
        sent = set()
        for i in range(10):
            for camera, shape in (("lane1", (256, 1600)), ("lane2", (256, 800))):
                d.sender.send(header(camera, i, shape), strip(i, shape))
                sent.add((camera, i))
        book = collect(d.subscriber, len(sent))
        assert_every_frame_once(book, sent)
        assert book.ids("results", "lane1") == list(range(10))
        assert book.ids("results", "lane2") == list(range(10))


def malformed_messages(count: int, seed: int = 0) -> list[list[bytes]]:
    """Assorted broken frame messages, each of which must give one error event."""
    rng = random.Random(seed)
    good = {"schema": 1, "camera_id": "cam0", "frame_id": 0, "timestamp_ns": 1,
            "encoding": "mono8", "shape": [64, 64]}

    def header_with(**changes) -> bytes:
        return json.dumps({**good, **changes}).encode()

    kinds = [
        lambda i: [b"{not json"],
        lambda i: [b"\xff\xfe\x00", b""],
        lambda i: [header_with(frame_id=i), b"short"],
        lambda i: [header_with(frame_id=i, schema=7), b"\0" * 4096],
        lambda i: [header_with(frame_id=i, encoding="h264"), b"\0" * 4096],
        lambda i: [header_with(frame_id=i, shape=[0, 10]), b""],
        lambda i: [header_with(frame_id=i, shape=[70000, 70000]), b""],
        lambda i: [header_with(frame_id=i, encoding="png"), b"\x89PNG broken"],
        lambda i: [header_with(frame_id=i, encoding="jpeg"), b""],
        lambda i: [header_with(frame_id=i), b"\0" * 4096, b"extra part"],
        lambda i: [b"[" * 5000 + b"]" * 5000, b""],
        lambda i: [header_with(frame_id=-i - 1), b"\0" * 4096],
        lambda i: [header_with(frame_id=i, camera_id=None), b"\0" * 4096],
        lambda i: [header_with(frame_id=i, timestamp_ns="now"), b"\0" * 4096],
        lambda i: [b"x" * (protocol.MAX_HEADER_BYTES + 10), b""],
    ]
    return [rng.choice(kinds)(i) for i in range(count)]


def test_a_thousand_malformed_messages_give_a_thousand_errors_and_service_goes_on(
        trained_bundle):
    with serve(trained_bundle) as d:
        for parts in malformed_messages(1000):
            d.sender.send_raw(parts)
        d.sender.send(header("cam0", 5000), strip(1))
        book = collect(d.subscriber, 1001, timeout_s=120)
        assert len(book.errors) == 1000
        assert all(e["reason"] for e in book.errors)
        assert book.ids("results") == [5000]
        assert d.proc.poll() is None


def test_sub_mode_reports_exactly_the_frame_ids_that_never_arrived(trained_bundle):
    context = zmq.Context.instance()
    camera = context.socket(zmq.PUB)
    endpoint = free_endpoint()
    camera.bind(endpoint)
    try:
        with serve(trained_bundle, input_mode="sub", frames_in=endpoint) as d:
            # PUB/SUB: wait until the daemon's subscription is live before the real stream.
            probe = 0
            while not collect(d.subscriber, 1, timeout_s=0.3).results:
                camera.send_multipart(protocol.encode_frame(header("probe", probe, (64, 64)),
                                                            strip(probe, (64, 64))))
                probe += 1
                assert probe < 200, "daemon never subscribed"
            collect(d.subscriber, 10**6, timeout_s=1.0)  # let the probe results drain
            sent = [0, 1, 2, 5, 6, 9, 10, 11, 15]
            for frame_id in sent:
                camera.send_multipart(protocol.encode_frame(header("cam0", frame_id, (64, 64)),
                                                            strip(frame_id, (64, 64))))
                time.sleep(0.01)
            book = collect(d.subscriber, 16)
            assert book.ids("results", "cam0") == sent
            assert sorted(book.ids("drops", "cam0")) == [3, 4, 7, 8, 12, 13, 14]
            assert all("never arrived" in m["reason"] for m in book.drops)
    finally:
        camera.close(linger=0)


def test_a_camera_restart_in_sub_mode_reports_exactly_the_lost_ids(trained_bundle):
    context = zmq.Context.instance()
    camera = context.socket(zmq.PUB)
    endpoint = free_endpoint()
    camera.bind(endpoint)

    def send(frame_id: int, stream: str) -> None:
        head = FrameHeader("cam0", frame_id, time.time_ns(), "mono8", (64, 64),
                           stream_id=stream)
        camera.send_multipart(protocol.encode_frame(head, strip(frame_id, (64, 64))))
        time.sleep(0.01)

    try:
        with serve(trained_bundle, input_mode="sub", frames_in=endpoint) as d:
            probe = 0
            while not collect(d.subscriber, 1, timeout_s=0.3).results:
                send(probe, "probe")
                probe += 1
                assert probe < 200, "daemon never subscribed"
            collect(d.subscriber, 10**6, timeout_s=1.0)
            before, after = [0, 1, 2, 5, 6], [0, 1, 4, 5]  # lost: 3, 4, then 2, 3
            for frame_id in before:
                send(frame_id, "boot-1")
            for frame_id in after:  # the camera restarted and counts from 0 again
                send(frame_id, "boot-2")
            book = collect(d.subscriber, len(before) + len(after) + 4)
            assert book.ids("results", "cam0") == before + after
            assert book.ids("drops", "cam0") == [3, 4, 2, 3]
            restarts = [b for t, b in book.others if b.get("kind") == "frame_order"]
            # The probe stream ended at a new stream id too: both changes are reported.
            assert [(b["issue"], b["stream_id"]) for b in restarts][-1] == \
                ("restart", "boot-2")
    finally:
        camera.close(linger=0)


def test_repeated_frame_ids_are_reported_and_each_frame_gets_one_verdict(trained_bundle):
    with serve(trained_bundle) as d:
        ids = [0, 1, 1, 0]
        for frame_id in ids:
            d.sender.send(header("cam0", frame_id), strip(frame_id))
        book = collect(d.subscriber, len(ids))
        time.sleep(0.5)
        collect(d.subscriber, 10**6, timeout_s=0.5, into=book)
        assert book.ids("results") == ids  # one verdict per frame sent, in order
        order = [(b["issue"], b["frame_id"], b["previous"]) for t, b in book.others
                 if b.get("kind") == "frame_order"]
        assert order == [("repeated", 1, 1), ("backwards", 0, 1)]


def test_sigterm_drains_in_flight_frames_and_exits_zero(trained_bundle):
    with serve(trained_bundle) as d:
        n = 8
        for i in range(n):
            d.sender.send(header("cam1", i), strip(i))
        first = collect(d.subscriber, 1)  # the daemon is busy with the rest now
        d.proc.send_signal(signal.SIGTERM)
        rest = collect(d.subscriber, n - 1, into=None)
        assert first.ids("results") + rest.ids("results") == list(range(n))
        assert d.proc.wait(timeout=60) == 0


def test_drop_policies_account_for_every_frame(trained_bundle):
    with serve(trained_bundle, "--overload", "drop-oldest", "--queue-size", "2",
               "--max-batch", "7") as d:
        n = 40
        for i in range(n):
            d.sender.send(header("cam0", i), strip(i))
        book = collect(d.subscriber, n)
        assert_every_frame_once(book, {("cam0", i) for i in range(n)})
        assert book.drops, "a flood into a queue of 2 must drop something"
        assert all(m["reason"] == "overload: drop-oldest" for m in book.drops)
        assert book.ids("results")[-1] == n - 1  # drop-oldest keeps the newest frame


def test_masks_as_rle_and_png(trained_bundle):
    for fmt in ("rle", "png"):
        with serve(trained_bundle, "--masks", "--mask-format", fmt) as d:
            d.sender.send(header("cam0", 1), strip(1))
            deadline, mask = time.monotonic() + 60, None
            while mask is None and time.monotonic() < deadline:
                message = d.subscriber.receive(0.5)
                if message and message[0] == "mask":
                    mask = message[1]
            assert mask is not None and mask["frame_id"] == 1 and mask["encoding"] == fmt
            if fmt == "rle":
                assert set(mask["classes"]) == {"1", "2", "3", "4"}
            else:
                labels = cv2.imdecode(np.frombuffer(mask["attachment"], np.uint8),
                                      cv2.IMREAD_UNCHANGED)
                assert labels.shape == (256, 1600) and labels.max() <= 4


def broken_copy(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model_fp32.onnx").write_bytes(b"not a model")
    return broken


def renamed_copy(bundle, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["name"] = name
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_hot_swap_under_load_loses_no_frame_and_a_broken_bundle_rolls_back(
        trained_bundle, tmp_path):
    second = renamed_copy(trained_bundle, tmp_path, "second-model")
    broken = broken_copy(trained_bundle, tmp_path)
    control = free_endpoint()
    with serve(trained_bundle, "--control", control, "--max-batch", "7", "--bundle-root",
               str(tmp_path.parent)) as d:
        n = 60
        sender_done = threading.Event()

        def camera() -> None:
            for i in range(n):
                d.sender.send(header("cam0", i, (256, 512)), strip(i, (256, 512)))
                time.sleep(0.02)
            sender_done.set()

        thread = threading.Thread(target=camera)
        thread.start()
        book = collect(d.subscriber, 10)
        request = zmq.Context.instance().socket(zmq.REQ)
        request.connect(control)
        request.send_json({"command": "swap", "bundle": str(second)})
        assert request.recv_json()["ok"] is True
        collect(d.subscriber, 30, into=book)
        request.send_json({"command": "swap", "bundle": str(broken)})
        reply = request.recv_json()
        assert reply["ok"] is False and "integrity" in reply["error"]
        assert reply["serving"] == str(second)
        request.close(linger=0)
        thread.join()
        collect(d.subscriber, n, into=book)
        assert_every_frame_once(book, {("cam0", i) for i in range(n)})
        models = [r["model"] for r in book.results]
        assert models[0] == "mini" and models[-1] == "second-model"
        assert models == sorted(models, key=lambda m: m == "second-model")  # one switch
        statuses = [b["status"] for t, b in book.others if b.get("kind") == "model"]
        assert statuses == ["swapped", "rolled_back"]


def test_a_swap_outside_the_bundle_root_is_refused(trained_bundle, tmp_path):
    outside = renamed_copy(trained_bundle, tmp_path, "elsewhere")  # not beside the bundle
    control = free_endpoint()
    with serve(trained_bundle, "--control", control) as d:
        request = zmq.Context.instance().socket(zmq.REQ)
        request.connect(control)
        try:
            for path in (str(outside), str(trained_bundle.parent / ".." / tmp_path.name)):
                request.send_json({"command": "swap", "bundle": path})
                reply = request.recv_json()
                assert reply["ok"] is False and "outside" in reply["error"]
                assert reply["serving"] == str(trained_bundle)
        finally:
            request.close(linger=0)
        d.sender.send(header("cam0", 1), strip(1))
        book = collect(d.subscriber, 1)
        assert book.results[0]["model"] == "mini"
        refused = [b for t, b in book.others if b.get("kind") == "model"]
        assert [b["status"] for b in refused] == ["refused", "refused"]


def test_sighup_reloads_the_configured_bundle(trained_bundle):
    with serve(trained_bundle) as d:
        d.proc.send_signal(signal.SIGHUP)
        deadline, event = time.monotonic() + 60, None
        while event is None and time.monotonic() < deadline:
            message = d.subscriber.receive(0.5)
            if message and message[1].get("kind") == "model":
                event = message[1]
        assert event is not None and event["status"] == "swapped"
        d.sender.send(header("cam0", 1), strip(1))
        assert collect(d.subscriber, 1).ids("results") == [1]


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_metrics_endpoint_counters_match_what_was_sent(trained_bundle):
    port = int(free_endpoint().rsplit(":", 1)[1])
    with serve(trained_bundle, "--metrics", f"127.0.0.1:{port}") as d:
        assert scrape(port, "/healthz")[0] == 200
        assert scrape(port, "/readyz")[0] == 200
        good, bad = 7, 5
        for i in range(good):
            d.sender.send(header("cam0", i), strip(i))
        for parts in malformed_messages(bad, seed=3):
            d.sender.send_raw([parts[0]] if len(parts) > 2 else parts)
        collect(d.subscriber, good + bad)
        samples = {}
        for family in text_string_to_metric_families(scrape(port)[1]):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        def total(name: str, **labels) -> float:
            return sum(v for (n, lab), v in samples.items()
                       if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))
        assert total("lineside_frames_received_total") == good + bad
        assert total("lineside_frames_results_total", camera="cam0") == good
        assert total("lineside_frames_errors_total") == bad
        assert total("lineside_stage_seconds_count", stage="infer") >= 1
        assert total("lineside_batch_tiles_count") >= 1
        assert any(n == "lineside_model_info" for n, _ in samples)


def test_each_camera_has_its_own_rules_roi_and_deadline(trained_bundle, tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text("""
[serve]
publish_masks = true
[serve.cameras.strict.thresholds]
1 = 0.0
[serve.cameras.lenient]
roi = [100, 0, 512, 256]
[serve.cameras.lenient.thresholds]
1 = 1.0
2 = 1.0
3 = 1.0
4 = 1.0
[serve.cameras.late]
deadline_ms = 0.001
""")
    with serve(trained_bundle, "--config", str(config)) as d:
        for camera in ("strict", "lenient", "late"):
            d.sender.send(header(camera, 1), strip(1))
        book = collect(d.subscriber, 3)
        verdicts = {r["camera_id"]: r for r in book.results}
        assert verdicts["strict"]["verdict"] == "REJECT"
        assert verdicts["strict"]["classes"]["1"]["area"] == 256 * 1600
        assert verdicts["lenient"]["verdict"] == "OK"
        assert verdicts["late"]["verdict"] == "ERROR"
        assert verdicts["late"]["reasons"][0].startswith("deadline missed")
        masks = {b["camera_id"]: b for t, b in book.others if t == "mask"}
        masks.update({b["camera_id"]: b for t, b in collect(d.subscriber, 10**6,
                                                            timeout_s=1).others if t == "mask"})
        assert (masks["lenient"]["height"], masks["lenient"]["width"]) == (256, 512)
        assert (masks["strict"]["height"], masks["strict"]["width"]) == (256, 1600)

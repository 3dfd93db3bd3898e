"""Learning from the line with real edge-serve processes on 127.0.0.1: the record policy
against the published verdicts, the shadow model against the two models run offline,
promote under load, a refused promote, rollback."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from lineside.edge import protocol
from lineside.edge.bundle import load_bundle
from lineside.edge.config import ModelSettings
from lineside.edge.labels import open_dataset
from lineside.edge.pipeline.decide import agreement
from lineside.edge.pipeline.model import load_model
from lineside.edge.pipeline.record import read_meta, sampled
from tests.helpers import free_endpoint, run_module
from tests.system.line import (
    SPLIT_VERDICTS_CONFIG,
    Accounting,
    assert_every_frame_once,
    collect,
    header,
    next_heartbeat,
    serve,
)

pytestmark = pytest.mark.slow

BAND, OK_FRACTION = 0.02, 0.05
WIDTH = 512  # two 256x256 tiles per frame: quick on a CPU


def line_frames(synth_data: Path, count: int) -> list[np.ndarray]:
    """Generated strips cut to 256x512, brightness varied: a spread of verdicts and
    probabilities from a briefly trained model."""
    images = sorted((synth_data / "train_images").glob("*.jpg"))
    frames = []
    for i in range(count):
        gray = cv2.imread(str(images[i % len(images)]), cv2.IMREAD_GRAYSCALE)
        shift = (i // len(images)) * 9 - 20
        frames.append(np.clip(gray[:, :WIDTH].astype(int) + shift, 0, 255).astype(np.uint8))
    return frames


def expected_reason(result: dict, thresholds: dict[int, float]) -> str | None:
    """The record policy, from a published result (None: too close to a band's edge to
    tell from the 4 decimals a result carries)."""
    if result["verdict"] == "ERROR":
        return "error"
    if result["verdict"] == "REJECT":
        return "reject"
    for class_id, summary in result["classes"].items():
        limit = thresholds[int(class_id)]
        distance = abs(summary["max_probability"] - limit)
        if limit > 0 and abs(distance - BAND) < 2e-4:
            return None
        if limit > 0 and distance <= BAND:
            return "uncertain"
    return "sample" if sampled(result["camera_id"], result["frame_id"], OK_FRACTION) else ""


def test_recording_keeps_exactly_what_the_policy_picks_within_the_quota(
        trained_bundle, synth_data, tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text(SPLIT_VERDICTS_CONFIG)
    record, quota_mb = tmp_path / "recorded", 12.0
    frames = line_frames(synth_data, 500)
    cameras = ("cam0", "bad", "good")
    with serve(trained_bundle, "--config", str(config), "--record", str(record),
               "--record-band", str(BAND), "--record-ok-fraction", str(OK_FRACTION),
               "--record-quota-mb", str(quota_mb)) as d:
        sent = set()
        for i, gray in enumerate(frames):
            camera = cameras[i % 3]
            d.sender.send(header(camera, i, gray.shape), gray)
            sent.add((camera, i))
        book = collect(d.subscriber, len(sent), timeout_s=300)
        assert_every_frame_once(book, sent)
    manifest = {c.id: c.threshold for c in load_bundle(trained_bundle).manifest.classes}
    limits = {"cam0": manifest, "bad": {**manifest, 1: 0.0},
              "good": dict.fromkeys(manifest, 1.0)}
    expected, unsure = {}, set()
    for result in book.results:
        reason = expected_reason(result, limits[result["camera_id"]])
        key = (result["camera_id"], result["frame_id"])
        if reason is None:
            unsure.add(key)
        elif reason:
            expected[key] = (reason, result["received_ns"])
    reasons = {reason for reason, _ in expected.values()}
    assert {"reject", "uncertain", "sample"} <= reasons, reasons
    kept = read_meta(record)  # oldest first
    kept_keys = [(m["camera_id"], m["frame_id"]) for m in kept]
    size = sum(p.stat().st_size for p in record.rglob("*") if p.is_file())
    assert size <= quota_mb * 1e6
    assert len(kept) < len(expected), "the quota should have deleted the oldest recordings"
    # What is left is the newest of exactly the picked frames, each for the policy's reason.
    assert set(kept_keys) <= set(expected) | unsure
    certain = [k for k in kept_keys if k not in unsure]
    by_time = [k for k, _ in sorted(expected.items(), key=lambda kv: kv[1][1])]
    assert certain == by_time[len(by_time) - len(certain):]
    results = {(r["camera_id"], r["frame_id"]): r for r in book.results}
    for meta in kept:
        key = (meta["camera_id"], meta["frame_id"])
        if key in expected:
            assert meta["recorded_because"] == expected[key][0]
        assert meta["verdict"] == results[key]["verdict"]
        assert meta["model"] and meta["bundle"] == str(trained_bundle)
    # The folder is a data set the project's tools read, both ways.
    assert len(open_dataset(record)) == len(kept)
    labelme = open_dataset(record / "images")
    assert labelme.format == "labelme" and len(labelme) == len(kept)
    run_module("lineside.calibration.cli", str(record), "-o", str(tmp_path / "cal"), "--n",
               "16")  # a calibration set from what the line saw


def test_heartbeat_counts_recordings(trained_bundle, synth_data, tmp_path):
    frames = line_frames(synth_data, 30)
    with serve(trained_bundle, "--record", str(tmp_path / "r"), "--record-ok-fraction",
               "1.0") as d:
        for i, gray in enumerate(frames):
            d.sender.send(header("cam0", i, gray.shape), gray)
        collect(d.subscriber, len(frames))
        beat = next_heartbeat(d.subscriber, 20,
                              lambda b: b["counters"]["recorded"] == len(frames))
        assert beat["recording"]["records"] == len(frames)
        assert beat["counters"]["record_dropped"] == 0


# -- shadow, promote, rollback --------------------------------------------------------
def control(endpoint: str, request: dict, timeout_s: float = 120) -> dict:
    with zmq.Context.instance().socket(zmq.REQ) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_json(request)
        assert sock.poll(int(timeout_s * 1000)), f"no answer to {request}"
        return sock.recv_json()


def paced(d, frames: list[np.ndarray], camera: str, first: int, gap_s: float,
          stop: threading.Event | None = None) -> set[tuple[str, int]]:
    """Send frames with gaps (a line below saturation, so a shadow gets its turn)."""
    sent = set()
    for i, gray in enumerate(frames):
        if stop is not None and stop.is_set():
            break
        d.sender.send(header(camera, first + i, gray.shape), gray)
        sent.add((camera, first + i))
        time.sleep(gap_s)
    return sent


def until_compared(d, control_at: str, frames: list[np.ndarray], minimum: int, gap_s: float,
                   first: int = 0, limit_s: float = 180) -> set[tuple[str, int]]:
    """Send every frame once, paced, then go on (cycling through them, frame id i showing
    frames[i % len]) until the shadow model has compared `minimum` frames: the shadow only
    gets the cores serving leaves, and on a loaded machine (a CI run beside other jobs)
    that is less. Bounded by `limit_s`."""
    sent: set[tuple[str, int]] = set()
    deadline = time.monotonic() + limit_s
    i = 0
    while time.monotonic() < deadline and (
            i < len(frames) or _status(control_at)["shadow"]["frames"] < minimum):
        gray = frames[i % len(frames)]
        d.sender.send(header("cam0", first + i, gray.shape), gray)
        sent.add(("cam0", first + i))
        i += 1
        time.sleep(gap_s)
    return sent


def shadow_messages(book: Accounting) -> dict[int, dict]:
    return {body["frame_id"]: body for topic, body in book.others
            if topic == protocol.TOPIC_SHADOW}


@pytest.fixture()
def candidate(strip_bundle, trained_bundle) -> Path:
    """The serving model's checkpoint as a whole-strip export with its class thresholds
    lowered by a fifth (a retuned candidate), in the serving bundle's folder (where swaps
    may load from): close to the serving model, not the same."""
    target = trained_bundle.parent / "candidate"
    if not target.exists():
        shutil.copytree(strip_bundle, target)
        manifest = json.loads((target / "manifest.json").read_text())
        for spec in manifest["classes"]:
            spec["threshold"] = round(spec["threshold"] * 0.8, 4)
        (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return target


def test_shadow_agreement_matches_the_two_models_run_offline(trained_bundle, candidate,
                                                             synth_data, tmp_path):
    frames = line_frames(synth_data, 40)
    control_at = free_endpoint()
    record = tmp_path / "recorded"  # rejects and disagreements only
    with serve(trained_bundle, "--shadow", str(candidate), "--control", control_at,
               "--record", str(record), "--record-ok-fraction", "0",
               "--record-band", "0") as d:
        book = Accounting(keep=True)
        sent = until_compared(d, control_at, frames, 5, 0.25)
        collect(d.subscriber, len(sent), into=book)
        deadline = time.monotonic() + 30
        while len(shadow_messages(book)) + _status(control_at)["shadow"]["dropped"] \
                < len(sent) and time.monotonic() < deadline:
            message = d.subscriber.receive(0.2)
            if message:
                book.add(*message)
        status = _status(control_at)["shadow"]
        assert_every_frame_once(book, sent)
    shadowed = shadow_messages(book)
    # On a quiet machine the shadow keeps up with a paced line; under other load its
    # lowest-priority thread gets less, and what it cannot take is dropped and counted.
    assert len(shadowed) >= 5, "a paced line should leave the shadow some time"
    assert status["frames"] == len(shadowed)
    assert status["dropped"] + len(shadowed) == len(sent)
    # The same two models offline, on the frames the shadow saw.
    settings = ModelSettings(backend="ort-cpu")
    serving, shadow = load_model(trained_bundle, settings), load_model(candidate, settings)
    offline = agreement(shadow, serving, [frames[i % len(frames)] for i in sorted(shadowed)])
    summary = offline.summary()
    assert status["verdict_agreement"] == pytest.approx(summary["verdict_agreement"],
                                                        abs=1 / len(shadowed) + 1e-9)
    assert status["dice"] == pytest.approx(summary["dice"], abs=5e-3)
    for class_id, dice in summary["dice_per_class"].items():
        assert status["dice_per_class"][class_id] == pytest.approx(dice, abs=1e-2)
    results = {b["frame_id"]: b for b in book.results}
    for frame_id, body in shadowed.items():
        assert body["serving_verdict"] == results[frame_id]["verdict"]
        assert body["agree"] == (not body["differences"])
        assert body["model"] == load_bundle(candidate).manifest.name
    # Every disagreement on a frame the policy did not keep anyway is recorded.
    kept = {m["frame_id"]: m for m in read_meta(record)}
    disagreed = {i for i, b in shadowed.items()
                 if b["differences"] and results[i]["verdict"] == "OK"}
    print(f"shadowed {len(shadowed)} frames, {len(disagreed)} disagreements on OK frames")
    assert {i for i, m in kept.items() if m["recorded_because"] == "disagreement"} == disagreed
    for i in disagreed:
        assert kept[i]["shadow"]["differences"] == shadowed[i]["differences"]
    assert {i for i, m in kept.items() if m["recorded_because"] == "reject"} == \
        {i for i, r in results.items() if r["verdict"] == "REJECT"}


def test_promote_under_load_loses_no_frame_and_rollback_restores(trained_bundle, candidate,
                                                                  synth_data):
    frames = line_frames(synth_data, 400)
    control_at = free_endpoint()
    with serve(trained_bundle, "--shadow", str(candidate), "--control", control_at,
               "--promote-min-frames", "5", "--promote-min-agreement", "0",
               "--promote-min-dice", "0") as d:
        book = Accounting(keep=True)
        sent = until_compared(d, control_at, frames[:20], 5, 0.2)
        collect(d.subscriber, len(sent), into=book)
        refused = control(control_at, {"command": "promote", "heldout": "/nonexistent"})
        assert not refused["ok"] and "held-out check" in refused["error"]
        # Frames keep coming while the model is promoted.
        stop = threading.Event()
        more: set = set()
        sender = threading.Thread(
            target=lambda: more.update(paced(d, frames[20:], "cam0", 10_000, 0.01, stop)))
        sender.start()
        time.sleep(0.5)
        promoted = control(control_at, {"command": "promote"})
        time.sleep(0.5)
        stop.set()
        sender.join()
        assert promoted["ok"], promoted
        assert promoted["serving"] == str(candidate)
        assert promoted["agreement"]["frames"] >= 5
        collect(d.subscriber, len(sent | more), into=book)
        assert_every_frame_once(book, sent | more)
        models = [b["model"] for b in book.results]
        assert models[0] == load_bundle(trained_bundle).manifest.name
        beat = next_heartbeat(d.subscriber, 10)
        assert beat["bundle"] == str(candidate) and "shadow" not in beat
        # Rollback: the previous model was kept loaded.
        back = control(control_at, {"command": "rollback"})
        assert back == {"ok": True, "serving": str(trained_bundle),
                        "rolled_back_from": str(candidate), "warm": True}
        beat = next_heartbeat(d.subscriber, 10, lambda b: b["bundle"] == str(trained_bundle))
        again = control(control_at, {"command": "rollback"})
        assert not again["ok"] and "nothing to roll back" in again["error"]


def test_promote_on_a_heldout_check_compares_both_models_there(trained_bundle, candidate,
                                                               tmp_path):
    from lineside.edge.pipeline.shadow import heldout_dice

    heldout = tmp_path / "heldout"
    run_module("lineside.train.data.synth", "-o", str(heldout), "--count", "6", "--seed",
               "5", "--start", "500")
    settings = ModelSettings(backend="ort-cpu")
    serving_dice = heldout_dice(load_model(trained_bundle, settings), str(heldout), 8)
    candidate_dice = heldout_dice(load_model(candidate, settings), str(heldout), 8)
    control_at = free_endpoint()
    better = candidate_dice >= serving_dice
    with serve(trained_bundle, "--control", control_at, "--shadow", str(candidate),
               "--promote-dice-tolerance", "0" if better else "1") as d:
        answer = control(control_at, {"command": "promote", "heldout": str(heldout)})
        assert answer["ok"], answer  # no live frames needed: the held-out check is the bar
        dice = answer["heldout"]["dice"]
        assert dice["candidate"] == pytest.approx(candidate_dice, abs=1e-6)
        assert dice["serving"] == pytest.approx(serving_dice, abs=1e-6)
        assert next_heartbeat(d.subscriber, 10,
                              lambda b: b["bundle"] == str(candidate))["model"]
    if not better:  # with no tolerance, a candidate worse there is refused
        with serve(trained_bundle, "--control", control_at, "--shadow", str(candidate)):
            strict = control(control_at, {"command": "promote", "heldout": str(heldout)})
            assert not strict["ok"] and "held-out Dice" in strict["error"]


def test_promote_below_the_bar_is_refused(trained_bundle, candidate, synth_data):
    control_at = free_endpoint()
    with serve(trained_bundle, "--control", control_at, "--promote-min-frames", "1000") as d:
        assert "no shadow model" in control(control_at, {"command": "promote"})["error"]
        assert control(control_at, {"command": "shadow", "bundle": str(candidate)})["ok"]
        sent = paced(d, line_frames(synth_data, 6), "cam0", 0, 0.2)
        collect(d.subscriber, len(sent))
        answer = control(control_at, {"command": "promote"})
        assert not answer["ok"] and "promote needs 1000" in answer["error"]
        assert next_heartbeat(d.subscriber, 10)["bundle"] == str(trained_bundle)
        outside = control(control_at, {"command": "shadow", "bundle": "/etc"})
        assert not outside["ok"] and "outside" in outside["error"]
        stopped = control(control_at, {"command": "shadow", "bundle": ""})
        assert stopped["stopped"] == str(candidate)


def _status(endpoint: str) -> dict:
    return control(endpoint, {"command": "status"})




# -- the whole loop: record, relabel, retrain --------------------------------------------
def relabel_from_truth(recorded: Path, truth: Path, sent: list[str]) -> int:
    """What the person at the labelling tool does, by script: replace each recorded
    frame's draft label map with the true masks (from the generator's labels). `sent`:
    the image name sent as each frame id. The number of frames relabelled."""
    from lineside.edge.labels import open_dataset as read

    samples = {s.name: s for s in read(truth).samples}
    for meta in read_meta(recorded):
        sample = samples[sent[meta["frame_id"]]]
        masks = sample.masks((1, 2, 3, 4), (256, 1600))
        label_map = np.zeros((256, 1600), np.uint8)
        for k in range(4):
            label_map[masks[k] > 0] = k + 1  # the generator's classes never overlap
        cv2.imwrite(str(recorded / meta["draft"]["mask"]), label_map)
    return len(read_meta(recorded))


def test_recorded_frames_relabelled_retrain_a_better_model_for_the_drifted_line(
        trained_bundle, tmp_path):
    from lineside.edge.pipeline.shadow import heldout_dice

    # The line changed: its light is brighter (the same kind of steel, seen lighter).
    line, heldout = tmp_path / "line", tmp_path / "heldout"
    run_module("lineside.train.data.synth", "-o", str(line), "--count", "40", "--seed", "11",
               "--start", "100", "--offset", "70")
    run_module("lineside.train.data.synth", "-o", str(heldout), "--count", "16", "--seed",
               "11", "--start", "300", "--offset", "70")
    names = [s.name for s in open_dataset(line).samples]
    recorded = tmp_path / "recorded"
    with serve(trained_bundle, "--record", str(recorded)) as d:  # the default policy
        for i, name in enumerate(names):
            gray = cv2.imread(str(line / "train_images" / name), cv2.IMREAD_GRAYSCALE)
            d.sender.send(header("cam0", i), gray)
        collect(d.subscriber, len(names))
    assert relabel_from_truth(recorded, line, names) >= 20
    retrained = tmp_path / "retrained.pt"
    run_module("lineside.train.cli", f"data={recorded}", f"out={retrained}",
               f"init={trained_bundle.parent / 'mini.pt'}", "epochs=5",
               "samples_per_epoch=32", "batch_size=4", "val_fraction=0.2")
    bundle = tmp_path / "retrained"
    run_module("lineside.export.cli", str(retrained), "-o", str(bundle), "--inference",
               "tiles")
    settings = ModelSettings(backend="ort-cpu")
    before = heldout_dice(load_model(trained_bundle, settings), str(heldout), 8)
    after = heldout_dice(load_model(bundle, settings), str(heldout), 8)
    print(f"held-out Dice on the drifted line: serving model {before:.4f}, retrained on "
          f"{len(read_meta(recorded))} recorded frames {after:.4f}")
    assert after > before + 0.02, (before, after)

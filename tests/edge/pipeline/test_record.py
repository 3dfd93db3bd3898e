"""The record stage in-process: the policy's choices, draft labels that read back as the
masks they came from, the disk quota (oldest first), and a full queue that drops the
recording, never blocks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lineside.edge.labels import open_dataset
from lineside.edge.labels.drafts import labelme_document, polygons
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.decide import Decided
from lineside.edge.pipeline.record import (
    Record,
    Recorder,
    RecordPolicy,
    TokenBucket,
    near,
    read_meta,
    sampled,
)
from lineside.edge.protocol import Frame, FrameHeader

CLASS_IDS = [1, 2, 3, 4]


@st.composite
def blobs(draw) -> np.ndarray:
    """A (32, 48) mask of a few filled rectangles and ellipses (no holes)."""
    mask = np.zeros((32, 48), np.uint8)
    for _ in range(draw(st.integers(1, 4))):
        x, y = draw(st.integers(0, 47)), draw(st.integers(0, 31))
        w, h = draw(st.integers(0, 15)), draw(st.integers(0, 10))
        if draw(st.booleans()):
            cv2.rectangle(mask, (x, y), (min(47, x + w), min(31, y + h)), 1, -1)
        else:
            cv2.ellipse(mask, (x, y), (w, h), 0, 0, 360, 1, -1)
    return mask


@settings(max_examples=150, deadline=None)
@given(blobs())
def test_draft_polygons_fill_back_to_the_mask(mask):
    """LabelMe polygons of a hole-free mask, filled as labelme.py fills them, give the
    mask back (pixels within one of the outline may differ on thin diagonal parts)."""
    document = labelme_document(mask[None], [3], "x.png")
    filled = np.zeros_like(mask)
    for shape in document["shapes"]:
        assert shape["label"] == "3"
        corners = np.asarray(shape["points"], np.int32)
        if shape["shape_type"] == "polygon":
            cv2.fillPoly(filled, [corners], 1)
        else:
            (x0, y0), (x1, y1) = corners
            cv2.rectangle(filled, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)
    assert (filled >= mask).all()  # every pixel of the mask is covered
    grown = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    assert (filled <= grown).all()  # nothing beyond one pixel of it
    assert len(polygons(mask)) == len(document["shapes"])


def test_policy_reasons_in_order():
    policy = RecordPolicy(ok_fraction=0.0, band=0.1)
    limits, gates = np.array([0.5, 0.6, 0.0, 0.5]), np.array([0.0, 0.0, 0.0, 0.7])
    common = {"thresholds": limits, "gate_thresholds": gates, "camera_id": "c", "frame_id": 1}
    low = np.array([0.1, 0.1, 0.95, 0.1])  # class 3's threshold is 0 (off): never near
    assert policy.reason(failed=True, verdict="REJECT", maxima=low, gate=None,
                         **common) == "error"
    assert policy.reason(failed=False, verdict="REJECT", maxima=low, gate=None,
                         **common) == "reject"
    assert policy.reason(failed=False, verdict="OK", maxima=low, gate=None, **common) == ""
    near_threshold = np.array([0.1, 0.69, 0.1, 0.1])
    assert policy.reason(failed=False, verdict="OK", maxima=near_threshold, gate=None,
                         **common) == "uncertain"
    assert policy.reason(failed=False, verdict="OK", maxima=low,
                         gate=np.array([0.0, 0.0, 0.0, 0.65]), **common) == "uncertain"
    assert policy.reason(failed=False, verdict="OK", maxima=low,
                         gate=np.array([0.0, 0.0, 0.0, 0.5]), **common) == ""
    assert near([0.45], [0.5], 0.05) and not near([0.44], [0.5], 0.05)


def test_sampling_takes_the_fraction_and_is_the_same_every_run():
    chosen = [i for i in range(20_000) if sampled("lane1", i, 0.05)]
    assert 0.04 < len(chosen) / 20_000 < 0.06
    assert chosen == [i for i in range(20_000) if sampled("lane1", i, 0.05)]
    assert chosen != [i for i in range(20_000) if sampled("lane2", i, 0.05)]
    assert not any(sampled("lane1", i, 0.0) for i in range(1000))


def test_token_bucket_limits_the_rate():
    @dataclass
    class Clock:
        now: float = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    bucket = TokenBucket(2.0, clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now = 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]


@dataclass
class FakeModel:  # stands in for a LoadedModel: the recorder reads only the bundle root
    bundle: object = field(default_factory=lambda: type("B", (), {"root": "/bundles/a"}))


def decided(frame_id: int, verdict: str = "REJECT", defect: bool = True) -> Decided:
    pixels = np.random.default_rng(frame_id).integers(0, 255, (64, 96), dtype=np.uint8)
    masks = np.zeros((4, 64, 96), np.uint8)
    if defect:
        masks[1, 10:30, 20:50] = 1
        masks[3, 40:60, 5:15] = 1
    frame = Frame(FrameHeader("lane 1/α", frame_id, 1, "mono8", (64, 96)), pixels,
                  received_ns=1_760_000_000_000_000_000 + frame_id * 1000)
    return Decided(frame, FakeModel(), [type("C", (), {"id": c, "gate_threshold": 0.0})()
                                        for c in CLASS_IDS], verdict, False,
                   {"verdict": verdict, "classes": {"2": {"area": 600}}, "model": "m"},
                   masks, None, None)


def test_records_read_back_as_image_mask_folders_and_labelme(tmp_path):
    recorder = Recorder(tmp_path / "rec", RecordPolicy(), 10**9, DaemonCounters())
    for i in range(3):
        recorder.keep(decided(i, defect=i != 1), "reject")
    recorder.closed.set()
    recorder.run()
    meta = read_meta(tmp_path / "rec")
    assert [m["frame_id"] for m in meta] == [0, 1, 2]
    assert meta[0]["recorded_because"] == "reject" and meta[0]["bundle"] == "/bundles/a"
    assert meta[0]["classes"] == {"2": {"area": 600}} and meta[0]["camera_id"] == "lane 1/α"
    for dataset in (open_dataset(tmp_path / "rec"), open_dataset(tmp_path / "rec" / "images")):
        assert dataset.format in ("mask_folders", "labelme") and len(dataset) == 3
        for sample, i in zip(dataset.samples, range(3), strict=True):
            expected = decided(i, defect=i != 1)
            np.testing.assert_array_equal(sample.image(), expected.frame.pixels)
            np.testing.assert_array_equal(sample.masks(tuple(CLASS_IDS), (64, 96)),
                                          expected.masks)
    labelme = json.loads((tmp_path / "rec" / meta[0]["draft"]["labelme"]).read_text())
    assert {s["label"] for s in labelme["shapes"]} == {"2", "4"}
    assert labelme["imageHeight"] == 64 and labelme["flags"] == {"draft": True}


def test_quota_deletes_the_oldest_records_first(tmp_path):
    counters = DaemonCounters()
    probe = Recorder(tmp_path / "probe", RecordPolicy(), 10**9)
    probe.write(_record(0))
    size = probe.bytes  # one record's files
    recorder = Recorder(tmp_path / "rec", RecordPolicy(), int(size * 3.5), counters)
    for i in range(10):
        recorder.write(_record(i))
    kept = [m["frame_id"] for m in read_meta(tmp_path / "rec")]
    assert kept == [7, 8, 9] and recorder.bytes <= recorder.quota_bytes
    assert counters.snapshot()["record_deleted"] == 7
    assert len(list((tmp_path / "rec" / "images").iterdir())) == 6  # png + json each
    # A restart picks up what is there and keeps to the quota.
    again = Recorder(tmp_path / "rec", RecordPolicy(), int(size * 2.5))
    assert [m["frame_id"] for m in read_meta(tmp_path / "rec")] == [8, 9]
    assert again.bytes == sum(p.stat().st_size for p in (tmp_path / "rec").rglob("*")
                              if p.is_file())


def _record(frame_id: int) -> Record:
    pixels = np.random.default_rng(frame_id).integers(0, 255, (64, 96), dtype=np.uint8)
    record = Record("cam", frame_id, 1_000 + frame_id * 1000, pixels, None, None, CLASS_IDS)
    record.meta["recorded_because"] = "sample"
    return record


def test_a_full_queue_drops_the_recording_and_counts_it(tmp_path):
    counters = DaemonCounters()
    recorder = Recorder(tmp_path / "rec", RecordPolicy(), 10**9, counters, queue_size=2)
    taken = [recorder.offer(_record(i), "sample") for i in range(5)]  # nobody writes yet
    assert taken == [True, True, False, False, False]
    assert counters.snapshot()["record_dropped"] == 3
    limited = Recorder(tmp_path / "rec2", RecordPolicy(rate_per_s=1.0), 10**9, counters)
    assert [limited.offer(_record(i), "sample") for i in range(3)] == [True, False, False]

"""Post-processing: scores, thresholds, minimum areas, gate, defect list, rules, label
maps, and the clean-frame fast path."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lineside.edge.bundle import ClassSpec
from lineside.edge.config import ClassRule
from lineside.edge.postprocess import (
    FrameScores,
    decide,
    find_defects,
    frame_masks,
    label_map,
    masks_of,
    score_map,
    thresholds_of,
)

CLASSES = [ClassSpec(1, "pits", 0.5, 0), ClassSpec(2, "cracks", 0.5, 50)]


def probabilities() -> np.ndarray:
    p = np.zeros((2, 40, 60), np.float32)
    p[0, 2:6, 3:8] = 0.9  # 20 px region
    p[0, 20:23, 40:50] = 0.7  # 30 px region
    p[1, 10:14, 10:14] = 0.8  # 16 px: below class 2's minimum area of 50
    return p


def scored(p: np.ndarray, classes: list[ClassSpec] = CLASSES) -> FrameScores:
    return FrameScores.from_probabilities(p, thresholds_of(classes))


def test_threshold_and_min_area():
    masks = masks_of(probabilities(), None, CLASSES)
    assert masks[0].sum() == 50 and masks[1].sum() == 0


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (3, 5, 7), elements=st.floats(0, 1, width=32)),
       st.lists(st.floats(0.0625, 0.9375, width=32), min_size=3, max_size=3))
def test_scores_are_the_mask_exactly_and_the_probability_to_one_255th(p, limits):
    scores = score_map(p, np.asarray(limits, np.float32))
    above = p > np.asarray(limits, np.float32)[:, None, None]
    assert np.array_equal(scores > 0, above)  # the mask is exact, however close to t
    assert np.all(np.abs(scores[above] / 255 - p[above]) <= 0.5 / 255 + 1e-7)
    frame = scored(p, [ClassSpec(k, "", t, 0) for k, t in enumerate(limits)])
    assert frame.areas.tolist() == above.reshape(3, -1).sum(axis=1).tolist()
    assert np.allclose(frame.maxima, p.reshape(3, -1).max(axis=1))


def test_per_tile_thresholds_broadcast_over_a_batch():
    p = np.full((2, 2, 3, 3), 0.6, np.float32)
    scores = score_map(p, np.array([[0.5, 0.7], [0.7, 0.5]], np.float32))
    assert [bool(scores[n, k].any()) for n in range(2) for k in range(2)] == \
        [True, False, False, True]


def test_defect_list_has_area_bbox_and_probabilities():
    frame = scored(probabilities())
    summaries, defects = find_defects(frame, frame_masks(frame, None, CLASSES), CLASSES)
    assert [(s.class_id, s.area, s.count) for s in summaries] == [(1, 50, 2), (2, 0, 0)]
    assert [(d.area, d.bbox) for d in defects] == [(30, (40, 20, 10, 3)), (20, (3, 2, 5, 4))]
    assert abs(defects[0].mean_probability - 0.7) <= 0.5 / 255
    assert abs(defects[1].max_probability - 0.9) <= 0.5 / 255
    # the class whose mask the minimum area dropped still reports its highest probability
    assert abs(summaries[1].max_probability - 0.8) < 1e-6


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, (1, 24, 40), elements=st.sampled_from([0, 0, 0, 90, 200])))
def test_regions_are_those_of_the_whole_frame_however_the_search_is_cut(scores):
    import cv2

    frame = FrameScores(scores, scores.reshape(1, -1).max(axis=1) / 255,
                        np.count_nonzero(scores.reshape(1, -1), axis=1).astype(np.int32),
                        np.array([0.3], np.float32))
    classes = [ClassSpec(1, "pits", 0.3, 0)]
    summaries, defects = find_defects(frame, frame_masks(frame, None, classes), classes)
    # reference: label the whole frame at once
    count, labels, stats, _ = cv2.connectedComponentsWithStats((scores[0] > 0).astype(
        np.uint8), connectivity=8)
    expected = sorted(((int(stats[i, 4]), tuple(int(v) for v in stats[i, :4]),
                        int(scores[0][labels == i].max())) for i in range(1, count)),
                      reverse=True)
    found = sorted(((d.area, d.bbox, round(d.max_probability * 255)) for d in defects),
                   reverse=True)
    assert found == expected[:len(found)] and summaries[0].count == count - 1


def test_rules():
    frame = scored(probabilities())
    summaries, _ = find_defects(frame, frame_masks(frame, None, CLASSES), CLASSES)
    assert decide(summaries, lambda c: ClassRule())[0] == "REJECT"  # any defect
    assert decide(summaries, lambda c: ClassRule(max_area=50))[0] == "OK"
    verdict, reasons = decide(summaries, lambda c: ClassRule(max_area=1000, max_count=1))
    assert verdict == "REJECT" and "2 regions > 1" in reasons[0]
    assert decide(summaries, lambda c: ClassRule(report_only=True))[0] == "OK"


def test_label_map_takes_the_more_probable_class_where_masks_overlap():
    p = np.zeros((2, 4, 4), np.float32)
    p[0, :2] = 0.9
    p[1, 1:3] = 0.6
    frame = scored(p, [ClassSpec(1, "", 0.5, 0), ClassSpec(3, "", 0.5, 0)])
    labels = label_map(frame.scores, (frame.scores > 0).astype(np.uint8), [1, 3])
    assert labels[0].tolist() == [1] * 4 and labels[1].tolist() == [1] * 4
    assert labels[2].tolist() == [3] * 4 and labels[3].tolist() == [0] * 4


def test_presence_gate_drops_doubtful_classes():
    classes = [ClassSpec(1, "a", 0.5, 0, gate_threshold=0.6), ClassSpec(2, "b", 0.5, 0)]
    frame = scored(np.full((2, 4, 4), 0.9, np.float32), classes)
    gated = frame_masks(frame, np.array([0.4, 0.1]), classes)
    assert gated[0].sum() == 0  # presence 0.4 < 0.6
    assert gated[1].sum() == 16  # no gate threshold for class 2
    assert frame_masks(frame, None, classes).sum() == 32


def test_a_clean_frame_is_known_from_its_areas():
    frame = scored(np.full((2, 8, 8), 0.2, np.float32))
    assert frame.clean and not frame_masks(frame, None, CLASSES).any()
    assert not scored(probabilities()).clean


def test_tuning_turns_the_gate_on_when_it_removes_false_positives():
    from lineside.train.tuning import tune_class

    rng = np.random.default_rng(0)
    truth = np.zeros((20, 16, 16), np.uint8)
    truth[:10, 4:8, 4:8] = 1  # half the images hold the class
    probabilities = np.where(truth > 0, 0.9, 0.0).astype(np.float32)
    probabilities[10:, 0:12, 0:12] = 0.9  # big false positives on the clean half
    presence = np.r_[rng.uniform(0.8, 1.0, 10), rng.uniform(0.0, 0.2, 10)]
    _, _, gate, dice = tune_class(probabilities, truth, presence)
    assert gate > 0 and dice == 1.0
    assert tune_class(probabilities, truth)[3] < 1.0  # without the gate it cannot get there

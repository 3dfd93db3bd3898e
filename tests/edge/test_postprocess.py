"""Post-processing: thresholds, minimum areas, defect list, rules, label maps."""

from __future__ import annotations

import numpy as np

from lineside.edge.bundle import ClassSpec
from lineside.edge.config import ClassRule
from lineside.edge.postprocess import (
    decide,
    find_defects,
    label_map,
    threshold_masks,
)

CLASSES = [ClassSpec(1, "pits", 0.5, 0), ClassSpec(2, "cracks", 0.5, 50)]


def probabilities() -> np.ndarray:
    p = np.zeros((2, 40, 60), np.float32)
    p[0, 2:6, 3:8] = 0.9  # 20 px region
    p[0, 20:23, 40:50] = 0.7  # 30 px region
    p[1, 10:14, 10:14] = 0.8  # 16 px: below class 2's minimum area of 50
    return p


def test_threshold_and_min_area():
    masks = threshold_masks(probabilities(), CLASSES)
    assert masks[0].sum() == 50 and masks[1].sum() == 0


def test_defect_list_has_area_bbox_and_probabilities():
    p = probabilities()
    summaries, defects = find_defects(p, threshold_masks(p, CLASSES), CLASSES)
    assert [(s.class_id, s.area, s.count) for s in summaries] == [(1, 50, 2), (2, 0, 0)]
    assert [(d.area, d.bbox) for d in defects] == [(30, (40, 20, 10, 3)), (20, (3, 2, 5, 4))]
    assert abs(defects[0].mean_probability - 0.7) < 1e-6
    assert abs(defects[1].max_probability - 0.9) < 1e-6


def test_rules():
    p = probabilities()
    summaries, _ = find_defects(p, threshold_masks(p, CLASSES), CLASSES)
    assert decide(summaries, lambda c: ClassRule())[0] == "REJECT"  # any defect
    assert decide(summaries, lambda c: ClassRule(max_area=50))[0] == "OK"
    verdict, reasons = decide(summaries, lambda c: ClassRule(max_area=1000, max_count=1))
    assert verdict == "REJECT" and "2 regions > 1" in reasons[0]
    assert decide(summaries, lambda c: ClassRule(report_only=True))[0] == "OK"


def test_label_map_takes_the_more_probable_class_where_masks_overlap():
    p = np.zeros((2, 4, 4), np.float32)
    p[0, :2] = 0.9
    p[1, 1:3] = 0.6
    masks = (p > 0.5).astype(np.uint8)
    labels = label_map(p, masks, [1, 3])
    assert labels[0].tolist() == [1] * 4 and labels[1].tolist() == [1] * 4
    assert labels[2].tolist() == [3] * 4 and labels[3].tolist() == [0] * 4


def test_presence_gate_drops_doubtful_classes():
    from lineside.edge.postprocess import apply_gate

    classes = [ClassSpec(1, "a", 0.5, 0, gate_threshold=0.6), ClassSpec(2, "b", 0.5, 0)]
    masks = np.ones((2, 4, 4), np.uint8)
    gated = apply_gate(masks.copy(), np.array([0.4, 0.1]), classes)
    assert gated[0].sum() == 0  # presence 0.4 < 0.6
    assert gated[1].sum() == 16  # no gate threshold for class 2
    assert apply_gate(masks.copy(), None, classes).sum() == 32


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

"""edge-eval --compare: every variant of a bundle on the same frames (real ONNX Runtime
sessions of the real exported graphs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_module

pytestmark = pytest.mark.slow


def test_compare_runs_every_variant_against_fp32(quantised_bundle, trained_bundle, synth_data,
                                                 tmp_path):
    run_module("lineside.tools.evaluate", str(quantised_bundle), str(synth_data), "--compare",
               "--limit", "4", "--checkpoint", str(trained_bundle.parent / "mini.pt"),
               "-o", str(tmp_path))
    report = json.loads((tmp_path / "compare.json").read_text())
    assert next(iter(report)) == "fp32" and {"int8", "int8-trt", "checkpoint"} <= set(report)
    assert report["fp32"]["vs_fp32"]["dice"] == 1.0
    assert report["fp32"]["vs_fp32"]["verdict_agreement"] == 1.0
    for row in report.values():
        against = row["vs_fp32"]
        assert against["frames"] == 4 and 0 <= against["dice"] <= 1
        assert set(against["dice_per_class"]) == {"1", "2", "3", "4"}
        assert 0 <= row["dice"] <= 1
    # The checkpoint is the model the bundle was exported from: it must agree closely.
    assert report["checkpoint"]["vs_fp32"]["dice"] > 0.95


@pytest.mark.parametrize("layout", ["new", "old"])
def test_submission_holds_exactly_the_masks_that_were_scored(trained_bundle, synth_data,
                                                             tmp_path, layout):
    from lineside.edge import rle
    from lineside.edge.labels.severstal import read_labels
    from lineside.edge.scoring import Scorecard
    from lineside.tools.evaluation import LabelledFrames

    submission = tmp_path / "submission.csv"
    run_module("lineside.tools.evaluate", str(trained_bundle), str(synth_data), "--limit", "6",
               "--submission", str(submission), "--layout", layout, "-o", str(tmp_path))
    header = submission.read_text().splitlines()
    assert header[0] == ("ImageId,ClassId,EncodedPixels" if layout == "new"
                         else "ImageId_ClassId,EncodedPixels")
    if layout == "old":
        assert len(header) == 1 + 6 * 4  # every image and class, empty where clean
    labels = read_labels(submission)
    frames = LabelledFrames.from_folder(synth_data, [1, 2, 3, 4], limit=6)
    card = Scorecard([1, 2, 3, 4])
    for name, truth in zip(frames.names, frames.truths, strict=True):
        pairs = labels.get(name, {})
        predicted = np.stack([rle.decode(pairs.get(c, ""), truth.shape[1:])
                              for c in (1, 2, 3, 4)])
        card.add(predicted, truth)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert card.summary()["dice"] == pytest.approx(metrics["dice"], abs=1e-12)

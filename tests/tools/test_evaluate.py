"""edge-eval --compare: every variant of a bundle on the same frames (real ONNX Runtime
sessions of the real exported graphs)."""

from __future__ import annotations

import json

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

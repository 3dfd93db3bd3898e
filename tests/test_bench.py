"""edge-bench runs all three stages and writes its report (it asserts no timings)."""

from __future__ import annotations

import json

import pytest

from .conftest import run_module

pytestmark = pytest.mark.slow


def test_bench_report_has_every_stage_and_ratios(trained_bundle, tmp_path):
    result = run_module("lineside.edge.cli.bench", str(trained_bundle), "--precision", "fp32",
                        "--stages", "bare", "daemon", "baseline", "--baseline",
                        str(trained_bundle.parent / "mini.pt"), "--frames", "2", "--rounds",
                        "1", "--daemon-frames", "4", "-o", str(tmp_path))
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["bare"][0]["frames_per_s"] > 0
    assert report["daemon"]["fp32"]["saturation_fps"] > 0
    assert [x["frames"] for x in report["daemon"]["fp32"]["loads"]] == [4, 4, 4]
    assert report["baseline"]["gflop_per_frame"] > 0
    assert any(r.startswith("daemon/bare") for r in report["ratios"])
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert result.stdout.strip().splitlines()[-2].startswith("daemon")  # ratios come last

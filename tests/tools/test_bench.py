"""edge-bench runs all three stages and writes its report (it asserts no timings)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_module

pytestmark = pytest.mark.slow


def test_bench_report_has_every_stage_and_ratios(trained_bundle, screen_bundle, synth_data,
                                                 tmp_path):
    result = run_module("lineside.tools.bench.cli", str(trained_bundle), "--precision", "fp32",
                        "--screen", str(screen_bundle), "--images", str(synth_data),
                        "--stages", "bare", "daemon", "baseline", "--baseline",
                        str(trained_bundle.parent / "mini.pt"), "--frames", "2", "--rounds",
                        "1", "--daemon-frames", "4", "--ort-profile", "-o", str(tmp_path))
    report = json.loads((tmp_path / "bench.json").read_text())
    bare = {row["precision"]: row for row in report["bare"]}
    assert set(bare) == {"fp32", "fp32+screen"}
    assert bare["fp32"]["frames_per_s"] > 0 and bare["fp32"]["segmented_share"] == 1.0
    assert 0 <= bare["fp32+screen"]["segmented_share"] <= 1
    for label in ("fp32", "fp32+screen"):
        assert report["daemon"][label]["saturation_fps"] > 0
        assert [x["frames"] for x in report["daemon"][label]["loads"]] == [4, 4, 4]
    assert report["baseline"]["gflop_per_frame"] > 0
    shares = report["ort_profile"]["fp32"]
    assert "Conv" in shares and abs(sum(shares.values()) - 1) < 0.01
    stages = report["daemon"]["fp32"]["saturation_stages_ms"]
    assert {"decode", "tile", "infer", "postprocess"} <= set(stages)
    assert all(row["batch_latency_p99_ms"] >= row["batch_latency_ms"] for row in report["bare"])
    assert report["frames"] == str(synth_data)
    assert any(r.startswith("daemon/bare fp32+screen") for r in report["ratios"])
    assert (tmp_path / "bench.png").stat().st_size > 1000
    assert result.stdout.strip().splitlines()[-1].startswith("daemon")  # ratios come last


def test_bench_refuses_frames_of_the_wrong_size(trained_bundle, tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((100, 200), np.uint8))
    result = subprocess.run([sys.executable, "-m", "lineside.tools.bench.cli",
                             str(trained_bundle), "--images", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "256x1600" in result.stderr


def test_pipeline_stage_replays_the_model_outputs_through_the_whole_daemon(trained_bundle,
                                                                          synth_data, tmp_path):
    """The host side's ceiling: the daemon around recorded outputs (a benchmark
    instrument, labelled so in the report). It asserts no timings, only that it ran."""
    run_module("lineside.tools.bench.cli", str(trained_bundle), "--images", str(synth_data),
               "--stages", "pipeline", "--daemon-frames", "4", "--pipeline-frames", "24",
               "--loads", "50", "-o", str(tmp_path))
    report = json.loads((tmp_path / "bench.json").read_text())
    pipeline = report["pipeline"]
    assert "benchmark instrument" in (tmp_path / "bench.md").read_text()
    assert pipeline["instrument"].startswith("replayed model outputs")
    assert pipeline["saturation_fps"] > 0 and pipeline["loads"][0]["frames"] == 24
    assert {"decode", "tile", "infer", "postprocess"} <= set(pipeline["saturation_stages_ms"])
    assert any(r.startswith("pipeline ceiling") for r in report["ratios"])

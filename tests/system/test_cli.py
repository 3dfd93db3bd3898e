"""Every edge-* command answers --help with examples, as an installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["edge-synth", "edge-train", "edge-export", "edge-calibrate", "edge-build-engine",
            "edge-bench", "edge-serve", "edge-camsim", "edge-camera", "edge-listen", "edge-plc",
            "edge-demo",
            "edge-eval", "edge-doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples(command):
    exe = shutil.which(command) or str(Path(sys.executable).parent / command)
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout and command in result.stdout


def test_serve_reports_a_missing_bundle_clearly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lineside.edge.cli.serve", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a model bundle" in result.stderr


def test_runtime_imports_no_torch():
    code = ("import sys, lineside.edge.daemon, lineside.edge.client, lineside.edge.cli.serve, "
            "lineside.tools.demo, lineside.tools.bench.cli, lineside.tools.bench.daemon, "
            "lineside.edge.cli.plc, lineside.edge.plc.gateway, lineside.tools.evaluate, "
            "lineside.edge.operator_view, lineside.edge.cli.build_engine, "
            "lineside.calibration.cli, lineside.edge.cli.camera, lineside.edge.sources.capture, "
            "lineside.edge.sources.folder, lineside.edge.pipeline.record, "
            "lineside.edge.pipeline.shadow; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_doctor_says_what_runs_here_and_exits_for_scripts(tmp_path):
    import json

    from tests.toy_bundle import write_toy_bundle

    bundle = write_toy_bundle(tmp_path / "bundle")
    ran = subprocess.run([sys.executable, "-m", "lineside.edge.cli.doctor", str(bundle),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["onnxruntime"]["backends"]["ort-cpu"] == "starts"  # a session really ran
    assert report["bundle"]["runs"]["ort-cpu"]["fp32"] == "yes"
    if not report["tensorrt"]["ok"]:
        assert "not installed" in report["tensorrt"]["reason"]
        assert report["bundle"]["runs"]["tensorrt"]["fp32"].startswith("no: ")
        required = subprocess.run([sys.executable, "-m", "lineside.edge.cli.doctor",
                                   str(bundle), "--require", "tensorrt"],
                                  capture_output=True, text=True, timeout=120)
        assert required.returncode == 1 and "TensorRT" in required.stdout
    missing = subprocess.run([sys.executable, "-m", "lineside.edge.cli.doctor",
                              str(tmp_path / "nothing")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "not a model bundle" in missing.stdout

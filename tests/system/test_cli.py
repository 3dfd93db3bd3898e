"""Every edge-* command answers --help with examples, as an installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["edge-synth", "edge-train", "edge-export", "edge-calibrate", "edge-build-engine",
            "edge-bench", "edge-serve", "edge-camsim", "edge-listen", "edge-plc", "edge-demo"]


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
            "lineside.calibration.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

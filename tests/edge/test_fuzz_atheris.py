"""Bounded coverage-guided fuzzing of the frame parser (atheris), where atheris installs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install atheris; it needs a "
                           "prebuilt wheel for this Python and CPU)")
def test_parser_survives_coverage_guided_fuzzing(tmp_path):
    script = Path(__file__).parent / "fuzz_protocol.py"
    seed = tmp_path / "corpus"
    seed.mkdir()
    (seed / "good").write_bytes(b'{"schema":1,"camera_id":"c","frame_id":1,"timestamp_ns":1,'
                                b'"encoding":"mono8","shape":[2,2]}')
    result = subprocess.run([sys.executable, str(script), "-runs=20000", "-max_len=2048",
                             str(seed)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 20000 runs" in result.stderr

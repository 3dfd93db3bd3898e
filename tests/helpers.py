"""Helpers every test group uses: paths, free loopback endpoints, commands as processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CONFIGS = ROOT / "configs"
DATA = TESTS / "data"
SAMPLES = DATA / "severstal_samples"


def free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a lineside command as its own process, as a user would."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                            text=True, timeout=timeout,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def pixel_values(outputs: dict) -> Any:
    """A segmentation backend's per-pixel outputs as floats in 0..1 for comparing two
    runtimes: a scored graph's `scores` / 255 (0 at or below the class threshold), or an
    older graph's probabilities."""
    import numpy as np

    if "scores" in outputs:
        return outputs["scores"].astype(np.float32) / 255
    return outputs["probabilities"]


def assert_outputs_close(out: dict, reference: dict, tolerance: float,
                         maxima: bool = True) -> None:
    """Two runtimes' outputs of the same graph agree: per-pixel values within `tolerance`
    on average (a pixel within rounding of its threshold may fall on either side, so the
    worst pixel is not compared) and, with `maxima`, each tile's highest probabilities
    within it (scored graphs; not for INT8, whose worst pixel may stray further)."""
    import numpy as np

    values, expected = pixel_values(out), pixel_values(reference)
    assert values.shape == expected.shape
    assert float(np.abs(values - expected).mean()) < tolerance
    if maxima and "maxima" in reference:
        assert float(np.abs(out["maxima"] - reference["maxima"]).max()) < tolerance

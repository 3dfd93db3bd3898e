"""Helpers every test group uses: paths, free loopback endpoints, commands as processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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

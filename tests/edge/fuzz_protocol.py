"""Coverage-guided fuzzing of the frame protocol parser with atheris (libFuzzer).

Run by tests/test_fuzz_atheris.py for a bounded number of runs; by hand for longer:
    .venv/bin/python tests/edge/fuzz_protocol.py -runs=200000
The only acceptable outcome for any input is a parsed frame or a FrameError.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from lineside.edge import protocol


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    parts = [provider.ConsumeBytes(provider.ConsumeIntInRange(0, 512))
             for _ in range(provider.ConsumeIntInRange(1, 3))]
    with contextlib.suppress(protocol.FrameError):
        protocol.parse_frame(parts)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

"""A backend wrapper that fails on purpose, to prove the daemon survives backend faults.

A real GPU fails now and then (Xid errors, out-of-memory, a driver reset); we cannot make
ONNX Runtime on a CPU do that on demand, so this wrapper stands in for that failure and
says so in every error it raises. It is enabled only by `--inject-faults` (tests and
acceptance runs), never by default. It wraps the backend's one `infer`, so every output
(a presence gate included) passes through unchanged between faults.
"""

from __future__ import annotations

import numpy as np

from lineside.edge.backends.base import Backend, Outputs


class InjectedFault(RuntimeError):
    pass


class FaultInjectingBackend(Backend):
    def __init__(self, inner: Backend, spec: str) -> None:
        """`spec`: `infer-every=N` makes every N-th inference call raise."""
        key, _, value = spec.partition("=")
        if key != "infer-every" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"fault injection {spec!r} is not infer-every=N (N >= 1)")
        self.inner, self.every, self.calls = inner, int(value), 0
        self.name = f"{inner.name}+faults"

    def infer(self, tiles: np.ndarray) -> Outputs:
        self.calls += 1
        if self.calls % self.every == 0:
            raise InjectedFault(f"injected backend fault on call {self.calls} "
                                f"(--inject-faults infer-every={self.every})")
        return self.inner.infer(tiles)

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        self.inner.warm_up(tile, max_batch)  # faults are for serving calls only

    def describe(self) -> dict[str, str]:
        return {**self.inner.describe(), "backend": self.name,
                "fault_injection": f"infer-every={self.every}"}

    def close(self) -> None:
        self.inner.close()

"""A backend wrapper that fails or hangs on purpose, to prove the daemon survives both.

A real GPU fails now and then (Xid errors, out-of-memory, a driver reset) and sometimes a
call never returns (a stuck TensorRT enqueue, a hung driver); we cannot make ONNX Runtime
on a CPU do either on demand, so this wrapper stands in for those failures and says so in
every error it raises. It is enabled only by `--inject-faults` (tests and acceptance
runs), never by default. It wraps the backend's one `infer`, so every output (a presence
gate included) passes through unchanged between faults.

Spec, comma-separated: `infer-every=N` makes every N-th call raise; `hang-after=N` makes
every call after the N-th block forever (until the process ends); `delay-ms=N` makes every
call take N ms longer (a GPU that has become slow: results arrive after their deadline).
`decide-delay-ms=N` is not the backend's: the daemon's post-processing of every frame
takes N ms longer (a decide stage that has fallen behind; `decide_delay_s`).
"""

from __future__ import annotations

import threading

import numpy as np

from lineside.edge.backends.base import Backend, Outputs

FAULTS = ("infer-every", "hang-after", "delay-ms", "decide-delay-ms")


class InjectedFault(RuntimeError):
    pass


def parse_faults(spec: str) -> dict[str, int]:
    faults = {}
    for item in spec.split(","):
        key, _, value = item.strip().partition("=")
        if key not in FAULTS or not value.isdigit() or int(value) < (key == "infer-every"):
            raise ValueError(f"fault injection {item!r} is not one of "
                             "infer-every=N (N >= 1), hang-after=N, delay-ms=N, "
                             "decide-delay-ms=N (N >= 0)")
        faults[key] = int(value)
    return faults


def decide_delay_s(spec: str) -> float:
    """The injected post-processing delay of a fault spec, in seconds (0: none)."""
    return parse_faults(spec).get("decide-delay-ms", 0) / 1000 if spec else 0.0


class FaultInjectingBackend(Backend):
    def __init__(self, inner: Backend, spec: str) -> None:
        self.faults = parse_faults(spec)
        self.spec = spec
        self.inner, self.calls = inner, 0
        self.name = f"{inner.name}+faults"
        self._never = threading.Event()  # nobody sets it: a hang lasts until the process ends

    def infer(self, tiles: np.ndarray, thresholds: np.ndarray | None = None) -> Outputs:
        self.calls += 1
        hang_after = self.faults.get("hang-after")
        if hang_after is not None and self.calls > hang_after:
            self._never.wait()  # stands in for a GPU call that never returns
        if self.faults.get("delay-ms"):
            self._never.wait(self.faults["delay-ms"] / 1000)
        every = self.faults.get("infer-every")
        if every and self.calls % every == 0:
            raise InjectedFault(f"injected backend fault on call {self.calls} "
                                f"(--inject-faults infer-every={every})")
        return self.inner.infer(tiles, thresholds)

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        self.inner.warm_up(tile, max_batch)  # faults are for serving calls only

    def describe(self) -> dict[str, str]:
        return {**self.inner.describe(), "backend": self.name, "fault_injection": self.spec}

    def close(self) -> None:
        self.inner.close()

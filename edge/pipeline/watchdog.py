"""Watchdog: deadlines by the clock, and stalls of any stage, from a thread no stage blocks.

A reject gate must fail safe: a frame the daemon cannot vouch for in time must reach the
PLC as a fail-safe verdict by its deadline, not when (or if) a hung GPU call returns.

- `InFlight` holds every accepted frame until its one verdict is settled. Whoever settles
  a frame first publishes its verdict: the decide stage (a result), the receive stage (a
  drop), or this watchdog (the fail-safe verdict at the deadline). A result that arrives
  after its frame was settled is counted (`late_results`) and never published: exactly
  one verdict per frame.
- `Progress` is each stage's pulse: a stage beats between units of work and while it
  waits for input. A stage stuck inside one unit (a hung inference call, a put into a
  queue nobody drains) stops beating; after `stall_s` it is listed as stalled in the
  heartbeat and /healthz answers 503; after `stall_exit_s` the daemon exits non-zero so
  its supervisor (systemd `Restart=on-failure`) starts a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lineside.edge.metrics import DaemonCounters
from lineside.edge.protocol import Frame, frame_fields

log = logging.getLogger("lineside.edge.watchdog")

TICK_S = 0.01  # how often deadlines are checked: verdicts come within this of a deadline


class Progress:
    """When a stage last moved (time.monotonic())."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def idle_for(self, now: float) -> float:
        return now - self.last


@dataclass
class Pending:
    """A frame accepted and not yet settled."""

    serial: int
    base: dict[str, Any]  # camera_id, frame_id, timestamp_ns, received_ns, line_position
    deadline_ns: int  # Unix ns; 0 = no deadline


class InFlight:
    """Frames between receive and their verdict; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, Pending] = {}

    def add(self, frame: Frame, deadline_ms: float) -> None:
        deadline_ns = frame.received_ns + int(deadline_ms * 1e6) if deadline_ms else 0
        with self._lock:
            self._pending[frame.serial] = Pending(frame.serial, frame_fields(frame),
                                                  deadline_ns)

    def settle(self, serial: int) -> bool:
        """True for the caller that settles the frame (it publishes the verdict); False
        when someone else already did."""
        with self._lock:
            return self._pending.pop(serial, None) is not None

    def __contains__(self, serial: object) -> bool:
        with self._lock:
            return serial in self._pending

    def expire(self, now_ns: int) -> list[Pending]:
        """Settle and return every frame whose deadline has passed."""
        with self._lock:
            late = [p for p in self._pending.values() if p.deadline_ns and p.deadline_ns <= now_ns]
            for p in late:
                del self._pending[p.serial]
        return late

    def settle_all(self) -> list[Pending]:
        """Settle and return every frame still pending."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        return pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


@dataclass
class Watchdog:
    name = "watchdog"

    in_flight: InFlight
    progress: list[Progress]
    counters: DaemonCounters
    publish: Callable[[tuple[str, dict[str, Any]]], bool]  # False when it could not queue
    failsafe: Callable[[dict[str, Any], str], tuple[str, dict[str, Any]]]
    stall_s: float
    stall_exit_s: float  # 0: never exit
    on_fatal: Callable[[str], None]
    stalled: list[str] = field(default_factory=list)
    _stalled_since: float | None = None
    _undelivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def stalled_stages(self, now: float) -> list[str]:
        return [p.name for p in self.progress if p.idle_for(now) > self.stall_s]

    def abandon(self, reason: str) -> int:
        """The fail-safe verdict for every frame still in flight (a stop that cannot
        wait for a stuck stage); how many. Delivered by the next ticks."""
        pending = self.in_flight.settle_all()
        self._undelivered.extend(self.failsafe(p.base, reason) for p in pending)
        return len(pending)

    def delivered(self) -> bool:
        """Every fail-safe verdict it gave is in the outbox."""
        return not self._undelivered

    def health(self) -> tuple[bool, str]:
        if not self.stalled:
            return True, ""
        now = time.monotonic()
        parts = [f"{p.name} ({p.idle_for(now):.1f} s without progress)" for p in self.progress
                 if p.name in self.stalled]
        return False, "stalled: " + ", ".join(parts)

    def tick(self, now: float, now_ns: int) -> None:
        """One round: fail-safe verdicts for expired frames, then the stall check."""
        stalled = self.stalled_stages(now)
        for pending in self.in_flight.expire(now_ns):
            elapsed_ms = (now_ns - pending.base["received_ns"]) / 1e6
            reason = f"deadline missed: no verdict after {elapsed_ms:.0f} ms"
            if stalled:
                reason += f" (stalled: {', '.join(stalled)})"
            self.counters.deadline_missed()
            self._undelivered.append(self.failsafe(pending.base, reason))
        # A full outbox means publish itself is stuck: keep the verdicts for the next tick
        # (never block here: this thread must keep watching).
        while self._undelivered and self.publish(self._undelivered[0]):
            self._undelivered.pop(0)
        if stalled != self.stalled:
            if stalled:
                log.error("stalled: %s (no progress for %.1f s)", ", ".join(stalled),
                          self.stall_s)
            else:
                log.info("stall cleared")
        self.stalled = stalled
        if not stalled:
            self._stalled_since = None
            return
        self._stalled_since = self._stalled_since or now
        if self.stall_exit_s and now - self._stalled_since >= self.stall_exit_s:
            self.on_fatal(f"stalled for {now - self._stalled_since:.1f} s: "
                          f"{', '.join(stalled)}")
            self._stalled_since = None  # report once

    def run(self, finished: threading.Event) -> None:
        """Until the publish stage has finished: deadlines hold while the daemon drains."""
        while not finished.wait(TICK_S):
            self.tick(time.monotonic(), time.time_ns())

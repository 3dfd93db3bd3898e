"""Per-camera bounded queues between the receive stage and the batcher.

Each camera has its own capacity and overload policy, so one fast or stuck camera cannot
starve another:

- `block`: the receiver waits for room; backpressure reaches the camera's PUSH socket.
- `drop-oldest`: the oldest waiting frame of that camera is dropped for the new one
  (the line wants the newest picture).
- `drop-newest`: the new frame is dropped (keep what is already queued).

Every drop is returned to the caller, which publishes it as an event: nothing vanishes.
The batcher takes frames round-robin across cameras (dynamic batching across cameras).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
BUSY_POLL_S = 0.0002  # how often a partial batch asks whether the model has freed up


class FrameQueues(Generic[T]):
    def __init__(self, settings_for: Callable[[str], tuple[str, int]]) -> None:
        """`settings_for(camera_id)` gives (overload policy, capacity) for a camera."""
        self._settings_for = settings_for
        self._queues: dict[str, deque[T]] = {}
        self._order: deque[str] = deque()  # round-robin order of cameras with frames
        self._cond = threading.Condition()
        self._closed = False

    def put(self, camera_id: str, item: T) -> list[T]:
        """Queue `item`; returns the frames dropped to make room (may be `item` itself)."""
        policy, capacity = self._settings_for(camera_id)
        with self._cond:
            queue = self._queues.setdefault(camera_id, deque())
            dropped: list[T] = []
            while len(queue) >= capacity:
                if policy == "drop-newest":
                    return [item]
                if policy == "drop-oldest":
                    dropped.append(queue.popleft())
                    continue
                self._cond.wait(0.1)  # block: wait for the batcher to make room
            queue.append(item)
            if camera_id not in self._order:
                self._order.append(camera_id)
            self._cond.notify_all()
            return dropped

    def close(self) -> None:
        """No more frames will come; `take` returns what is left, then signals the end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def waiting(self) -> bool:
        """Whether any camera has a frame queued (asked often: builds nothing)."""
        with self._cond:
            return any(self._queues.values())

    def depth(self) -> dict[str, int]:
        with self._cond:
            return {camera: len(q) for camera, q in self._queues.items()}

    def _pop(self) -> T | None:
        while self._order:
            camera = self._order[0]
            queue = self._queues[camera]
            if not queue:
                self._order.popleft()
                continue
            item = queue.popleft()
            self._order.rotate(-1)  # next camera goes first next time
            if not queue:
                self._order.remove(camera)
            return item
        return None

    def take(self, cost: Callable[[T], int], budget: int, max_wait_s: float,
             idle: Callable[[], None] | None = None,
             busy: Callable[[], bool] | None = None) -> list[T] | None:
        """Frames for one batch: waits for the first, then gathers more until their total
        `cost` reaches `budget` or `max_wait_s` passes. None once closed and empty.
        `idle` is called while it waits (the caller's progress beat). With `busy` (is the
        stage this batch goes to still working?) a partial batch waits only while it is:
        an idle model gets the frames at once (no added latency at low load), a busy one
        lets the next batch grow (throughput under load)."""
        with self._cond:
            while True:
                first = self._pop()
                if first is not None:
                    break
                if self._closed:
                    return None
                if idle is not None:
                    idle()
                self._cond.wait(0.1)
            batch, spent = [first], cost(first)
            deadline = time.monotonic() + max_wait_s
            while spent < budget:
                item = self._pop()
                if item is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        break
                    if busy is not None:
                        if not busy():
                            break
                        # the stage ahead says nothing when it frees up: look again soon
                        remaining = min(remaining, BUSY_POLL_S)
                    self._cond.wait(remaining)
                    continue
                batch.append(item)
                spent += cost(item)
            self._cond.notify_all()  # room for blocked producers
            return batch

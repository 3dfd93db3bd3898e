"""Work on a small thread pool, delivered in submission order per key.

The decide stage post-processes frames on a pool (OpenCV and numpy release the GIL for
the pixel work), yet a camera's results must reach the PLC in the order its frames came:
the PLC maps a verdict to a part by order as much as by frame id. Results of one key
(a camera) are delivered in the order they were submitted; different keys do not wait
for each other. With one worker the work runs inline in the submitting thread: no
threads, no queues, the same order.

`submit` blocks once `depth` items are submitted and not yet delivered (backpressure
into the stage before), and delivery happens on whichever thread finished the item that
unblocked its key's queue, one delivery at a time.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger("lineside.edge.pipeline")

T = TypeVar("T")
R = TypeVar("R")


class OrderedPool(Generic[T, R]):
    def __init__(self, workers: int, work: Callable[[T], R], deliver: Callable[[T, R], None],
                 fallback: Callable[[T, BaseException], R], depth: int = 0,
                 name: str = "edge-pool") -> None:
        """`work(item)` runs on the pool; `deliver(item, result)` in per-key order;
        `fallback(item, error)` stands in for the result of a work that raised, so every
        submitted item is delivered exactly once. `depth`: items in the pool at most
        (default 2 per worker)."""
        self.workers = max(1, workers)
        self._work, self._deliver, self._fallback = work, deliver, fallback
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=name) \
            if self.workers > 1 else None
        self._room = threading.Semaphore(depth or 2 * self.workers)
        self._lock = threading.Lock()  # the queues, and one delivery at a time
        self._queues: dict[Hashable, deque[tuple[T, Future[R]]]] = {}

    def _result(self, item: T, run: Callable[[], R]) -> R:
        try:
            return run()
        except Exception as exc:
            log.exception("pool work failed")
            return self._fallback(item, exc)

    def submit(self, key: Hashable, item: T) -> None:
        if self._executor is None:
            self._deliver(item, self._result(item, lambda: self._work(item)))
            return
        self._room.acquire()
        future = self._executor.submit(self._work, item)
        with self._lock:
            self._queues.setdefault(key, deque()).append((item, future))
        future.add_done_callback(lambda _: self._flush(key))

    def _flush(self, key: Hashable) -> None:
        """Deliver the finished items at the head of `key`'s queue."""
        with self._lock:
            pending = self._queues.get(key)
            while pending and pending[0][1].done():
                item, future = pending.popleft()
                try:
                    self._deliver(item, self._result(item, future.result))
                except Exception:  # a delivery must not stop the ones behind it
                    log.exception("delivery failed")
                finally:
                    self._room.release()

    def pending(self) -> int:
        """Items submitted and not yet delivered."""
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        """Wait until every submitted item is delivered."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            for key in list(self._queues):
                self._flush(key)

    def __enter__(self) -> OrderedPool[T, R]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def default_workers(cpu_count: int | None) -> int:
    """Post-processing threads when the config says 0 (auto): a quarter of the cores,
    1 to 4. On 2 cores the pool would only compete with the inference threads; a GPU
    box with 8-16 cores gets 2-4."""
    return max(1, min(4, (cpu_count or 1) // 4))

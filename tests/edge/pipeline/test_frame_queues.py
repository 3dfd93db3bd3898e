"""Per-camera queues: overload policies, round-robin batching, close semantics."""

from __future__ import annotations

import threading
import time

from lineside.edge.pipeline.frame_queues import FrameQueues


def queues(policy: str, capacity: int) -> FrameQueues:
    return FrameQueues(lambda camera: (policy, capacity))


def test_drop_newest_refuses_the_new_frame():
    q = queues("drop-newest", 2)
    assert q.put("a", 1) == [] and q.put("a", 2) == []
    assert q.put("a", 3) == [3]
    assert q.take(lambda _: 1, 10, 0) == [1, 2]


def test_drop_oldest_evicts_the_oldest_frame():
    q = queues("drop-oldest", 2)
    q.put("a", 1)
    q.put("a", 2)
    assert q.put("a", 3) == [1]
    assert q.take(lambda _: 1, 10, 0) == [2, 3]


def test_block_waits_for_room():
    q = queues("block", 1)
    q.put("a", 1)
    done = threading.Event()

    def producer() -> None:
        assert q.put("a", 2) == []
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.2)
    assert not done.is_set()  # held back: backpressure
    assert q.take(lambda _: 1, 1, 0) == [1]
    thread.join(5)
    assert done.is_set() and q.take(lambda _: 1, 1, 0) == [2]


def test_cameras_are_served_round_robin_within_the_budget():
    q = queues("block", 10)
    for i in range(3):
        q.put("a", f"a{i}")
    q.put("b", "b0")
    assert q.take(lambda _: 1, 2, 0) == ["a0", "b0"]
    assert q.take(lambda _: 1, 5, 0) == ["a1", "a2"]


def test_cameras_have_their_own_capacity():
    q = FrameQueues(lambda camera: ("drop-newest", 1 if camera == "small" else 5))
    assert q.put("small", 1) == [] and q.put("small", 2) == [2]
    assert q.put("big", 1) == [] and q.put("big", 2) == []


def test_take_returns_none_once_closed_and_empty():
    q = queues("block", 4)
    q.put("a", 1)
    q.close()
    assert q.take(lambda _: 1, 4, 0.5) == [1]
    assert q.take(lambda _: 1, 4, 0.5) is None


def test_an_idle_model_gets_a_partial_batch_at_once_a_busy_one_lets_it_grow():
    q = queues("block", 8)
    q.put("a", 1)
    # idle: no waiting for the batch to fill, however long max_wait is
    assert q.take(lambda _: 1, 4, 60, busy=lambda: False) == [1]

    q.put("a", 1)
    model_busy = threading.Event()
    model_busy.set()

    def line() -> None:
        time.sleep(0.2)
        q.put("a", 2)  # arrives while the model works: joins the batch
        time.sleep(0.2)
        model_busy.clear()  # the model frees up: the partial batch goes

    thread = threading.Thread(target=line)
    thread.start()
    assert q.take(lambda _: 1, 4, 60, busy=model_busy.is_set) == [1, 2]
    thread.join(5)

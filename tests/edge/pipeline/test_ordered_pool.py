"""The post-processing pool: every item delivered once, in submission order per key,
whatever order the work finishes in; a failed work delivers its fallback in its place."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from lineside.edge.pipeline.ordered_pool import OrderedPool, default_workers

# (key, delay in ms, raises) per item
ITEMS = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3), st.booleans()),
                 max_size=24)


@settings(max_examples=40, deadline=None)
@given(items=ITEMS, workers=st.integers(1, 4))
def test_each_key_is_delivered_in_submission_order_exactly_once(items, workers):
    delivered: list[tuple[str, int, str]] = []
    in_pool = []
    active = [0]
    lock = threading.Lock()

    def work(item):
        index, (_, delay_ms, raises) = item
        with lock:
            active[0] += 1
            in_pool.append(active[0])
        time.sleep(delay_ms / 1000)  # later items often finish first
        with lock:
            active[0] -= 1
        if raises:
            raise ValueError(f"item {index}")
        return "ok"

    def deliver(item, result):
        delivered.append((item[1][0], item[0], result))

    with OrderedPool(workers, work, deliver, lambda item, exc: f"failed: {exc}") as pool:
        for index, item in enumerate(items):
            pool.submit(item[0], (index, item))
    assert sorted(i for _, i, _ in delivered) == list(range(len(items)))
    for key in "abc":
        order = [i for k, i, _ in delivered if k == key]
        assert order == sorted(order), key
    for _, index, result in delivered:
        assert result == (f"failed: item {index}" if items[index][2] else "ok")
    assert max(in_pool, default=0) <= workers


def test_a_slow_head_holds_back_only_its_own_key():
    release = threading.Event()
    delivered: list[str] = []

    def work(name: str) -> str:
        if name == "a0":
            release.wait(5)
        return name

    pool = OrderedPool(3, work, lambda item, _: delivered.append(item),
                       lambda item, exc: "")
    for name, key in (("a0", "a"), ("a1", "a"), ("b0", "b"), ("b1", "b")):
        pool.submit(key, name)
    deadline = time.monotonic() + 5
    while len(delivered) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert delivered == ["b0", "b1"]  # camera b does not wait for camera a's slow frame
    assert pool.pending() == 2
    release.set()
    pool.close()
    assert delivered == ["b0", "b1", "a0", "a1"]


def test_submit_blocks_while_depth_items_wait_for_delivery():
    release = threading.Event()
    pool = OrderedPool(2, lambda item: release.wait(5), lambda *_: None,
                       lambda item, exc: False, depth=2)
    pool.submit("a", 0)
    pool.submit("a", 1)
    third = threading.Thread(target=pool.submit, args=("a", 2))
    third.start()
    third.join(0.3)
    assert third.is_alive(), "a third item went in while two were undelivered"
    release.set()
    third.join(5)
    pool.close()
    assert not third.is_alive() and pool.pending() == 0


def test_one_worker_runs_inline_on_the_caller():
    threads = []
    pool = OrderedPool(1, lambda item: threads.append(threading.current_thread()),
                       lambda *_: None, lambda item, exc: None)
    pool.submit("a", 0)
    assert threads == [threading.current_thread()]


def test_default_workers_leave_small_machines_one_thread():
    assert [default_workers(n) for n in (None, 1, 2, 4, 8, 12, 16, 64)] == \
        [1, 1, 1, 1, 2, 3, 4, 4]

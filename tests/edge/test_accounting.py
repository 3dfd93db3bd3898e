"""The one frame-accounting rule: every message accounts for its frames, a range drop for
every id in its range, and listen, bench, the gateway and the tests count alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lineside.edge.accounting import DROP, ERROR, RESULT, Ledger, outcome


def test_outcomes_of_each_message_kind():
    assert outcome("reject", {"camera_id": "c", "frame_id": 4, "verdict": "OK"}).count == 1
    error = outcome("event", {"kind": "error", "camera_id": None, "frame_id": None})
    assert (error.kind, error.count, list(error.frame_ids)) == (ERROR, 1, [])
    span = outcome("event", {"kind": "drop", "camera_id": "c", "frame_id": None,
                             "frame_ids": [1005, 1009]})
    assert (span.kind, span.count, list(span.frame_ids)) == (DROP, 5, [1005, 1006, 1007,
                                                                       1008, 1009])
    for topic, body in (("event", {"kind": "heartbeat"}), ("mask", {"camera_id": "c"}),
                        ("event", {"kind": "model", "status": "swapped"})):
        assert outcome(topic, body) is None
    # A malformed range names no frames but is still one message to account for.
    assert outcome("event", {"kind": "drop", "frame_ids": [9, 3]}).count == 1


def test_a_range_drop_counts_every_frame_in_it():
    book = Ledger()
    book.add("reject", {"camera_id": "c", "frame_id": 0})
    book.add("event", {"kind": "drop", "camera_id": "c", "frame_id": 1})
    book.add("event", {"kind": "drop", "camera_id": "c", "frame_id": None,
                       "frame_ids": [2, 1001]})
    book.add("event", {"kind": "heartbeat"})
    book.add("mask", {"camera_id": "c", "frame_id": 0})
    assert book.accounted == 1002 and book.counts == {RESULT: 1, ERROR: 0, DROP: 1001}
    assert book.ids(DROP, "c") == list(range(1, 1002))
    assert set(book.by_frame()) == {("c", i) for i in range(1002)}
    assert book.others == [("mask", {"camera_id": "c", "frame_id": 0})]
    lean = Ledger(keep=False)
    lean.add("event", {"kind": "drop", "camera_id": "c", "frame_id": None,
                       "frame_ids": [2, 1001]})
    assert lean.accounted == 1000 and lean.outcomes == []


@given(st.lists(st.tuples(st.sampled_from(["reject", "error", "drop", "range"]),
                          st.integers(0, 50), st.integers(1, 30)), max_size=40))
def test_accounted_is_the_number_of_frames_the_messages_name(messages):
    book, expected = Ledger(), 0
    for kind, first, width in messages:
        if kind == "reject":
            book.add("reject", {"camera_id": "c", "frame_id": first})
            expected += 1
        elif kind == "range":
            book.add("event", {"kind": "drop", "camera_id": "c", "frame_id": None,
                               "frame_ids": [first, first + width - 1]})
            expected += width
        else:
            book.add("event", {"kind": kind, "camera_id": "c", "frame_id": first})
            expected += 1
    assert book.accounted == expected == sum(1 for _ in book.frames())

"""Frame accounting as a consumer of the daemon's results sees it: the one rule.

Every frame the daemon receives ends as exactly one of a `reject` result, a `drop` event
or an `error` event (docs/protocol.md). A drop event names one `frame_id`, or, for a long
gap in a SUB stream, a range `frame_ids: [first, last]` with `frame_id: null` that stands
for every id in it. `outcome` turns one message into what it accounts for; `Ledger` keeps
the book. edge-listen, edge-bench, the PLC gateway and the tests all count with these, so
a range drop counts as its `last - first + 1` frames everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

RESULT, ERROR, DROP = "result", "error", "drop"
KINDS = (RESULT, ERROR, DROP)


@dataclass(frozen=True)
class Outcome:
    """What one message accounts for: `count` frames of one camera, ids `first..last`
    (both None when the message could not name its frame, e.g. an unparseable header)."""

    kind: str
    camera_id: str | None
    first: int | None
    last: int | None
    body: dict[str, Any]

    @property
    def count(self) -> int:
        if self.first is None or self.last is None:
            return 1  # one message, one frame, even when nobody knows which
        return self.last - self.first + 1

    @property
    def frame_ids(self) -> range:
        """The ids accounted for (empty when they are unknown)."""
        if self.first is None or self.last is None:
            return range(0)
        return range(self.first, self.last + 1)


def _frame_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def outcome(topic: str, body: dict[str, Any]) -> Outcome | None:
    """The outcome a message carries, or None for messages that account for no frame
    (heartbeats, masks, model events)."""
    camera = body.get("camera_id")
    camera = camera if isinstance(camera, str) else None
    if topic == "reject":
        kind = RESULT
    elif topic == "event" and body.get("kind") in (ERROR, DROP):
        kind = body["kind"]
    else:
        return None
    first = last = _frame_id(body.get("frame_id"))
    span = body.get("frame_ids")
    if first is None and isinstance(span, list) and len(span) == 2:
        low, high = _frame_id(span[0]), _frame_id(span[1])
        if low is not None and high is not None and low <= high:
            first, last = low, high
    return Outcome(kind, camera, first, last, body)


@dataclass
class Ledger:
    """The book of outcomes seen so far, per kind and per (camera, frame id).

    `keep=False` keeps only the counts (a listener that runs for months must not grow).
    """

    keep: bool = True
    outcomes: list[Outcome] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    others: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, topic: str, body: dict[str, Any]) -> Outcome | None:
        """Book one message; heartbeats are ignored, other messages kept in `others`."""
        seen = outcome(topic, body)
        if seen is None:
            if self.keep and not (topic == "event" and body.get("kind") == "heartbeat"):
                self.others.append((topic, body))
            return None
        if self.keep:
            self.outcomes.append(seen)
        self.counts[seen.kind] += seen.count
        return seen

    @property
    def accounted(self) -> int:
        """Frames accounted for (a range drop counts every frame in it)."""
        return sum(self.counts.values())

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        return [o.body for o in self.outcomes if o.kind == kind]

    def ids(self, kind: str, camera: str | None = None) -> list[int | None]:
        """Frame ids of one kind in arrival order, ranges expanded."""
        out: list[int | None] = []
        for o in self.outcomes:
            if o.kind == kind and (camera is None or o.camera_id == camera):
                out.extend(o.frame_ids if o.first is not None else [None])
        return out

    def frames(self) -> Iterator[tuple[tuple[str | None, int | None], str]]:
        """((camera, frame id), kind) for every frame accounted for, ranges expanded."""
        for o in self.outcomes:
            for frame_id in (o.frame_ids if o.first is not None else [None]):
                yield (o.camera_id, frame_id), o.kind

    def by_frame(self) -> dict[tuple[str | None, int | None], list[str]]:
        seen: dict[tuple[str | None, int | None], list[str]] = {}
        for key, kind in self.frames():
            seen.setdefault(key, []).append(kind)
        return seen

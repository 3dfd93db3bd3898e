"""Publish stage: results, masks and events out on the PUB socket, heartbeats between.

Everything the other stages say goes through the `Outbox`; this stage owns the socket
(ZeroMQ sockets belong to one thread). Latency is stamped at the last moment before a
result leaves, and every result is counted here, once. Every message carries the
daemon run's `run_id` and a `seq` that counts the messages of its topic from 1, so a
subscriber can tell a lost message from a quiet line (docs/protocol.md).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from lineside.edge import protocol
from lineside.edge.config import ServeConfig
from lineside.edge.curve import curve_server
from lineside.edge.metrics import DaemonCounters
from lineside.edge.pipeline.watchdog import Progress
from lineside.edge.postprocess import VERDICT_REJECT

END = object()  # end marker passed down the stages on shutdown


class Outbox:
    """The queue into the publish stage. Results must never be dropped: it is large, and
    a full outbox blocks the producer (backpressure) rather than losing a message."""

    def __init__(self, size: int = 4096) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=size)

    def put(self, message: tuple[str, dict[str, Any]] | object) -> None:
        self._queue.put(message)

    def offer(self, message: tuple[str, dict[str, Any]] | object) -> bool:
        """Queue without waiting; False when the outbox is full (publish is stuck)."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            return False
        return True

    def event(self, body: dict[str, Any]) -> None:
        self._queue.put((protocol.TOPIC_EVENT, body))

    def get(self, timeout: float) -> tuple[str, dict[str, Any]] | object | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()


class PublishStage:
    name = "publish"

    def __init__(self, config: ServeConfig, context: zmq.Context, outbox: Outbox,
                 counters: DaemonCounters, heartbeat: Callable[[bool], dict[str, Any]],
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 progress: Progress | None = None) -> None:
        self.config = config
        self.context = context
        self.outbox = outbox
        self.counters = counters
        self.heartbeat = heartbeat
        self.on_result = on_result
        self.progress = progress or Progress(self.name)
        self.finished = threading.Event()  # set once the final heartbeat is out
        self.run_id = uuid.uuid4().hex[:16]
        self._seq = dict.fromkeys(protocol.TOPICS, 0)

    def numbered(self, topic: str, body: dict[str, Any]) -> list[bytes]:
        """The wire message with this run's id and the topic's next sequence number."""
        self._seq[topic] += 1
        return protocol.encode_message(topic, {**body, "run_id": self.run_id,
                                               "seq": self._seq[topic]})

    def run(self) -> None:
        sock = self.context.socket(zmq.PUB)
        if self.config.curve_on("results"):
            curve_server(sock, self.config.curve_secret)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.LINGER, 2000)  # flush the last results on shutdown
        sock.bind(self.config.output)
        next_heartbeat = time.monotonic()
        try:
            while True:
                self.progress.beat()
                now = time.monotonic()
                if now >= next_heartbeat:
                    sock.send_multipart(self.numbered(protocol.TOPIC_EVENT,
                                                      self.heartbeat(False)))
                    next_heartbeat = now + self.config.heartbeat_s
                message = self.outbox.get(timeout=min(0.1, self.config.heartbeat_s))
                if message is None:
                    continue
                if message is END:
                    sock.send_multipart(self.numbered(protocol.TOPIC_EVENT,
                                                      self.heartbeat(True)))
                    break
                topic, body = message  # type: ignore[misc]
                if topic == protocol.TOPIC_REJECT:
                    self.account(body)
                sock.send_multipart(self.numbered(topic, body))
        finally:
            sock.close()
            self.finished.set()

    def account(self, body: dict[str, Any]) -> None:
        """Stamp and count one result just before it leaves."""
        published_ns = time.time_ns()
        body["published_ns"] = published_ns
        body["latency_ms"] = round((published_ns - body["received_ns"]) / 1e6, 3)
        self.counters.result(body["camera_id"], body["verdict"],
                             body["verdict"] == VERDICT_REJECT)
        if self.on_result is not None:
            self.on_result(body)
        self.counters.stage_time("end_to_end", body["latency_ms"] / 1000)

"""Client library for cameras and gateways: send frames, receive verdicts (docs/protocol.md).

A PLC gateway needs only `ResultSubscriber`; a camera bridge or simulator needs only
`FrameSender`. Both are thin wrappers over pyzmq and `lineside.edge.protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from lineside.edge import protocol
from lineside.edge.curve import curve_client


class FrameSender:
    """PUSH frames to a daemon's input endpoint."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None,
                 high_water_mark: int = 100, curve: tuple[str, str] | None = None) -> None:
        """`curve`: (daemon's public key file, this camera's secret key file) when the
        daemon's input runs CURVE (`edge-serve --curve-socket input`)."""
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUSH)
        if curve:
            curve_client(self.socket, *curve)
        self.socket.setsockopt(zmq.SNDHWM, high_water_mark)
        self.socket.setsockopt(zmq.LINGER, 5000)
        self.socket.connect(endpoint)

    def send(self, header: protocol.FrameHeader, pixels: np.ndarray) -> None:
        self.socket.send_multipart(protocol.encode_frame(header, pixels))

    def send_raw(self, parts: list[bytes], copy: bool = True) -> None:
        """Send parts as they are (pre-encoded payloads, or deliberately malformed ones);
        `copy=False` hands the bytes to ZeroMQ without a copy (they must not change)."""
        self.socket.send_multipart(parts, copy=copy)

    def close(self) -> None:
        self.socket.close()


class ResultSubscriber:
    """SUB to a daemon's output endpoint; yields (topic, body) pairs."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = protocol.TOPICS,
                 context: zmq.Context | None = None,
                 curve: tuple[str, str] | None = None) -> None:
        """`curve`: (daemon's public key file, this client's secret key file) when the
        daemon runs CURVE (`edge-serve --curve-secret`)."""
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        if curve:
            curve_client(self.socket, *curve)
        self.socket.setsockopt(zmq.RCVHWM, 0)  # a gateway must not lose verdicts
        self.socket.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket.connect(endpoint)

    def receive(self, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
        """The next message, or None when none arrives within `timeout_s`."""
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        return protocol.decode_message(self.socket.recv_multipart())

    def wait_ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Block until a heartbeat arrives: the subscription is live from then on.

        PUB/SUB drops what is published before the subscription reaches the publisher,
        so a gateway (or a test) should wait for this before frames flow.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.receive(max(0.0, deadline - time.monotonic()))
            if message and message[0] == protocol.TOPIC_EVENT and \
                    message[1].get("kind") == "heartbeat":
                return message[1]
        raise TimeoutError(f"no heartbeat from the daemon within {timeout_s} s")

    def messages(self, idle_timeout_s: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """Messages until none arrives for `idle_timeout_s`."""
        while (message := self.receive(idle_timeout_s)) is not None:
            yield message

    def close(self) -> None:
        self.socket.close()

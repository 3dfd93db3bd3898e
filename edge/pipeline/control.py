"""Control stage: a REP socket for operators (hot swap, status), off unless configured."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import zmq

from lineside.edge import protocol
from lineside.edge.curve import curve_server

POLL_MS = 100

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlStage:
    name = "control"

    def __init__(self, endpoint: str, context: zmq.Context, handlers: dict[str, Handler],
                 curve_secret: str = "") -> None:
        self.endpoint = endpoint
        self.context = context
        self.handlers = handlers
        self.curve_secret = curve_secret  # "" = no CURVE on this socket

    def reply(self, raw: bytes) -> dict[str, Any]:
        """The answer to one request (untrusted bytes)."""
        try:
            request = protocol.json_loads_limited(raw)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        command = request.get("command") if isinstance(request, dict) else None
        handler = self.handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}; known: "
                    + ", ".join(self.handlers)}
        return handler(request)

    def run(self, stop: threading.Event) -> None:
        sock = self.context.socket(zmq.REP)
        if self.curve_secret:
            curve_server(sock, self.curve_secret)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        try:
            while not stop.is_set():
                if sock.poll(POLL_MS):
                    sock.send_json(self.reply(sock.recv()))
        finally:
            sock.close()

"""The PLC gateway: the daemon's verdicts into PLC tags, fail-safe.

Safety rules, in order of importance:
- The fault bit goes high when the daemon's heartbeats stop for `watchdog_s`, after the
  gateway lost and regained its PLC connection, or when a reject could not be written
  within its deadline. It goes low again only when heartbeats flow and writes succeed.
- A frame the line did not get a clean verdict for (ERROR verdict, error event, drop
  event) raises the reject bit like a REJECT: an uninspected part is a suspect part.
- A reject that cannot be written is retried (with reconnects and backoff) until its
  deadline, then reported as a fault: never silently lost.
- The heartbeat word toggles only while the daemon is alive, so the PLC's own watchdog
  sees it freeze if the gateway itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio
import zmq.auth

from lineside.edge import protocol
from lineside.edge.accounting import RESULT, outcome
from lineside.edge.plc.config import VERDICT_CODES, CameraTags, PlcConfig
from lineside.edge.plc.writers import PlcWriteError, PlcWriter, create_writer

log = logging.getLogger("lineside.edge.plc")

Write = Callable[[PlcWriter], Awaitable[None]]


@dataclass
class Job:
    description: str
    writes: list[Write]
    deadline: float  # time.monotonic()
    is_reject: bool = False


@dataclass
class CameraState:
    results: int = 0
    rejects: int = 0


@dataclass
class GatewayStats:
    writes_ok: int = 0
    write_failures: int = 0
    rejects_written: int = 0
    rejects_lost: int = 0
    plc_reconnects: int = 0
    results_seen: int = 0
    faults: int = 0
    fault_reasons: set[str] = field(default_factory=set)


class Gateway:
    def __init__(self, config: PlcConfig,
                 writer_factory: Callable[[PlcConfig], PlcWriter] = create_writer) -> None:
        self.config = config
        self.writer_factory = writer_factory
        self.stats = GatewayStats()
        self.cameras: dict[str, CameraState] = {c: CameraState() for c in config.cameras}
        self.jobs: deque[Job] = deque()
        self.wake = asyncio.Event()
        self.last_heartbeat = 0.0  # monotonic; 0 = never
        self.fault_written: bool | None = None
        self.heartbeat_word = 0
        self.writer: PlcWriter | None = None
        self.ever_connected = False

    # -- fault handling ---------------------------------------------------------------
    @property
    def faulted(self) -> bool:
        return bool(self.stats.fault_reasons)

    def set_fault(self, reason: str) -> None:
        if reason not in self.stats.fault_reasons:
            log.warning("FAULT: %s", reason)
            self.stats.faults += 1
            self.stats.fault_reasons.add(reason)
            self.wake.set()

    def clear_fault(self, reason: str) -> None:
        if reason in self.stats.fault_reasons:
            self.stats.fault_reasons.discard(reason)
            log.info("fault cleared: %s", reason)
            self.wake.set()

    # -- from the daemon --------------------------------------------------------------
    def on_message(self, topic: str, body: dict[str, Any]) -> None:
        if topic == protocol.TOPIC_EVENT and body.get("kind") == "heartbeat":
            self.last_heartbeat = time.monotonic()
            self.clear_fault("daemon heartbeat lost")
            # Fresh evidence that the whole path works again.
            for reason in list(self.stats.fault_reasons):
                if reason.startswith(("PLC connection", "reject not written")):
                    self.clear_fault(reason)
            return
        seen = outcome(topic, body)
        if seen is None or seen.camera_id not in self.config.cameras:
            return
        if seen.kind == RESULT:
            self.stats.results_seen += 1
            self.enqueue_verdict(seen.camera_id, seen.last, body["verdict"],
                                 body.get("classes", {}))
        elif seen.first is not None:  # an error or drop naming its frame(s): suspect parts
            self.enqueue_verdict(seen.camera_id, seen.last, "ERROR", {}, frames=seen.count)

    def enqueue_verdict(self, camera: str, frame_id: int | None, verdict: str,
                        classes: dict[str, Any], frames: int = 1) -> None:
        """One verdict for `frames` frames ending at `frame_id` (a range drop is many)."""
        tags: CameraTags = self.config.cameras[camera]
        state = self.cameras[camera]
        state.results += frames
        bad = verdict != "OK"
        state.rejects += frames if bad else 0
        writes: list[Write] = []

        def add(tag: Any, method: str, value: Any) -> None:
            if tag is not None:
                writes.append(lambda w, t=tag, m=method, v=value: getattr(w, m)(t, v))

        # Data first, the reject bit last: when the PLC sees the bit, the data is there.
        for class_id, tag in tags.area.items():
            add(tag, "write_u32", classes.get(str(class_id), {}).get("area", 0))
        add(tags.last_frame_id, "write_u32", frame_id or 0)
        add(tags.verdict, "write_u16", VERDICT_CODES.get(verdict, VERDICT_CODES["ERROR"]))
        add(tags.results, "write_u32", state.results)
        add(tags.rejects, "write_u32", state.rejects)
        pulse = self.config.reject_pulse_ms > 0
        if bad or not pulse:
            add(tags.reject, "write_bit", bad)
        deadline = time.monotonic() + self.config.reject_deadline_ms / 1000
        self.jobs.append(Job(f"{camera} frame {frame_id} {verdict}", writes, deadline, bad))
        if bad and pulse and tags.reject is not None:
            asyncio.get_running_loop().call_later(
                self.config.reject_pulse_ms / 1000, self._end_pulse, camera)
        self.wake.set()

    def _end_pulse(self, camera: str) -> None:
        tag = self.config.cameras[camera].reject
        self.jobs.append(Job(f"{camera} pulse end", [lambda w: w.write_bit(tag, False)],
                             time.monotonic() + self.config.reject_deadline_ms / 1000))
        self.wake.set()

    # -- loops ------------------------------------------------------------------------
    async def receive_loop(self, stop: asyncio.Event) -> None:
        context = zmq.asyncio.Context.instance()
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.config.reconnect_max_s * 1000))
        if self.config.curve_client_secret:
            server_public, _ = zmq.auth.load_certificate(self.config.curve_server_public)
            public, secret = zmq.auth.load_certificate(self.config.curve_client_secret)
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = \
                server_public, public, secret
        for topic in (protocol.TOPIC_REJECT, protocol.TOPIC_EVENT):
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(self.config.daemon)
        try:
            while not stop.is_set():
                if not await sock.poll(200):
                    continue
                try:
                    topic, body = protocol.decode_message(await sock.recv_multipart())
                except ValueError as exc:
                    log.error("ignoring an undecodable message from the daemon: %s", exc)
                    continue
                self.on_message(topic, body)
        finally:
            sock.close()

    async def watchdog_loop(self, stop: asyncio.Event) -> None:
        started = time.monotonic()
        next_toggle = 0.0
        while not stop.is_set():
            now = time.monotonic()
            seen = self.last_heartbeat or started
            if now - seen > self.config.watchdog_s:
                self.set_fault("daemon heartbeat lost")
            elif self.config.heartbeat is not None and now >= next_toggle \
                    and self.last_heartbeat:
                self.heartbeat_word ^= 1
                word = self.heartbeat_word
                self.jobs.append(Job("heartbeat", [
                    lambda w, v=word: w.write_u16(self.config.heartbeat, v)],
                    now + self.config.watchdog_s))
                next_toggle = now + self.config.heartbeat_toggle_s
                self.wake.set()
            await asyncio.sleep(0.05)

    async def _connect(self, stop: asyncio.Event) -> PlcWriter | None:
        delay = 0.1
        while not stop.is_set():
            writer = self.writer_factory(self.config)
            try:
                await writer.connect()
                if self.ever_connected:
                    self.stats.plc_reconnects += 1
                    self.set_fault("PLC connection was lost and re-established")
                self.ever_connected = True
                self.fault_written = None  # rewrite the fault bit on the new connection
                log.info("connected to the PLC (%s)", self.config.protocol)
                return writer
            except PlcWriteError as exc:
                log.warning("PLC connect failed (%s); retrying in %.1f s", exc, delay)
                await writer.close()
                self._expire_jobs()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
        return None

    def _expire_jobs(self) -> None:
        now = time.monotonic()
        kept: deque[Job] = deque()
        for job in self.jobs:
            if job.deadline < now:
                if job.is_reject:
                    self.stats.rejects_lost += 1
                    log.error("reject NOT written before its deadline: %s", job.description)
                    self.set_fault("reject not written before its deadline")
            else:
                kept.append(job)
        self.jobs = kept

    async def write_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set() or self.jobs:
            if self.writer is None:
                self.writer = await self._connect(stop)
                if self.writer is None:
                    return
            try:
                if self.fault_written != self.faulted:
                    fault = self.faulted
                    await self.writer.write_bit(self.config.fault, fault)
                    self.fault_written = fault
                    self.stats.writes_ok += 1
                self._expire_jobs()
                if not self.jobs:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), timeout=0.1)
                    if stop.is_set() and not self.jobs:
                        return
                    continue
                job = self.jobs[0]
                while job.writes:
                    await job.writes[0](self.writer)
                    job.writes.pop(0)  # done: a retry resumes after it
                    self.stats.writes_ok += 1
                self.jobs.popleft()
                self.stats.rejects_written += job.is_reject
            except PlcWriteError as exc:
                self.stats.write_failures += 1
                log.error("PLC write failed (%s): reconnecting", exc)
                await self.writer.close()
                self.writer = None

    async def run(self, stop: asyncio.Event) -> GatewayStats:
        tasks = [asyncio.create_task(loop(stop)) for loop in
                 (self.receive_loop, self.watchdog_loop, self.write_loop)]
        try:
            await stop.wait()
        finally:
            await asyncio.wait(tasks, timeout=5)
            for task in tasks:
                task.cancel()
            if self.writer is not None:
                await self.writer.close()
        return self.stats

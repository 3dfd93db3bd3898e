"""The PLC gateway: the daemon's verdicts into PLC tags, fail-safe.

Safety rules, in order of importance:
- The fault bit goes high when the daemon's heartbeats stop for `watchdog_s`, when a
  heartbeat says a pipeline stage is stalled, when frames are in flight and no verdict
  has come for `progress_timeout_s`, when a message from the daemon was lost (its
  per-topic sequence number skipped), after the gateway lost and regained its PLC
  connection, or when a reject could not be written within its deadline. It goes low
  again only on fresh evidence (heartbeats flow, writes succeed) and never before it has
  been high for `fault_hold_s`, so the PLC's scan sees every fault.
- A frame the line did not get a clean verdict for (ERROR verdict, error event, drop
  event, every frame of a range drop) raises the reject bit like a REJECT: an uninspected
  part is a suspect part.
- Pulse mode queues one pulse per reject with at least `reject_gap_ms` low between them,
  so back-to-back rejects are never merged into one pulse.
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

from lineside.edge import protocol
from lineside.edge.accounting import RESULT, outcome
from lineside.edge.curve import curve_client
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
    pulses: deque[float] = field(default_factory=deque)  # deadlines of pulses to give
    wake: asyncio.Event = field(default_factory=asyncio.Event)


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
    lost_messages: list[tuple[str, int, int]] = field(default_factory=list)  # topic, seqs


# Fault reasons (fixed keys; the log line carries the details).
HEARTBEAT_LOST = "daemon heartbeat lost"
STALLED = "daemon stalled"
NO_PROGRESS = "frames in flight without verdicts"
MESSAGES_LOST = "messages from the daemon lost"
PLC_RECONNECTED = "PLC connection was lost and re-established"
REJECT_LATE = "reject not written before its deadline"
# Faults that a healthy heartbeat (fresh evidence that the path works) clears.
CLEARED_BY_HEARTBEAT = (HEARTBEAT_LOST, MESSAGES_LOST, PLC_RECONNECTED, REJECT_LATE)


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
        self._fault_since: dict[str, float] = {}
        self._clear_wanted: set[str] = set()
        self._run_id: str | None = None
        self._last_seq: dict[str, int] = {}
        self._progress: tuple[int, float] | None = None  # (verdicts so far, since when)

    # -- fault handling ---------------------------------------------------------------
    @property
    def faulted(self) -> bool:
        return bool(self.stats.fault_reasons)

    def set_fault(self, reason: str, detail: str = "") -> None:
        self._clear_wanted.discard(reason)
        if reason not in self.stats.fault_reasons:
            log.warning("FAULT: %s%s", reason, f": {detail}" if detail else "")
            self.stats.faults += 1
            self.stats.fault_reasons.add(reason)
            self._fault_since[reason] = time.monotonic()
            self.wake.set()

    def clear_fault(self, reason: str) -> None:
        """Clear now, or as soon as the fault has been up for `fault_hold_s`."""
        if reason not in self.stats.fault_reasons:
            return
        if time.monotonic() - self._fault_since.get(reason, 0.0) < self.config.fault_hold_s:
            self._clear_wanted.add(reason)
            return
        self.stats.fault_reasons.discard(reason)
        self._clear_wanted.discard(reason)
        log.info("fault cleared: %s", reason)
        self.wake.set()

    def _release_held_faults(self) -> None:
        for reason in list(self._clear_wanted):
            self.clear_fault(reason)

    # -- from the daemon --------------------------------------------------------------
    def _check_sequence(self, topic: str, body: dict[str, Any]) -> None:
        """Every PUB message carries its daemon run's id and a per-topic sequence number
        (docs/protocol.md): a skipped number is a message lost on the way here."""
        run, seq = body.get("run_id"), body.get("seq")
        if not isinstance(seq, int) or not isinstance(run, str):
            return  # a daemon that does not number its messages: nothing to check
        if run != self._run_id:  # a new daemon run numbers from 1 again
            self._run_id, self._last_seq = run, {}
        last = self._last_seq.get(topic)
        self._last_seq[topic] = seq
        if last is not None and seq != last + 1:
            first, end = last + 1, seq - 1
            self.stats.lost_messages.append((topic, first, end))
            self.set_fault(MESSAGES_LOST, f"{topic} seq {first}..{end} of daemon run {run} "
                           f"never arrived ({max(1, end - first + 1)} message(s))")

    def _on_heartbeat(self, body: dict[str, Any]) -> None:
        self.last_heartbeat = now = time.monotonic()
        stalled = body.get("stalled") or []
        if stalled:
            self.set_fault(STALLED, ", ".join(map(str, stalled)))
        else:
            self.clear_fault(STALLED)
        counters = body.get("counters") or {}
        verdicts = sum(int(counters.get(k, 0)) for k in ("results", "errors", "dropped"))
        if not body.get("in_flight") or self._progress is None \
                or verdicts != self._progress[0]:
            self._progress = (verdicts, now)
            self.clear_fault(NO_PROGRESS)
        elif now - self._progress[1] > self.config.progress_timeout_s:
            self.set_fault(NO_PROGRESS, f"{body['in_flight']} frame(s) in flight and no "
                           f"verdict for {now - self._progress[1]:.1f} s")
        # Fresh evidence that the whole path works again.
        if not stalled:
            for reason in CLEARED_BY_HEARTBEAT:
                self.clear_fault(reason)

    def on_message(self, topic: str, body: dict[str, Any]) -> None:
        self._check_sequence(topic, body)
        if topic == protocol.TOPIC_EVENT and body.get("kind") == "heartbeat":
            self._on_heartbeat(body)
            return
        seen = outcome(topic, body)
        if seen is None or seen.camera_id not in self.config.cameras:
            return
        if seen.kind == RESULT:
            self.stats.results_seen += 1
            self.enqueue_verdict(seen.camera_id, seen.last, body["verdict"],
                                 body.get("classes", {}), body.get("line_position"))
        elif seen.first is not None:  # an error or drop naming its frame(s): suspect parts
            self.enqueue_verdict(seen.camera_id, seen.last, "ERROR", {}, frames=seen.count)

    def enqueue_verdict(self, camera: str, frame_id: int | None, verdict: str,
                        classes: dict[str, Any], line_position: float | None = None,
                        frames: int = 1) -> None:
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
        if line_position is not None:
            add(tags.line_position, "write_u32", round(line_position))
        add(tags.verdict, "write_u16", VERDICT_CODES.get(verdict, VERDICT_CODES["ERROR"]))
        add(tags.results, "write_u32", state.results)
        add(tags.rejects, "write_u32", state.rejects)
        pulse = self.config.reject_pulse_ms > 0
        if not pulse:
            add(tags.reject, "write_bit", bad)
        deadline = time.monotonic() + self.config.reject_deadline_ms / 1000
        self.jobs.append(Job(f"{camera} frame {frame_id} {verdict}", writes, deadline,
                             bad and not pulse))
        if bad and pulse and tags.reject is not None:
            state.pulses.extend([deadline] * frames)
            state.wake.set()
        self.wake.set()

    async def pulse_loop(self, camera: str, stop: asyncio.Event) -> None:
        """One pulse per queued reject: high `reject_pulse_ms`, then low at least
        `reject_gap_ms`, so every reject is one countable rising edge at the PLC."""
        tag = self.config.cameras[camera].reject
        state = self.cameras[camera]
        high_s = self.config.reject_pulse_ms / 1000
        low_s = (self.config.reject_gap_ms or self.config.reject_pulse_ms) / 1000
        while not stop.is_set() or state.pulses:
            if not state.pulses:
                state.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), timeout=0.1)
                continue
            deadline = state.pulses.popleft()
            self.jobs.append(Job(f"{camera} reject pulse", [lambda w: w.write_bit(tag, True)],
                                 deadline, is_reject=True))
            self.wake.set()
            await asyncio.sleep(high_s)
            self.jobs.append(Job(f"{camera} pulse end", [lambda w: w.write_bit(tag, False)],
                                 time.monotonic() + self.config.reject_deadline_ms / 1000))
            self.wake.set()
            await asyncio.sleep(low_s)

    # -- loops ------------------------------------------------------------------------
    async def receive_loop(self, stop: asyncio.Event) -> None:
        context = zmq.asyncio.Context.instance()
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.config.reconnect_max_s * 1000))
        if self.config.curve_client_secret:
            curve_client(sock, self.config.curve_server_public,
                         self.config.curve_client_secret)
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
            self._release_held_faults()
            if now - seen > self.config.watchdog_s:
                self.set_fault(HEARTBEAT_LOST)
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
                    self.set_fault(PLC_RECONNECTED)
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
                    self.set_fault(REJECT_LATE, job.description)
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
        if self.config.reject_pulse_ms > 0:
            tasks += [asyncio.create_task(self.pulse_loop(camera, stop))
                      for camera in self.config.cameras]
        try:
            await stop.wait()
        finally:
            await asyncio.wait(tasks, timeout=5)
            for task in tasks:
                task.cancel()
            if self.writer is not None:
                await self.writer.close()
        return self.stats

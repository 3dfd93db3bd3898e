"""The runtime daemon: the pipeline's stages wired together (docs/architecture.md).

    receive -> per-camera queues -> batch -> screen + infer -> decide -> publish
                                                                 `-> record, shadow
                      watchdog (deadlines, stalls)      control (swap, shadow, promote,
                                                                 rollback, status)

Each stage is a small object in lineside.edge.pipeline; here they get their threads and
the bounded queues between them. The backend only ever runs inference: decoding, tiling
and post-processing of other frames happen on other threads while a batch runs. Every
received message ends as exactly one of a `reject` result, a `drop` event or an `error`
event (docs/protocol.md), exactly once: the in-flight registry (pipeline/watchdog.py)
decides who publishes a frame's verdict, so a frame stuck behind a hung stage gets the
fail-safe verdict at its deadline and its late result is dropped. ZeroMQ sockets are
each owned by one thread, as ZeroMQ requires.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

import zmq
import zmq.auth

from lineside.edge import protocol
from lineside.edge.backends.fault_injection import decide_delay_s
from lineside.edge.config import ServeConfig
from lineside.edge.metrics import DaemonCounters, MetricsServer
from lineside.edge.pipeline.batch import BatchStage
from lineside.edge.pipeline.control import ControlStage
from lineside.edge.pipeline.decide import Decider, Verdict, failsafe_result
from lineside.edge.pipeline.engine_build import EngineBuild, RecentFrames
from lineside.edge.pipeline.frame_queues import FrameQueues
from lineside.edge.pipeline.infer import InferredFrame, ModelStages
from lineside.edge.pipeline.model import LoadedModel, ModelSlot, load_candidate, load_model
from lineside.edge.pipeline.ordered_pool import OrderedPool, default_workers
from lineside.edge.pipeline.publish import END, Outbox, PublishStage
from lineside.edge.pipeline.receive import ReceiveStage
from lineside.edge.pipeline.record import Recorder, RecordPolicy
from lineside.edge.pipeline.shadow import ShadowStage
from lineside.edge.pipeline.watchdog import InFlight, Progress, Watchdog
from lineside.edge.pipeline.worker import Workers
from lineside.edge.protocol import Frame

log = logging.getLogger("lineside.edge.daemon")

EXIT_STALLED = 3  # edge-serve's exit status when the stall policy gave up on the pipeline
POLL_S = 0.1  # how often a waiting stage beats
# After stop, once every accepted frame has its verdict and the outbox is empty, a stage
# still running this much later is stuck in a call that cannot be interrupted.
DRAIN_GRACE_S = 2.0
# Stages watched for stalls: the ones frames pass through (control carries none, and a
# model load there may take long).
WATCHED = ("receive", "batch", "infer", "decide", "publish")


class Daemon:
    def __init__(self, config: ServeConfig, model: LoadedModel,
                 context: zmq.Context | None = None, shadow: LoadedModel | None = None
                 ) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.counters = DaemonCounters()
        self.stop_event = threading.Event()
        self.workers = Workers(self.stop_event)
        self.outbox = Outbox()
        self.models = ModelSlot(model, lambda path: load_model(path, config),
                                self.outbox.event, self._swapped, config.bundles_allowed(),
                                keep_previous_s=config.rollback_keep_s)
        self.counters.model_info(model.describe())
        self.queues: FrameQueues[Frame] = FrameQueues(self._camera_limits)
        self.progress = {name: Progress(name) for name in WATCHED}
        self.in_flight = InFlight()
        self.receive = ReceiveStage(config, self.context, self.queues, self.counters,
                                    self.outbox.event, self.in_flight, self.progress["receive"])
        self.recent = RecentFrames()
        self.batcher = BatchStage(self.queues, config.max_batch, config.max_wait_ms,
                                  self.counters, self.recent.add, config.for_camera,
                                  busy=self._model_busy)
        self.model_stages = ModelStages(config.max_batch, self.counters, self.models.retained)
        self.view = None  # the operator view, when --http is on
        self.recorder = Recorder(config.record, RecordPolicy(
            config.record_ok_fraction, config.record_band, config.record_rate),
            int(config.record_quota_mb * 1e6), self.counters) if config.record else None
        self.shadow = ShadowStage(config, self.counters, self.outbox.offer, self._serving_idle,
                                  self.recorder.keep if self.recorder else None)
        if shadow is not None:
            self.shadow.start(shadow)
        observers = ([self.recorder.consider] if self.recorder else []) + [self.shadow.offer]
        self.decider = Decider(config, self.counters, observers=observers)
        self.decide_workers = config.decide_workers or default_workers(os.cpu_count())
        self._decide_delay_s = decide_delay_s(config.inject_faults)  # testing only
        self.publisher = PublishStage(config, self.context, self.outbox, self.counters,
                                      self.heartbeat, self._on_result,
                                      self.progress["publish"])
        self.fatal = ""  # why the stall policy stopped the daemon ("" = it did not)
        self.engine_build = EngineBuild(config, self.models, self.recent, self.counters,
                                        self.outbox.event)
        self.watchdog = Watchdog(
            self.in_flight, list(self.progress.values()), self.counters, self.outbox.offer,
            lambda base, reason: failsafe_result(base, config.failsafe_verdict, reason),
            config.stall_s, config.stall_exit_s, self._give_up)
        self._batches: queue.Queue = queue.Queue(maxsize=2)
        self._inferring = False  # the infer stage is running a batch
        self._inferred: queue.Queue = queue.Queue(maxsize=16)
        self._metrics_server: MetricsServer | None = None
        self._authenticator: Any = None
        self.started_ns = time.time_ns()

    @classmethod
    def from_config(cls, config: ServeConfig) -> Daemon:
        """Load, verify and warm the configured bundle (and the shadow candidate), then
        build the daemon around them."""
        model = load_model(config.bundle, config)
        return cls(config, model, shadow=load_candidate(config.shadow, config, model)
                   if config.shadow else None)

    @property
    def model(self) -> LoadedModel:
        return self.models.current

    def _camera_limits(self, camera_id: str) -> tuple[str, int]:
        settings = self.config.for_camera(camera_id)
        return settings.overload, settings.queue_size

    def _swapped(self, model: LoadedModel, result: str) -> None:
        self.counters.swap(result)
        if result == "ok":
            self.counters.model_info(model.describe())
            self.engine_build.start(model)  # a swapped-in bundle may have one pending

    def _on_result(self, body: dict[str, Any]) -> None:
        if self.view is not None:
            self.view.record(body)

    def swap_model(self, path: str | None = None) -> dict[str, Any]:
        return self.models.swap(path or self.config.bundle)

    def _serving_idle(self) -> bool:
        """No frame waits for the model and none is in it: shadow work may run."""
        return not self._model_busy() and not self.queues.waiting()

    # -- learning from the line: control commands ----------------------------------------
    def start_shadow(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request.get("bundle") or ""
        if not path:
            stopped = self.shadow.stop()
            return {"ok": True, "shadow": None,
                    "stopped": str(stopped.bundle.root) if stopped else None}
        if outside := self.models.outside(path):
            return {"ok": False, "error": outside}
        try:
            self.shadow.start(load_candidate(path, self.config, self.model))
        except Exception as exc:
            log.error("shadow %s refused: %s", path, exc)
            return {"ok": False, "error": str(exc)}
        self.outbox.event({"kind": "shadow", "status": "started", "bundle": str(path)})
        return {"ok": True, "shadow": self.shadow.describe()}

    def promote(self, request: dict[str, Any]) -> dict[str, Any]:
        """Serve the shadow model through the hot-swap path, if it meets the bar
        (ShadowStage.promote_refusal)."""
        candidate = self.shadow.candidate
        why, check = self.shadow.promote_refusal(self.model, request.get("heldout") or "")
        if why or candidate is None:
            log.warning("promote refused: %s", why)
            self.outbox.event({"kind": "model", "status": "promote_refused", "reason": why,
                               **check})
            return {"ok": False, "error": f"promote refused: {why}", **check}
        answer = self.models.swap(str(candidate.bundle.root), why="promote")
        if answer["ok"]:
            self.shadow.stop()
        return {**answer, **check}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        loops = [("receive", lambda: self.receive.run(self.stop_event)),
                 ("batch", self._batch_loop), ("infer", self._infer_loop),
                 ("decide", self._decide_loop), ("publish", self.publisher.run),
                 ("watchdog", lambda: self.watchdog.run(self.publisher.finished)),
                 ("shadow", self.shadow.run)]
        if self.recorder is not None:
            loops.append(("record", self.recorder.run))
        if self.config.control:
            control = ControlStage(self.config.control, self.context, {
                "swap": lambda request: self.swap_model(request.get("bundle")),
                "status": lambda _: {"ok": True, **self.model.describe(),
                                     "counters": self.counters.snapshot(),
                                     **self._learning()},
                "shadow": self.start_shadow, "promote": self.promote,
                "rollback": lambda _: self.models.rollback()},
                self.config.curve_secret if self.config.curve_on("control") else "")
            loops.append(("control", lambda: control.run(self.stop_event)))
        if self.config.curve_secret:  # before any CURVE socket takes a connection
            self._start_curve_authenticator()
        for name, loop in loops:
            self.workers.start(name, loop)
        self.engine_build.start(self.model)
        if self.config.http:
            from lineside.edge.operator_view import OperatorView

            self.view = OperatorView(
                self.config.http,
                classes=lambda: [(c.id, c.name) for c in self.model.bundle.manifest.classes],
                describe=lambda: self.model.describe(), counters=self.counters.snapshot)
            self.decider.observers.append(self.view.observe)
            self.view.start()
        if self.config.metrics:
            self._metrics_server = MetricsServer(self.config.metrics, self.counters,
                                                 self.health, self.readiness)
            self._metrics_server.start()
        log.info("serving %s on %s (%s) -> %s", self.model.describe(), self.config.input,
                 self.config.input_mode, self.config.output)

    def _start_curve_authenticator(self) -> None:
        """ZAP handler that admits only the configured gateways' public keys."""
        from zmq.auth.thread import ThreadAuthenticator

        self._authenticator = ThreadAuthenticator(self.context)
        self._authenticator.start()
        self._authenticator.configure_curve(
            domain="*", location=self.config.curve_clients or zmq.auth.CURVE_ALLOW_ANY)

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server else None

    def health(self) -> tuple[bool, str]:
        """(ok, why not): every stage thread alive and none stalled."""
        if not self.workers.healthy():
            error = self.workers.first_error
            return False, f"a stage failed: {error!r}" if error else "a stage thread ended"
        return self.watchdog.health()

    def readiness(self) -> tuple[bool, str]:
        ok, reason = self.health()
        if not ok:
            return ok, reason
        if self.stop_event.is_set() or not self.receive.accepting.is_set():
            return False, "not accepting frames (starting or draining)"
        return True, ""

    def healthy(self) -> bool:
        return self.health()[0]

    def _give_up(self, reason: str) -> None:
        """The stall policy: stop, and let edge-serve exit non-zero for its supervisor."""
        log.critical("giving up: %s; exiting with status %d for the supervisor to restart "
                     "the daemon", reason, EXIT_STALLED)
        self.fatal = reason
        self.outbox.offer((protocol.TOPIC_EVENT, {"kind": "fatal", "reason": reason}))
        self.stop_event.set()

    def stop(self) -> None:
        """Stop accepting frames; the stages drain what was accepted, then exit."""
        self.stop_event.set()

    def drain(self, timeout_s: float) -> list[str]:
        """After stop(): wait until the stages finish; the stages still running ([] when
        all finished). A stage stuck in a call nothing can interrupt (a hung GPU call) is
        not waited for once every accepted frame has its verdict out (the watchdog gives
        the stuck ones theirs at their deadline): a supervisor's stop must not hang."""
        end = time.monotonic() + timeout_s
        settled_at: float | None = None
        while self.workers.alive() and (now := time.monotonic()) < end:
            self.workers.join(min(end, now + POLL_S))
            if len(self.in_flight) and self.watchdog.stalled:
                # Frames behind a stalled stage will never be decided: say so now.
                self._abandon_in_flight(f"stopping with stalled stages: "
                                        f"{', '.join(self.watchdog.stalled)}")
            if len(self.in_flight) or self.outbox.qsize() or not self.watchdog.delivered():
                settled_at = None
            elif settled_at is None:
                settled_at = now
            elif now - settled_at >= DRAIN_GRACE_S:
                break
        running = self.workers.alive()
        if running and len(self.in_flight):
            self._abandon_in_flight(f"stopping: no verdict after {timeout_s:.0f} s of drain")
            wait_until = time.monotonic() + DRAIN_GRACE_S
            while (self.outbox.qsize() or not self.watchdog.delivered()) \
                    and time.monotonic() < wait_until:
                time.sleep(POLL_S)
        if running:
            log.error("stages still running after every verdict was out: %s",
                      ", ".join(running))
        return running

    def _abandon_in_flight(self, reason: str) -> None:
        count = self.watchdog.abandon(reason)
        if count:
            log.error("%s: fail-safe verdict for %d frame(s) in flight", reason, count)

    def join(self, timeout: float | None = None) -> None:
        self.workers.join(None if timeout is None else time.monotonic() + timeout)
        if self._metrics_server:
            self._metrics_server.stop()
        if self._authenticator is not None:
            self._authenticator.stop()
        if self.view is not None:
            self.view.stop()
        if self.workers.first_error is not None:
            raise RuntimeError("a pipeline stage failed") from self.workers.first_error

    # -- the loops between the stages ------------------------------------------------
    # Each beats its Progress while it waits for input and after each unit of work; a
    # unit that never finishes (a hung inference call) or a put that never completes
    # (a downstream stage that stopped) stops the beats: that is a stall.
    def _batch_loop(self) -> None:
        beat = self.progress["batch"].beat
        while (batch := self.batcher.next(self.model, idle=beat)) is not None:
            self._batches.put(batch)
            beat()
        self._batches.put(END)

    def _model_busy(self) -> bool:
        """Batches are queued for the model or it is running one (the batcher lets a
        partial batch grow only then)."""
        return self._inferring or self._batches.qsize() > 0

    def _infer_loop(self) -> None:
        for batch in _items(self._batches, self.progress["infer"]):
            self._inferring = True
            try:
                for item in self.model_stages.run(batch):
                    self._inferred.put(item)
            finally:
                self._inferring = False
        self._inferred.put(END)

    def _decide_loop(self) -> None:
        """Frames to verdicts on the post-processing pool, delivered in per-camera order.
        A frame is settled only when its verdict is ready, so one whose post-processing
        hangs is still the watchdog's to give the fail-safe verdict at its deadline."""
        progress = self.progress["decide"]
        with OrderedPool(self.decide_workers, self._decide, self._deliver,
                         self.decider.failed, name="edge-decide") as pool:
            while True:
                if not pool.pending():
                    progress.beat()  # idle or keeping up; a stuck verdict stops the beats
                try:
                    item = self._inferred.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if item is END:
                    break
                if item.frame.serial not in self.in_flight:
                    self.counters.late_result()  # its fail-safe verdict is already out
                    continue
                pool.submit(item.frame.header.camera_id, item)
        self.outbox.put(END)
        self.shadow.closed.set()  # nothing more is decided: they finish what they hold
        if self.recorder is not None:
            self.recorder.closed.set()

    def _decide(self, item: InferredFrame) -> Verdict:
        began = time.perf_counter()
        if self._decide_delay_s:
            time.sleep(self._decide_delay_s)  # --inject-faults decide-delay-ms: tests only
        verdict = self.decider.verdict(item)
        self.counters.stage_time("postprocess", time.perf_counter() - began)
        return verdict

    def _deliver(self, item: InferredFrame, verdict: Verdict) -> None:
        if self.in_flight.settle(item.frame.serial):
            self.decider.deliver(verdict, self.outbox.put)
        else:
            self.counters.late_result()  # the watchdog gave its verdict meanwhile
        self.progress["decide"].beat()

    def _learning(self) -> dict[str, Any]:
        """The heartbeat's and status's view of recording and shadowing (when on)."""
        out: dict[str, Any] = {}
        if self.recorder is not None:
            out["recording"] = self.recorder.describe()
        if shadow := self.shadow.describe():
            out["shadow"] = shadow
        return out

    def heartbeat(self, final: bool = False) -> dict[str, Any]:
        depths = {"batches": self._batches.qsize(), "inferred": self._inferred.qsize(),
                  "outbox": self.outbox.qsize()}
        for camera, depth in self.queues.depth().items():
            depths[f"camera:{camera}"] = depth
        self.counters.queue_depths(depths)
        return {"kind": "heartbeat", "final": final, "time_ns": time.time_ns(),
                "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 3),
                "counters": self.counters.snapshot(), "queues": depths,
                "in_flight": len(self.in_flight), "stalled": list(self.watchdog.stalled),
                **({"engine": self.engine_build.describe()}
                   if self.engine_build.state != "idle" else {}),
                **self._learning(),
                **self.model.describe()}


def _items(source: queue.Queue, progress: Progress):
    """Items from a stage queue until the end marker, beating while it waits."""
    while True:
        progress.beat()
        try:
            item = source.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if item is END:
            return
        yield item


__all__ = ["EXIT_STALLED", "Daemon"]

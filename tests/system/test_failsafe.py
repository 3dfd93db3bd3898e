"""Fail safe when the line stalls (real edge-serve processes on 127.0.0.1): a hung or slow
inference call never lets a frame pass without a verdict, a stall is visible in the
heartbeat and /healthz, and the stall policy hands the daemon back to its supervisor.

The hang and the slowness are injected (`--inject-faults hang-after=N|delay-ms=N`): they
stand in for a GPU call that never returns, which a CPU cannot produce on demand."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from lineside.edge.cli.args import serve_command
from lineside.edge.client import FrameSender, ResultSubscriber
from lineside.edge.daemon import EXIT_STALLED
from tests.helpers import free_endpoint
from tests.system.line import (
    Supervisor,
    assert_every_frame_once,
    collect,
    header,
    next_heartbeat,
    send_frames,
    serve,
    strip,
)

pytestmark = pytest.mark.slow

DEADLINE_MS = 1000
SHAPE = (256, 512)


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_hung_inference_call_gets_every_frame_one_verdict_by_its_deadline(trained_bundle):
    port = int(free_endpoint().rsplit(":", 1)[1])
    stall_s = 2.0
    with serve(trained_bundle, "--inject-faults", "hang-after=3", "--deadline-ms",
               str(DEADLINE_MS), "--stall-s", str(stall_s), "--stall-exit-s", "0",
               "--heartbeat-s", "0.25", "--metrics", f"127.0.0.1:{port}") as d:
        first_503: list[float] = []

        def watch() -> None:  # a supervisor's health probe, every 50 ms
            while not first_503:
                if health(port)[0] == 503:
                    first_503.append(time.monotonic())
                time.sleep(0.05)

        prober = threading.Thread(target=watch, daemon=True)
        prober.start()
        sent = send_frames(d, "cam0", 10, SHAPE)
        book = collect(d.subscriber, len(sent), timeout_s=30)
        assert_every_frame_once(book, sent)
        ok = [r for r in book.results if r["verdict"] != "ERROR"]
        failsafe = [r for r in book.results if r["verdict"] == "ERROR"]
        assert ok and failsafe, "some frames before the hang, the rest after it"
        for result in failsafe:
            took_ms = (result["published_ns"] - result["received_ns"]) / 1e6
            assert DEADLINE_MS <= took_ms <= DEADLINE_MS + 100, took_ms
            assert result["reasons"][0].startswith("deadline missed")
        hung_at = max(r["published_ns"] for r in ok) / 1e9  # the last call that returned
        prober.join(stall_s + 10)
        assert first_503, "/healthz never failed"
        took = first_503[0] - (hung_at - time.time() + time.monotonic())
        assert took <= stall_s + 1.0, f"/healthz 503 after {took:.1f} s"
        status, body = health(port)
        assert status == 503 and "stalled: " in body and "infer" in body
        beat = next_heartbeat(d.subscriber, 5, lambda b: "infer" in b["stalled"])
        assert beat["counters"]["deadline_missed"] == len(failsafe)
        assert collect(d.subscriber, 1, timeout_s=1.5).accounted == 0  # nothing twice
        # A supervisor's stop: the stuck call is not waited for, the exit says it was stuck.
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=15) == EXIT_STALLED
        assert "stuck stages" in d.proc.stderr.read()


def test_a_stop_with_frames_behind_a_hung_call_gives_them_the_failsafe_verdict(
        trained_bundle):
    # No deadline: only the stop can settle the frames behind the hung call.
    with serve(trained_bundle, "--inject-faults", "hang-after=1", "--stall-s", "0.5",
               "--stall-exit-s", "0", "--heartbeat-s", "0.25") as d:
        sent = send_frames(d, "cam0", 4, SHAPE)
        next_heartbeat(d.subscriber, 10, lambda b: "infer" in b["stalled"])
        assert collect(d.subscriber, 1, timeout_s=0.5).accounted == 0  # nothing decided
        d.proc.send_signal(signal.SIGTERM)
        book = collect(d.subscriber, len(sent), timeout_s=15)
        assert_every_frame_once(book, sent)
        assert all(r["verdict"] == "ERROR" and "stalled stages" in r["reasons"][0]
                   for r in book.results)
        assert d.proc.wait(timeout=15) == EXIT_STALLED


def test_results_that_come_after_the_deadline_are_counted_and_never_published(
        trained_bundle):
    with serve(trained_bundle, "--inject-faults", "delay-ms=700", "--deadline-ms", "300",
               "--heartbeat-s", "0.25", "--max-batch", "4") as d:
        sent = send_frames(d, "cam0", 6, SHAPE)
        book = collect(d.subscriber, len(sent), timeout_s=30)
        assert_every_frame_once(book, sent)
        assert all(r["verdict"] == "ERROR" for r in book.results)
        time.sleep(3.0)  # every delayed inference call has returned by now
        assert collect(d.subscriber, 1, timeout_s=0.5).accounted == 0  # never twice
        beat = next_heartbeat(d.subscriber, 5)
        assert beat["counters"]["late_results"] == len(sent)
        assert beat["counters"]["results"] == len(sent) and beat["in_flight"] == 0


def test_slow_post_processing_still_gives_the_failsafe_verdict_by_the_deadline(
        trained_bundle):
    # A frame is settled when its verdict is ready, not when post-processing starts: a
    # decide stage that falls behind leaves its frames to the watchdog's deadline.
    with serve(trained_bundle, "--inject-faults", "decide-delay-ms=900", "--deadline-ms",
               "300", "--decide-workers", "2", "--heartbeat-s", "0.25") as d:
        sent = send_frames(d, "cam0", 6, SHAPE)
        book = collect(d.subscriber, len(sent), timeout_s=30)
        assert_every_frame_once(book, sent)
        for result in book.results:
            took_ms = (result["published_ns"] - result["received_ns"]) / 1e6
            assert result["verdict"] == "ERROR" and 300 <= took_ms <= 450, took_ms
            assert result["reasons"][0].startswith("deadline missed: no verdict")
        time.sleep(4.0)  # every delayed post-processing has finished by now
        assert collect(d.subscriber, 1, timeout_s=0.5).accounted == 0  # never twice
        beat = next_heartbeat(d.subscriber, 5)
        assert beat["counters"]["late_results"] == len(sent)
        assert beat["counters"]["deadline_missed"] == len(sent) and beat["in_flight"] == 0


def test_the_stall_policy_exits_for_the_supervisor_and_the_line_serves_again(
        trained_bundle):
    frames_in, results_out = free_endpoint(), free_endpoint()
    command = serve_command(str(trained_bundle), {
        "backend": "ort-cpu", "input": [frames_in], "output": results_out,
        "inject_faults": "hang-after=2", "stall_s": 1.0, "stall_exit_s": 1.5,
        "deadline_ms": DEADLINE_MS, "heartbeat_s": 0.25, "max_batch": 2})  # a call a frame
    subscriber = ResultSubscriber(results_out)
    sender = FrameSender(frames_in)
    try:
        with Supervisor(command) as supervisor:
            subscriber.wait_ready(90)
            for i in range(3):  # frame 0 is served, frame 1 hangs the model, 2 waits
                sender.send(header("cam0", i, SHAPE), strip(i, SHAPE))
            book = collect(subscriber, 3, timeout_s=30)
            assert [r["verdict"] for r in book.results][1:] == ["ERROR", "ERROR"]
            hung_at = time.monotonic()
            next_heartbeat(subscriber, 60, lambda b: b["counters"]["received"] == 0)
            restarted = time.monotonic() - hung_at
            assert supervisor.exits[:1] == [3], supervisor.exits  # EXIT_STALLED
            sender.send(header("cam0", 100, SHAPE), strip(100, SHAPE))
            again = collect(subscriber, 1, timeout_s=30)
            assert again.ids("results") == [100]
            assert again.results[0]["verdict"] in ("OK", "REJECT")
        assert restarted < 30
    finally:
        sender.close()
        subscriber.close()

"""edge-serve: run the inference daemon on a model bundle."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from lineside.edge.backends import BackendUnavailable
from lineside.edge.bundle import BundleError
from lineside.edge.cli.args import SchemaArgs, model_args, serve_args
from lineside.edge.cli.common import parser, setup_logging

if TYPE_CHECKING:
    from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.config import ConfigError, ServeConfig, load_config

EXAMPLES = """\
  edge-serve bundle/                          # ONNX Runtime, best backend available
  edge-serve bundle/ --backend ort-cpu --input tcp://127.0.0.1:5555 --masks
  edge-serve --config configs/serve.toml      # settings from a file, flags override
  edge-serve bundle/ --input-mode sub --input tcp://10.0.0.5:6000   # camera broadcasts
  edge-serve bundle/ --metrics 127.0.0.1:9100 --control tcp://127.0.0.1:5557
  edge-serve bundle/ --http 127.0.0.1:8080     # operator view in a browser
  edge-serve bundle/ --precision int8 --screen screen-bundle/   # segment flagged tiles only
  kill -HUP $(pidof edge-serve)               # reload the bundle in place (hot swap)
"""

log = logging.getLogger("lineside.edge.serve")


def build_parser() -> tuple[argparse.ArgumentParser, SchemaArgs, SchemaArgs]:
    ap = parser("edge-serve", "Pull camera frames over ZeroMQ, infer, publish verdicts, masks "
                "and events (docs/protocol.md).", EXAMPLES)
    ap.add_argument("bundle", nargs="?", help="model bundle directory (from edge-export)")
    ap.add_argument("--config", help="TOML file with a [serve] table; flags override it")
    model, daemon = model_args(), serve_args()
    model.add_to(ap)
    daemon.add_to(ap)
    ap.add_argument("--validate-config", action="store_true",
                    help="check the configuration and bundle, print them, and exit")
    ap.add_argument("--log-json", action="store_true", help="structured (JSON lines) logs")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap, model, daemon


def main(argv: list[str] | None = None) -> int:
    ap, model, daemon_args = build_parser()
    args = ap.parse_args(argv)
    setup_logging(args.verbose, json_lines=args.log_json)
    try:
        config = load_config(args.config, {"bundle": args.bundle, **model.values(args),
                                           **daemon_args.values(args)})
        from lineside.edge.pipeline.model import load_candidate, load_model

        loaded = load_model(config.bundle, config)
        shadow = load_candidate(config.shadow, config, loaded) if config.shadow else None
    except (ConfigError, BundleError, BackendUnavailable) as exc:
        print(f"edge-serve: {exc}", file=sys.stderr)
        return 2
    if args.validate_config:
        print(config)
        return 0
    return run_daemon(config, loaded, args, shadow)


def run_daemon(config: ServeConfig, model: LoadedModel, args: argparse.Namespace,
               shadow: LoadedModel | None = None) -> int:
    """Serve `model` until SIGTERM/SIGINT (drain, exit 0) or the stall policy gives up
    (exit 3); SIGHUP reloads the bundle."""
    from lineside.edge.daemon import EXIT_STALLED, Daemon
    from lineside.edge.pipeline.publish import END

    # The inference thread needs the GIL for a moment between ONNX Runtime calls; with
    # Python's default 5 ms switch interval it waited up to that long behind the other
    # stages each time (py-spy: the inference thread idle 19% of a saturated run).
    sys.setswitchinterval(0.0005)
    daemon = Daemon(config, model, shadow=shadow)
    # Everything loaded so far (model, sessions, config) lives until exit: move it out of
    # the collector's sight, so that a full collection on the line walks only the
    # per-frame objects, not the whole process (it showed as latency spikes).
    gc.collect()
    gc.freeze()

    def request_stop(signum, _frame) -> None:
        log.info("signal %s: draining in-flight frames, then exiting", signum)
        daemon.stop()

    def request_reload(_signum, _frame) -> None:
        # Never load a model inside a signal handler: hand it to a thread.
        threading.Thread(target=daemon.swap_model, name="edge-reload", daemon=True).start()

    handlers = {signal.SIGINT: request_stop, signal.SIGTERM: request_stop,
                signal.SIGHUP: request_reload}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        daemon.start()
        if daemon.metrics_port:
            log.info("metrics on http://%s/metrics", config.metrics)
        frozen_after_first = False
        while not daemon.stop_event.wait(0.5):
            if not frozen_after_first and daemon.counters.snapshot()["results"]:
                # The first frames import and build what the hot path needs lazily
                # (codecs, encoders): out of the collector's sight with the rest.
                gc.freeze()
                frozen_after_first = True
        stuck = [] if daemon.fatal else daemon.drain(timeout_s=120)
        if daemon.fatal or stuck:
            # A stage is stuck (a hung GPU call cannot be interrupted): do not wait for
            # it. The last heartbeat says final; the gateway sees the heartbeats stop and
            # the supervisor restarts us.
            daemon.outbox.offer(END)
            daemon.publisher.finished.wait(1.0)
            log.critical("exiting with status %d: %s", EXIT_STALLED,
                         daemon.fatal or f"stuck stages {', '.join(stuck)}")
            logging.shutdown()
            os._exit(EXIT_STALLED)
        daemon.join(timeout=120)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped; counters %s", daemon.counters.snapshot())
    return 0


if __name__ == "__main__":
    sys.exit(main())

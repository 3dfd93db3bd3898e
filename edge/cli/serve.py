"""edge-serve: run the inference daemon on a model bundle."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from lineside.edge.backends import BackendUnavailable
from lineside.edge.bundle import BundleError
from lineside.edge.cli.common import class_values, parser, setup_logging
from lineside.edge.config import ConfigError, load_config

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


def build_parser():
    ap = parser("edge-serve", "Pull camera frames over ZeroMQ, infer, publish verdicts, masks "
                "and events (docs/protocol.md).", EXAMPLES)
    ap.add_argument("bundle", nargs="?", help="model bundle directory (from edge-export)")
    ap.add_argument("--config", help="TOML file with a [serve] table; flags override it")
    ap.add_argument("--input", action="append",
                    help="frames endpoint (repeatable): bound for PULL, connected for SUB; "
                    "default tcp://127.0.0.1:5555")
    ap.add_argument("--input-mode", choices=["pull", "sub"],
                    help="pull (default, backpressure) or sub (camera broadcasts)")
    ap.add_argument("--output", help="endpoint to bind for results (PUB), default "
                    "tcp://127.0.0.1:5556")
    ap.add_argument("--backend", help="auto | ort-cpu | ort-cuda | ort-trt | tensorrt")
    ap.add_argument("--precision", help="fp32 | fp16 | int8 model from the bundle")
    ap.add_argument("--threads", type=int, help="inference threads (0: backend default)")
    ap.add_argument("--screen", metavar="BUNDLE",
                    help="screening classifier bundle: segment only the tiles it flags")
    ap.add_argument("--screen-precision", help="the classifier's precision (default: "
                    "--precision)")
    ap.add_argument("--screen-threshold", action="append", metavar="CLASS=P",
                    help="override a class's screening threshold")
    ap.add_argument("--max-batch", type=int, help="tiles per inference call")
    ap.add_argument("--max-wait-ms", type=float, help="how long a partial batch waits")
    ap.add_argument("--queue-size", type=int, help="frames waiting per camera")
    ap.add_argument("--overload", choices=["block", "drop-oldest", "drop-newest"],
                    help="what a full camera queue does (default block)")
    ap.add_argument("--deadline-ms", type=float,
                    help="results later than this get the fail-safe verdict")
    ap.add_argument("--failsafe-verdict", choices=["ERROR", "REJECT"])
    ap.add_argument("--masks", action="store_const", const=True, dest="publish_masks",
                    help="also publish masks on the `mask` topic")
    ap.add_argument("--mask-format", choices=["rle", "png"])
    ap.add_argument("--threshold", action="append", metavar="CLASS=P",
                    help="override a class's probability threshold")
    ap.add_argument("--metrics", metavar="HOST:PORT",
                    help="serve /metrics, /healthz, /readyz (e.g. 127.0.0.1:9100)")
    ap.add_argument("--control", metavar="ENDPOINT",
                    help="REP socket for hot swap and status (e.g. tcp://127.0.0.1:5557)")
    ap.add_argument("--http", metavar="HOST:PORT",
                    help="read-only operator web view (e.g. 127.0.0.1:8080); off by default")
    ap.add_argument("--curve-secret", help="daemon secret key file: CURVE on the results "
                    "socket (for gateways on other hosts)")
    ap.add_argument("--curve-clients", help="directory of allowed gateways' public key files")
    ap.add_argument("--inject-faults", metavar="infer-every=N",
                    help="TESTING ONLY: make every N-th inference call fail, to check that "
                    "frames get ERROR verdicts and the daemon recovers")
    ap.add_argument("--validate-config", action="store_true",
                    help="check the configuration and bundle, print them, and exit")
    ap.add_argument("--log-json", action="store_true", help="structured (JSON lines) logs")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The inference thread needs the GIL for a moment between ONNX Runtime calls; with
    # Python's default 5 ms switch interval it waited up to that long behind the other
    # stages each time (py-spy: the inference thread idle 19% of a saturated run).
    sys.setswitchinterval(0.0005)
    setup_logging(args.verbose, json_lines=args.log_json)
    try:
        config = load_config(args.config, {
            "bundle": args.bundle, "input": args.input, "input_mode": args.input_mode,
            "output": args.output, "backend": args.backend, "precision": args.precision,
            "threads": args.threads, "max_batch": args.max_batch, "screen": args.screen,
            "screen_precision": args.screen_precision,
            "screen_thresholds": class_values(args.screen_threshold, float,
                                              "--screen-threshold") or None,
            "max_wait_ms": args.max_wait_ms, "queue_size": args.queue_size,
            "overload": args.overload, "deadline_ms": args.deadline_ms,
            "failsafe_verdict": args.failsafe_verdict, "publish_masks": args.publish_masks,
            "mask_format": args.mask_format,
            "thresholds": class_values(args.threshold, float, "--threshold") or None,
            "metrics": args.metrics, "control": args.control, "http": args.http,
            "curve_secret": args.curve_secret, "curve_clients": args.curve_clients,
            "inject_faults": args.inject_faults,
        })
        from lineside.edge.daemon import Daemon

        daemon = Daemon(config)
    except (ConfigError, BundleError, BackendUnavailable) as exc:
        print(f"edge-serve: {exc}", file=sys.stderr)
        return 2
    if args.validate_config:
        print(config)
        return 0

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
        while not daemon.stop_event.wait(0.5):
            pass
        daemon.join(timeout=120)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped; counters %s", daemon.counters.snapshot())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edge-serve: run the inference daemon on a model bundle."""

from __future__ import annotations

import logging
import signal
import sys

from lineside.edge.backends import BackendUnavailable
from lineside.edge.bundle import BundleError
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import ConfigError, load_config

EXAMPLES = """\
  edge-serve bundle/                          # ONNX Runtime, best backend available
  edge-serve bundle/ --backend ort-cpu --input tcp://127.0.0.1:5555 --masks
  edge-serve --config configs/serve.toml      # settings from a file, flags override
"""

log = logging.getLogger("lineside.edge.serve")


def _class_table(pairs: list[str] | None, cast) -> dict[int, float] | None:
    if not pairs:
        return None
    table = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            table[int(key)] = cast(value)
        except ValueError:
            raise ConfigError(f"expected CLASS=VALUE, got {pair!r}") from None
    return table


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-serve", "Pull camera frames over ZeroMQ, infer, publish verdicts and masks.",
                EXAMPLES)
    ap.add_argument("bundle", nargs="?", help="model bundle directory (from edge-export)")
    ap.add_argument("--config", help="TOML file with a [serve] table; flags override it")
    ap.add_argument("--input", help="endpoint to bind for frames (PULL), default "
                    "tcp://127.0.0.1:5555")
    ap.add_argument("--output", help="endpoint to bind for results (PUB), default "
                    "tcp://127.0.0.1:5556")
    ap.add_argument("--backend", help="auto | ort-cpu | ort-cuda | ort-trt (default auto)")
    ap.add_argument("--precision", help="fp32 | fp16 | int8 model from the bundle")
    ap.add_argument("--threads", type=int, help="inference threads (0: backend default)")
    ap.add_argument("--max-batch", type=int, dest="max_batch", help="tiles per inference call")
    ap.add_argument("--max-wait-ms", type=float, dest="max_wait_ms",
                    help="how long a partial batch waits for more frames")
    ap.add_argument("--queue-size", type=int, dest="queue_size", help="frames between stages")
    ap.add_argument("--masks", action="store_const", const=True, dest="publish_masks",
                    help="also publish per-class RLE masks on the `mask` topic")
    ap.add_argument("--threshold", action="append", metavar="CLASS=P",
                    help="override a class's probability threshold")
    ap.add_argument("--max-area", action="append", metavar="CLASS=PX",
                    help="reject only when a class's area exceeds PX pixels")
    ap.add_argument("--validate-config", action="store_true",
                    help="check the configuration and bundle, print them, and exit")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)

    try:
        config = load_config(args.config, {
            "bundle": args.bundle, "input": args.input, "output": args.output,
            "backend": args.backend, "precision": args.precision, "threads": args.threads,
            "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
            "queue_size": args.queue_size, "publish_masks": args.publish_masks,
            "thresholds": _class_table(args.threshold, float),
            "max_area": _class_table(args.max_area, int),
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

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        daemon.start()
        while not daemon.stop_event.wait(0.5):
            pass
        daemon.join(timeout=60)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped; counters %s", daemon.counters.snapshot())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edge-plc: subscribe to edge-serve and drive a PLC over Modbus TCP or OPC UA."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import ConfigError
from lineside.edge.plc.config import load_plc_config

EXAMPLES = """\
  edge-plc --config configs/plc-modbus.toml
  edge-plc --config configs/plc-opcua.toml --daemon tcp://10.0.0.7:5556
"""

log = logging.getLogger("lineside.edge.plc")


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-plc", "PLC gateway: reject signals, counts, areas, heartbeat and a "
                "fail-safe fault bit into a PLC (docs/plc.md).", EXAMPLES)
    ap.add_argument("--config", required=True, help="TOML file with a [plc] table")
    ap.add_argument("--daemon", help="the daemon's results endpoint (overrides the config)")
    ap.add_argument("--log-json", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose, json_lines=args.log_json)
    try:
        config = load_plc_config(args.config, {"daemon": args.daemon})
    except ConfigError as exc:
        print(f"edge-plc: {exc}", file=sys.stderr)
        return 2
    from lineside.edge.plc.gateway import Gateway

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await Gateway(config).run(stop)
        log.info("stopped: %s", stats)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""edge-listen: subscribe to edge-serve and print verdicts as a PLC gateway sees them."""

from __future__ import annotations

import json
import sys
import time

from lineside.edge.accounting import DROP, ERROR, RESULT, Ledger
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.client import ResultSubscriber

EXAMPLES = """\
  edge-listen                                   # print every verdict until Ctrl-C
  edge-listen --expect 100 --record out.jsonl   # stop after 100 frames are accounted for
"""


def format_reject(body: dict) -> str:
    areas = " ".join(f"c{k}={v['area']}" for k, v in body.get("classes", {}).items()
                     if v.get("area"))
    return (f"{body['camera_id']} frame {body['frame_id']:>6} {body['verdict']:<6} "
            f"{body.get('latency_ms', 0):7.1f} ms  {areas}")


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-listen", "Print reject signals and events from edge-serve.", EXAMPLES)
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="daemon output endpoint")
    ap.add_argument("--expect", type=int, default=0,
                    help="exit once this many frames got a result, error or drop event")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="exit when nothing arrives for this many seconds (0: never)")
    ap.add_argument("--record", help="append every message as a JSON line to this file")
    ap.add_argument("--quiet", action="store_true", help="print only the final count")
    ap.add_argument("--ready-file", help="touch this file once the subscription is live")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)

    subscriber = ResultSubscriber(args.endpoint)
    subscriber.wait_ready(timeout_s=args.timeout or 3600)
    if args.ready_file:
        open(args.ready_file, "w").close()
    record = open(args.record, "a") if args.record else None  # noqa: SIM115 - closed below
    book = Ledger(keep=False)
    idle = args.timeout or 3600.0
    last = time.monotonic()
    try:
        while not args.expect or book.accounted < args.expect:
            message = subscriber.receive(0.5)
            if message is None:
                if time.monotonic() - last > idle:
                    break
                continue
            last = time.monotonic()
            topic, body = message
            if record:
                attachment = body.pop("attachment", None)
                if attachment is not None:
                    body["attachment_bytes"] = len(attachment)
                record.write(json.dumps({"topic": topic, **body}) + "\n")
            seen = book.add(topic, body)
            if seen is None or args.quiet:
                continue
            if seen.kind == RESULT:
                print(format_reject(body), flush=True)
            else:
                frames = body.get("frame_id") if seen.count == 1 else \
                    f"{seen.first}..{seen.last} ({seen.count} frames)"
                print(f"{body.get('camera_id')} frame {frames} {seen.kind.upper()} "
                      f"{body.get('reason')}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if record:
            record.close()
        subscriber.close()
    counts = book.counts
    print(f"results {counts[RESULT]} errors {counts[ERROR]} drops {counts[DROP]}", flush=True)
    return 0 if not args.expect or book.accounted >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())

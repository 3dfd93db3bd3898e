"""edge-bench: how fast a bundle runs on this machine, precisions side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lineside.edge.bench import as_rows, bench_bare
from lineside.edge.bundle import load_bundle
from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-bench bundles/r18 --precision fp32 int8            # bare backend, side by side
  edge-bench bundles/r18 --precision fp32 int8 --batch 14 --frames 16 -o reports/r18
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-bench", "Benchmark a bundle's models side by side in one run.", EXAMPLES)
    ap.add_argument("bundle")
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--batch", type=int, default=7, help="tiles per inference call")
    ap.add_argument("--frames", type=int, default=8, help="frames per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-o", "--out", help="report directory (JSON + Markdown)")
    args = ap.parse_args(argv)
    setup_logging()
    bundle = load_bundle(args.bundle)
    results = bench_bare(bundle, args.precision, args.batch, args.frames, args.rounds,
                         args.backend, args.threads)
    lines = ["| precision | batch (tiles) | tiles/s | frames/s | batch latency ms |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.precision} | {r.batch_tiles} | {r.tiles_per_s:.1f} | "
              f"{r.frames_per_s:.2f} | {r.batch_latency_ms:.1f} |" for r in results]
    base = results[0]
    ratios = [f"{r.precision}/{base.precision} frames/s: {r.frames_per_s / base.frames_per_s:.2f}x"
              for r in results[1:]]
    print("\n".join(lines))
    for line in ratios:
        print(line)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(
            {"bundle": str(bundle.root), "model": bundle.manifest.name,
             "backend": args.backend, "bare": as_rows(results), "ratios": ratios}, indent=2))
        (out / "bench.md").write_text("\n".join([*lines, "", *ratios]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

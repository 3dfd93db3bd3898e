"""edge-bench: how fast a bundle runs on this machine, measured side by side in one run.

Stages: (1) bare backend on pre-tiled batches, (2) the whole daemon over ZeroMQ at
saturation and at fractions of it, (3) the notebooks' baseline (torch eager FP32, one
frame at a time), given its checkpoint. Ratios are printed last.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from lineside.edge.bench import as_rows, bench_bare
from lineside.edge.bundle import load_bundle
from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-bench bundles/r18 --precision fp32 int8                 # bare backend only
  edge-bench bundles/r18 --precision fp32 int8 --stages bare daemon baseline \\
      --baseline runs/r18.pt -o reports/r18                     # everything, with a plot
"""


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for precision, daemon in report.get("daemon", {}).items():
        loads = daemon["loads"]
        offered = [x["offered_fps"] for x in loads]
        left.plot(offered, [x["achieved_fps"] for x in loads], "o-", label=precision)
        right.plot(offered, [x["latency_p50_ms"] for x in loads], "o-",
                   label=f"{precision} p50")
        right.plot(offered, [x["latency_p99_ms"] for x in loads], "s--",
                   label=f"{precision} p99")
    left.set_xlabel("offered frames/s")
    left.set_ylabel("achieved frames/s")
    left.legend()
    right.set_xlabel("offered frames/s")
    right.set_ylabel("latency ms (camera to reject)")
    right.legend(fontsize=8)
    fig.suptitle(f"edge-bench {report['model']} ({report['backend']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-bench", "Benchmark a bundle side by side in one run.", EXAMPLES)
    ap.add_argument("bundle")
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--stages", nargs="+", default=["bare"],
                    choices=["bare", "daemon", "baseline"])
    ap.add_argument("--batch", type=int, default=7, help="tiles per inference call")
    ap.add_argument("--frames", type=int, default=8, help="frames per bare round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--daemon-frames", type=int, default=40, help="frames per load level")
    ap.add_argument("--loads", default="25,50,90", help="offered loads, %% of saturation")
    ap.add_argument("--baseline", help="checkpoint for the torch-eager baseline stage")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-o", "--out", help="report directory (JSON, Markdown, PNG)")
    args = ap.parse_args(argv)
    setup_logging()
    bundle = load_bundle(args.bundle)
    report: dict = {"bundle": str(bundle.root), "model": bundle.manifest.name,
                    "backend": args.backend, "batch_tiles": args.batch}
    lines: list[str] = []
    ratios: list[str] = []
    bare = {}
    if "bare" in args.stages:
        results = bench_bare(bundle, args.precision, args.batch, args.frames, args.rounds,
                             args.backend, args.threads)
        bare = {r.precision: r for r in results}
        report["bare"] = as_rows(results)
        lines += ["## Bare backend", "", "| precision | tiles/s | frames/s | batch latency ms |",
                  "|---|---|---|---|"]
        lines += [f"| {r.precision} | {r.tiles_per_s:.1f} | {r.frames_per_s:.2f} | "
                  f"{r.batch_latency_ms:.1f} |" for r in results]
        base = results[0]
        ratios += [f"bare {r.precision}/{base.precision} frames/s: "
                   f"{r.frames_per_s / base.frames_per_s:.2f}x" for r in results[1:]]
    baseline = None
    if "baseline" in args.stages:
        if not args.baseline:
            ap.error("the baseline stage needs --baseline CHECKPOINT")
        from lineside.train.baseline import torch_baseline

        baseline = torch_baseline(Path(args.baseline), bundle, max(4, args.frames))
        report["baseline"] = baseline
        lines += ["", "## Baseline: torch eager FP32, one frame at a time", "",
                  f"{baseline['frames_per_s']:.2f} frames/s, "
                  f"{baseline['gflop_per_frame']:.1f} GFLOP/frame"]
    if "daemon" in args.stages:
        from lineside.edge.bench_line import DaemonUnderTest

        report["daemon"] = {}
        lines += ["", "## Daemon over ZeroMQ (camera timestamp to reject message)", "",
                  "| precision | offered fps | achieved fps | p50 ms | p99 ms | max ms |",
                  "|---|---|---|---|---|---|"]
        for precision in args.precision:
            daemon = DaemonUnderTest(bundle, precision, args.backend, args.batch,
                                     args.threads)
            try:
                saturation = daemon.saturation(args.daemon_frames)
                loads = [daemon.at_rate(saturation * int(p) / 100, args.daemon_frames)
                         for p in args.loads.split(",")]
            finally:
                daemon.close()
            report["daemon"][precision] = {"saturation_fps": saturation,
                                           "loads": [asdict(x) for x in loads]}
            lines.append(f"| {precision} | saturation | {saturation:.2f} | | | |")
            lines += [f"| {precision} | {x.offered_fps:.2f} | {x.achieved_fps:.2f} | "
                      f"{x.latency_p50_ms:.0f} | {x.latency_p99_ms:.0f} | "
                      f"{x.latency_max_ms:.0f} |" for x in loads]
            if precision in bare:
                ratios.append(f"daemon/bare {precision} frames/s: "
                              f"{saturation / bare[precision].frames_per_s:.2f}x")
                half = loads[min(1, len(loads) - 1)]
                ratios.append(f"p99 at {args.loads.split(',')[min(1, len(loads) - 1)]}% load / "
                              f"bare batch latency {precision}: "
                              f"{half.latency_p99_ms / bare[precision].batch_latency_ms:.2f}x")
            if baseline:
                ratios.append(f"daemon {precision}/baseline frames/s: "
                              f"{saturation / baseline['frames_per_s']:.2f}x")
                report["daemon"][precision]["gflop_per_s"] = \
                    saturation * baseline["gflop_per_frame"]
    report["ratios"] = ratios
    print("\n".join(lines))
    print()
    for line in ratios:
        print(line)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "bench.md").write_text("\n".join([*lines, "", *ratios]) + "\n")
        if "daemon" in report and plot(report, out / "bench.png"):
            print(f"plot: {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

from lineside.edge.bench import (
    Variant,
    as_rows,
    bench_bare,
    frame_tiles,
    load_strips,
    ort_op_profile,
)
from lineside.edge.bundle import load_bundle
from lineside.edge.cli.common import class_values, parser, setup_logging
from lineside.edge.config import ConfigError

EXAMPLES = """\
  edge-bench bundles/r18 --precision fp32 int8                 # bare backend only
  edge-bench bundles/r18 --precision fp32 int8 --stages bare daemon baseline \\
      --baseline runs/r18.pt -o reports/r18                     # everything, with a plot
  edge-bench bundles/r18 --precision int8 --screen bundles/screen --images data/heldout \\
      --stages bare daemon baseline --baseline runs/r18.pt      # with a screening classifier
"""


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for index, (label, daemon) in enumerate(report.get("daemon", {}).items()):
        loads = daemon["loads"]
        offered = [x["offered_fps"] for x in loads]
        colour = f"C{index}"  # one colour per variant in both panels
        left.plot(offered, [x["achieved_fps"] for x in loads], "o-", color=colour, label=label)
        right.plot(offered, [x["latency_p50_ms"] for x in loads], "o-", color=colour,
                   label=f"{label} p50")
        right.plot(offered, [x["latency_p99_ms"] for x in loads], "s--", color=colour,
                   label=f"{label} p99")
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
    ap.add_argument("--screen", metavar="BUNDLE", help="screening classifier bundle: each "
                    "precision is also measured behind it (rows PRECISION+screen)")
    ap.add_argument("--screen-threshold", action="append", default=[], metavar="CLASS=P",
                    help="override a class's screening threshold")
    ap.add_argument("--images", metavar="DIR", help="frames to send: a folder of strips "
                    "(e.g. edge-synth output); default uniform noise")
    ap.add_argument("--batch", type=int, default=7, help="tiles per inference call")
    ap.add_argument("--frames", type=int, default=8, help="frames per bare round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--daemon-frames", type=int, default=40, help="frames per load level")
    ap.add_argument("--loads", default="25,50,90", help="offered loads, %% of saturation")
    ap.add_argument("--baseline", help="checkpoint for the torch-eager baseline stage")
    ap.add_argument("--baseline-device", default="cpu", help="cpu | cuda: where the "
                    "baseline runs (compare like with like: cuda for GPU backends)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ort-profile", action="store_true", help="add ONNX Runtime's own "
                    "per-operator time shares (CPU) for each precision to the report")
    ap.add_argument("-o", "--out", help="report directory (JSON, Markdown, PNG)")
    args = ap.parse_args(argv)
    setup_logging()
    bundle = load_bundle(args.bundle)
    try:
        screen_thresholds = class_values(args.screen_threshold, float, "--screen-threshold")
    except ConfigError as exc:
        ap.error(str(exc))
    variants = [Variant(p) for p in args.precision]
    if args.screen:
        variants += [Variant(p, args.screen) for p in args.precision]
    strips = load_strips(bundle, args.images,
                         max(args.frames, args.daemon_frames if "daemon" in args.stages else 0))
    report: dict = {"bundle": str(bundle.root), "model": bundle.manifest.name,
                    "backend": args.backend, "batch_tiles": args.batch,
                    "frames": args.images or "uniform noise", "screen": args.screen or None}
    lines: list[str] = [f"Frames: {report['frames']} ({len(strips)} distinct)", ""]
    ratios: list[str] = []
    bare = {}
    if "bare" in args.stages:
        results = bench_bare(bundle, variants, args.batch, strips[:args.frames], args.rounds,
                             args.backend, args.threads, screen_thresholds)
        bare = {r.precision: r for r in results}
        report["bare"] = as_rows(results)
        lines += ["## Bare backend", "",
                  "| variant | tiles/s | frames/s | batch latency ms p50 | p99 | "
                  "tiles segmented |", "|---|---|---|---|---|---|"]
        lines += [f"| {r.precision} | {r.tiles_per_s:.1f} | {r.frames_per_s:.2f} | "
                  f"{r.batch_latency_ms:.1f} | {r.batch_latency_p99_ms:.1f} | "
                  f"{100 * r.segmented_share:.0f}% |" for r in results]
        base = results[0]
        ratios += [f"bare {r.precision}/{base.precision} frames/s: "
                   f"{r.frames_per_s / base.frames_per_s:.2f}x" for r in results[1:]]
    if args.ort_profile:
        tiles, _ = frame_tiles(bundle, strips[:1])
        report["ort_profile"] = {p: ort_op_profile(bundle, p, tiles, threads=args.threads)
                                 for p in args.precision}
        lines += ["", "## ONNX Runtime kernel time by operator (one frame's tiles)", "",
                  "| precision | top operators (share of kernel time) |", "|---|---|"]
        lines += [f"| {p} | " + ", ".join(f"{op} {100 * share:.0f}%" for op, share in
                                          list(shares.items())[:5]) + " |"
                  for p, shares in report["ort_profile"].items()]
    baseline = None
    if "baseline" in args.stages:
        if not args.baseline:
            ap.error("the baseline stage needs --baseline CHECKPOINT")
        from lineside.train.baseline import torch_baseline

        baseline = torch_baseline(Path(args.baseline), bundle, strips, max(4, args.frames),
                                  args.baseline_device)
        report["baseline"] = baseline
        lines += ["", f"## Baseline: torch eager FP32 on {args.baseline_device}, one frame "
                  "at a time", "",
                  f"{baseline['frames_per_s']:.2f} frames/s, "
                  f"{baseline['gflop_per_frame']:.1f} GFLOP/frame"]
    if "daemon" in args.stages:
        from lineside.edge.bench_line import DaemonUnderTest

        report["daemon"] = {}
        lines += ["", "## Daemon over ZeroMQ (camera timestamp to reject message)", "",
                  "| variant | offered fps | achieved fps | p50 ms | p99 ms | max ms |",
                  "|---|---|---|---|---|---|"]
        loads_pct = args.loads.split(",")
        stages: list[tuple[str, dict[str, float]]] = []
        for variant in variants:
            label = variant.label
            daemon = DaemonUnderTest(bundle, variant, args.backend, args.batch,
                                     strips[:args.daemon_frames], args.threads,
                                     screen_thresholds)
            try:
                saturation = daemon.saturation(args.daemon_frames)
                loads = [daemon.at_rate(saturation * int(p) / 100, args.daemon_frames)
                         for p in loads_pct]
            finally:
                daemon.close()
            report["daemon"][label] = {"saturation_fps": saturation,
                                       "saturation_stages_ms": daemon.saturation_stages_ms,
                                       "loads": [asdict(x) for x in loads]}
            stages.append((label, daemon.saturation_stages_ms))
            lines.append(f"| {label} | saturation | {saturation:.2f} | | | |")
            lines += [f"| {label} | {x.offered_fps:.2f} | {x.achieved_fps:.2f} | "
                      f"{x.latency_p50_ms:.0f} | {x.latency_p99_ms:.0f} | "
                      f"{x.latency_max_ms:.0f} |" for x in loads]
            if label in bare:
                ratios.append(f"daemon/bare {label} frames/s: "
                              f"{saturation / bare[label].frames_per_s:.2f}x")
                half = min(1, len(loads) - 1)
                p99 = loads[half].latency_p99_ms
                ratios.append(f"p99 at {loads_pct[half]}% load / bare batch latency {label}: "
                              f"{p99 / bare[label].batch_latency_ms:.2f}x (median batch), "
                              f"{p99 / bare[label].batch_latency_p99_ms:.2f}x (p99 batch)")
            if baseline:
                ratios.append(f"daemon {label}/baseline frames/s: "
                              f"{saturation / baseline['frames_per_s']:.2f}x")
                # Work the model would do on every tile, per second of wall time: with a
                # screen, "equivalent" GFLOP/s (the skipped tiles count as done).
                report["daemon"][label]["gflop_per_s"] = \
                    saturation * baseline["gflop_per_frame"]
    if "daemon" in args.stages:
        names = ["decode", "tile", "infer", "postprocess", "end_to_end"]
        lines += ["", "## Where the time goes at saturation (mean ms: decode and postprocess "
                  "per frame, tile and infer per batch)", "",
                  "| variant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{means.get(n, float('nan')):.1f}"
                                              for n in names) + " |"
                  for label, means in stages]
    report["ratios"] = ratios
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "bench.md").write_text("\n".join([*lines, "", *ratios]) + "\n")
        print(f"\nreport: {out / 'bench.json'}, {out / 'bench.md'}")
        if "daemon" in report and plot(report, out / "bench.png"):
            print(f"plot: {out / 'bench.png'}")
    print()
    for line in ratios:  # last, where a reader's eye lands
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

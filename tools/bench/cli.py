"""edge-bench: how fast a bundle runs on this machine, measured side by side in one run.

Stages: (1) bare backend on pre-tiled batches, (2) the whole daemon over ZeroMQ at
saturation and at fractions of it, (3) the notebooks' baseline (torch eager FP32, one
frame at a time), given its checkpoint, (4) `pipeline`: the whole daemon with the model's
outputs replayed (a benchmark instrument, tools/bench/replay.py): the host side's ceiling.
Ratios are printed last.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from lineside.edge.bundle import load_bundle
from lineside.edge.cli.args import model_args, model_settings
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import ConfigError
from lineside.edge.variants import ONNX_KEYS, PRECISIONS
from lineside.tools.bench import report as tables
from lineside.tools.bench.bare import BenchVariant, as_rows, bench_bare, frame_tiles, ort_op_profile
from lineside.tools.bench.frames import load_strips

EXAMPLES = """\
  edge-bench bundles/r18 --precision fp32 int8                 # bare backend only
  edge-bench bundles/r18 --precision fp32 int8 --stages bare daemon baseline \\
      --baseline runs/r18.pt -o reports/r18                     # everything, with a plot
  edge-bench bundles/r18 --precision int8 --screen bundles/screen --images data/heldout \\
      --stages bare daemon baseline --baseline runs/r18.pt      # with a screening classifier
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-bench", "Benchmark a bundle side by side in one run.", EXAMPLES)
    ap.add_argument("bundle")
    # Each precision is one variant; with --screen, each is also measured behind it (rows
    # PRECISION+screen). A 256x1600 strip is 7 tiles: batches of one strip by default.
    model = model_args(defaults="schema", many=("precision",), overrides={"max_batch": 7},
                       exclude=("inject_faults",), aliases={"max_batch": ("--batch",)},
                       choices={"precision": (*PRECISIONS, *ONNX_KEYS)})
    model.add_to(ap)
    ap.add_argument("--stages", nargs="+", default=["bare"],
                    choices=["bare", "daemon", "baseline", "pipeline"])
    ap.add_argument("--images", metavar="DIR", help="frames to send: a folder of strips "
                    "(any layout edge-train reads); default uniform noise")
    ap.add_argument("--frames", type=int, default=8, help="frames per bare round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--daemon-frames", type=int, default=40, help="frames per load level")
    ap.add_argument("--pipeline-frames", type=int, default=400, help="frames per load level "
                    "of the pipeline stage (the distinct frames are --daemon-frames, cycled)")
    ap.add_argument("--decide-workers", type=int, nargs="+", default=[0], metavar="N",
                    help="edge-serve --decide-workers for the daemon stages (0: auto); "
                    "several: the pipeline stage runs once per count, side by side")
    ap.add_argument("--loads", default="25,50,90", help="offered loads, %% of saturation")
    ap.add_argument("--baseline", help="checkpoint for the torch-eager baseline stage")
    ap.add_argument("--shadow", metavar="BUNDLE", default="", help="daemon stage: run the "
                    "first variant again shadowing BUNDLE (edge-serve --shadow) and report "
                    "what shadowing costs serving")
    ap.add_argument("--baseline-device", default="cpu", help="cpu | cuda: where the "
                    "baseline runs (compare like with like: cuda for GPU backends)")
    ap.add_argument("--ort-profile", action="store_true", help="add ONNX Runtime's own "
                    "per-operator time shares (CPU) for each precision to the report")
    ap.add_argument("-o", "--out", help="report directory (JSON, Markdown, PNG)")
    args = ap.parse_args(argv)
    setup_logging()
    values = model.values(args)
    precisions = values.pop("precision")
    try:
        base = model_settings(values)  # each variant sets its precision and screen
    except ConfigError as exc:
        ap.error(str(exc))
    bundle = load_bundle(args.bundle)
    variants = [BenchVariant(p) for p in precisions]
    if values["screen"]:
        variants += [BenchVariant(p, values["screen"]) for p in precisions]
    count = max(args.frames, args.daemon_frames if {"daemon", "pipeline"} & set(args.stages)
                else 0)
    strips = load_strips(bundle.manifest, args.images, count)
    report: dict = {"bundle": str(bundle.root), "model": bundle.manifest.name,
                    "backend": base.backend, "batch_tiles": base.max_batch,
                    "frames": args.images or "uniform noise", "screen": values["screen"] or None}
    lines: list[str] = [f"Frames: {report['frames']} ({len(strips)} distinct)", ""]
    ratios: list[str] = []
    bare = {}
    if "bare" in args.stages:
        results = bench_bare(bundle, variants, base, strips[:args.frames], args.rounds)
        bare = {r.precision: r for r in results}
        report["bare"] = as_rows(results)
        lines += tables.bare_table(results)
        first = results[0]
        ratios += [f"bare {r.precision}/{first.precision} frames/s: "
                   f"{r.frames_per_s / first.frames_per_s:.2f}x" for r in results[1:]]
    if args.ort_profile:
        tiles, _ = frame_tiles(bundle, strips[:1])
        report["ort_profile"] = {p: ort_op_profile(bundle, p, tiles, threads=base.threads)
                                 for p in precisions}
        lines += tables.profile_table(report["ort_profile"])
    baseline = None
    if "baseline" in args.stages:
        if not args.baseline:
            ap.error("the baseline stage needs --baseline CHECKPOINT")
        from lineside.tools.bench.baseline import torch_baseline

        baseline = torch_baseline(Path(args.baseline), bundle, strips, max(4, args.frames),
                                  args.baseline_device)
        report["baseline"] = baseline
        lines += ["", f"## Baseline: torch eager FP32 on {args.baseline_device}, one frame "
                  "at a time", "",
                  f"{baseline['frames_per_s']:.2f} frames/s, "
                  f"{baseline['gflop_per_frame']:.1f} GFLOP/frame"]
    if "daemon" in args.stages:
        from lineside.tools.bench.daemon import DaemonUnderTest

        report["daemon"] = {}
        lines += tables.daemon_header()
        loads_pct = args.loads.split(",")
        stages: list[tuple[str, dict[str, float]]] = []
        runs = [(v, "") for v in variants] + ([(variants[0], args.shadow)] if args.shadow
                                              else [])
        plain_run: dict = {}
        for variant, shadow in runs:
            label = variant.label + ("+shadow" if shadow else "")
            daemon = DaemonUnderTest(bundle, variant, base, strips[:args.daemon_frames],
                                     shadow=shadow, decide_workers=args.decide_workers[0])
            try:
                saturation = daemon.saturation(args.daemon_frames)
                loads = [daemon.at_rate(saturation * int(p) / 100, args.daemon_frames)
                         for p in loads_pct]
                shadowed = daemon.shadow_frames() if shadow else {}
            finally:
                daemon.close()
            report["daemon"][label] = {"saturation_fps": saturation,
                                       "saturation_stages_ms": daemon.saturation_stages_ms,
                                       "loads": [asdict(x) for x in loads],
                                       **({"shadow_frames": shadowed} if shadow else {})}
            if shadow:
                ratios += shadow_ratios(plain_run, saturation, loads, loads_pct, shadowed)
            elif not plain_run:
                plain_run = {"saturation": saturation, "loads": loads}
            stages.append((label, daemon.saturation_stages_ms))
            lines += tables.daemon_rows(label, saturation, loads)
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
        lines += tables.stage_table(stages)
    if "pipeline" in args.stages:
        report["pipeline"] = pipeline_stage(bundle, variants[0], base, strips, args, lines,
                                            ratios, bare)
    report["ratios"] = ratios
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "bench.md").write_text("\n".join([*lines, "", *ratios]) + "\n")
        print(f"\nreport: {out / 'bench.json'}, {out / 'bench.md'}")
        if "daemon" in report and tables.plot(report, out / "bench.png"):
            print(f"plot: {out / 'bench.png'}")
    print()
    for line in ratios:  # last, where a reader's eye lands
        print(line)
    return 0


def shadow_ratios(plain: dict, saturation: float, loads: list, loads_pct: list[str],
                  shadowed: dict[str, float]) -> list[str]:
    """What shadowing costs the serving verdicts: the same daemon with and without it."""
    half = min(1, len(loads) - 1)
    return [f"saturation with shadow / without: {saturation / plain['saturation']:.3f}x",
            f"p99 at {loads_pct[half]}% load with shadow / without: "
            f"{loads[half].latency_p99_ms / plain['loads'][half].latency_p99_ms:.2f}x",
            f"shadow frames compared {shadowed.get('compared', 0):.0f}, dropped to keep "
            f"serving first {shadowed.get('dropped', 0):.0f}"]


def pipeline_stage(bundle, variant: BenchVariant, base, strips, args, lines: list[str],
                   ratios: list[str], bare: dict) -> dict:
    """The daemon around recorded outputs of the real model (a benchmark instrument):
    what the host side sustains, and what it adds to latency, per stage."""
    import tempfile

    from lineside.edge.pipeline.model import compose_model
    from lineside.tools.bench.daemon import DaemonUnderTest
    from lineside.tools.bench.replay import record_outputs

    plain = BenchVariant(variant.precision)  # the screen's saving is the model's, not ours
    frames = strips[:args.daemon_frames]
    loads_pct = args.loads.split(",")
    half = min(1, len(loads_pct) - 1)
    runs: list[dict] = []
    lines += tables.daemon_header("Pipeline ceiling: the daemon around replayed model "
                                  "outputs (benchmark instrument: no model runs)")
    stages: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = compose_model(bundle, plain.settings(base))
        replay = record_outputs(model, frames, Path(tmp) / "replay.npz", base.max_batch)
        model.close()
        for workers in args.decide_workers:  # side by side, one daemon each
            label = f"{plain.label} replayed" + \
                (f", {workers} decide threads" if len(args.decide_workers) > 1 else "")
            daemon = DaemonUnderTest(bundle, plain, base, frames, replay=replay,
                                     decide_workers=workers)
            try:
                saturation = daemon.saturation(args.pipeline_frames)
                loads = [daemon.at_rate(saturation * int(p) / 100, args.pipeline_frames)
                         for p in loads_pct]
            finally:
                daemon.close()
            lines += tables.daemon_rows(label, saturation, loads)
            stages.append((label, daemon.saturation_stages_ms))
            ratios.append(f"pipeline ceiling {label}: {saturation:.0f} frames/s "
                          f"({len(frames)} distinct frames)")
            ratios.append(f"pipeline p99 latency at {loads_pct[half]}% load, {label}: "
                          f"{loads[half].latency_p99_ms:.1f} ms")
            if plain.label in bare:
                ratios.append(f"pipeline ceiling / bare {plain.label}: "
                              f"{saturation / bare[plain.label].frames_per_s:.1f}x")
            runs.append({"decide_workers": workers, "saturation_fps": saturation,
                         "saturation_stages_ms": daemon.saturation_stages_ms,
                         "loads": [asdict(x) for x in loads]})
    lines += tables.stage_table(stages)
    if len(runs) > 1:
        ratios += [f"pipeline ceiling, {r['decide_workers']} / {runs[0]['decide_workers']} "
                   f"decide threads: {r['saturation_fps'] / runs[0]['saturation_fps']:.2f}x"
                   for r in runs[1:]]
    # The first run's figures at the top level; every run under "runs".
    return {"instrument": "replayed model outputs (tools/bench/replay.py)", **runs[0],
            "runs": runs}


if __name__ == "__main__":
    sys.exit(main())

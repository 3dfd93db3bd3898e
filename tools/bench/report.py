"""edge-bench's report: Markdown tables, the JSON beside them, and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lineside.tools.bench.bare import BareResult
from lineside.tools.bench.daemon import LoadResult

STAGE_NAMES = ["decode", "tile", "infer", "postprocess", "end_to_end"]


def bare_table(results: list[BareResult]) -> list[str]:
    return ["## Bare backend", "",
            "| variant | tiles/s | frames/s | batch latency ms p50 | p99 | tiles segmented |",
            "|---|---|---|---|---|---|",
            *(f"| {r.precision} | {r.tiles_per_s:.1f} | {r.frames_per_s:.2f} | "
              f"{r.batch_latency_ms:.1f} | {r.batch_latency_p99_ms:.1f} | "
              f"{100 * r.segmented_share:.0f}% |" for r in results)]


def profile_table(profiles: dict[str, dict[str, float]]) -> list[str]:
    return ["", "## ONNX Runtime kernel time by operator (one frame's tiles)", "",
            "| precision | top operators (share of kernel time) |", "|---|---|",
            *(f"| {p} | " + ", ".join(f"{op} {100 * share:.0f}%" for op, share in
                                     list(shares.items())[:5]) + " |"
              for p, shares in profiles.items())]


def daemon_header(title: str = "Daemon over ZeroMQ (camera timestamp to reject message)"
                  ) -> list[str]:
    return ["", f"## {title}", "",
            "| variant | offered fps | achieved fps | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|"]


def daemon_rows(label: str, saturation: float, loads: list[LoadResult]) -> list[str]:
    return [f"| {label} | saturation | {saturation:.2f} | | | |",
            *(f"| {label} | {x.offered_fps:.2f} | {x.achieved_fps:.2f} | "
              f"{x.latency_p50_ms:.0f} | {x.latency_p99_ms:.0f} | {x.latency_max_ms:.0f} |"
              for x in loads)]


def stage_table(stages: list[tuple[str, dict[str, float]]]) -> list[str]:
    return ["", "## Where the time goes at saturation (mean ms: decode and postprocess "
            "per frame, tile and infer per batch)", "",
            "| variant | " + " | ".join(STAGE_NAMES) + " |",
            "|---" * (len(STAGE_NAMES) + 1) + "|",
            *(f"| {label} | " + " | ".join(f"{means.get(n, float('nan')):.1f}"
                                          for n in STAGE_NAMES) + " |"
              for label, means in stages)]


def plot(report: dict[str, Any], path: Path) -> bool:
    """Throughput and latency against offered load, one colour per variant."""
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

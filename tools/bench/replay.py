"""The pipeline stage of edge-bench: the whole daemon with the model's cost taken out.

A BENCHMARK INSTRUMENT, never a serving option: the real model's outputs for the benchmark
frames are computed once, before timing (`record_outputs`), and a `ReplayBackend` hands
them back in order in a daemon started by this module (`python -m
lineside.tools.bench.replay BUNDLE --replay OUTPUTS.npz [edge-serve flags]`), so edge-bench
measures what the host side (receive, batch, decide, publish) sustains around a model of
any speed: the ceiling a GPU would hit. edge-serve has no such flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lineside.edge.backends.base import Backend, Outputs, infer_in_batches
from lineside.edge.bundle import Bundle
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.tiling import cut, make_grid


def record_outputs(model: LoadedModel, strips: list[np.ndarray], path: Path,
                   max_batch: int = 8) -> Path:
    """Every tile's outputs of `strips` (tiles cut as the daemon cuts them), in order."""
    grid = make_grid(strips[0].shape, model.tile_shape)
    channels = model.bundle.manifest.in_channels
    outputs: dict[str, list[np.ndarray]] = {}
    for strip in strips:
        for name, value in infer_in_batches(model.backend, cut(strip, grid, channels),
                                            max_batch).items():
            outputs.setdefault(name, []).append(value)
    np.savez(path, **{name: np.concatenate(values) for name, values in outputs.items()})
    return path


class ReplayBackend(Backend):
    """Returns recorded per-tile outputs in order, cycling: the daemon must be sent the
    recorded frames in the recorded order (edge-bench does). It checks tile counts only;
    it computes nothing."""

    name = "replay"

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            self.outputs = {name: data[name] for name in data.files}
        self.count = len(next(iter(self.outputs.values())))
        self._next = 0

    def infer(self, tiles: np.ndarray, thresholds: np.ndarray | None = None) -> Outputs:
        start, stop = self._next, self._next + len(tiles)
        self._next = stop % self.count
        if stop <= self.count:
            # Views, no copy: on a GPU the copy back is the DMA engine's, not the CPU's
            # (pinned host buffers); what this measures is the host's own work.
            return {name: value[start:stop] for name, value in self.outputs.items()}
        index = np.arange(start, stop) % self.count
        return {name: value[index] for name, value in self.outputs.items()}

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        pass  # nothing to warm, and the replay position must stay at the first frame

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "note": "benchmark instrument: recorded outputs"}


def main(argv: list[str] | None = None) -> int:
    """edge-serve's daemon on a ReplayBackend (edge-bench --stages pipeline only)."""
    from lineside.edge.bundle import load_bundle
    from lineside.edge.cli.common import setup_logging
    from lineside.edge.cli.serve import build_parser, run_daemon
    from lineside.edge.config import load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    replay = Path(argv.pop(argv.index("--replay") + 1))
    argv.remove("--replay")
    ap, model_group, daemon_group = build_parser()
    args = ap.parse_args(argv)
    setup_logging(args.verbose, json_lines=args.log_json)
    config = load_config(args.config, {"bundle": args.bundle, **model_group.values(args),
                                       **daemon_group.values(args)})
    bundle: Bundle = load_bundle(config.bundle)
    return run_daemon(config, LoadedModel(bundle, ReplayBackend(replay)), args)


if __name__ == "__main__":
    sys.exit(main())

"""Measure the CPU INT8 upsampling rewrite (export/graph_rewrites.py) side by side.

  python scripts/resize_rewrite.py CHECKPOINT BUNDLE CALIBRATION HELDOUT [--rounds 8] [-o OUT]

Exports the checkpoint (the bundle made from it gives classes and post-processing),
quantises the graph for the CPU twice from the same calibration set, with
the 2x nearest Resizes kept and written as copies, then in one run: ONNX Runtime's kernel
time per operator type for each (its profiler), both timed on the same tiles in
alternating rounds (so machine noise falls on both; the ratio is the result), and the
Kaggle Dice of each on the held-out frames with the bundle's post-processing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lineside.calibration.calibration_set import CalibrationSet
from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend
from lineside.edge.bundle import load_bundle
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.tiling import cut, make_grid
from lineside.export.int8 import quantize
from lineside.export.onnx_export import INPUT_NAME, export_onnx
from lineside.export.score_tail import add_score_tail
from lineside.tools.bench.bare import onnx_op_profile
from lineside.tools.evaluation import LabelledFrames, score
from lineside.train.checkpoint import load_checkpoint
from lineside.train.models import DeployedModel

COPY_OPS = ("Unsqueeze", "Concat", "QLinearConcat", "Gather", "Reshape", "Shape", "Mul")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("bundle")
    ap.add_argument("calibration")
    ap.add_argument("heldout")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--frames", type=int, default=2, help="strips per timed call")
    ap.add_argument("--eval-limit", type=int, default=40)
    ap.add_argument("-o", "--out", default="")
    args = ap.parse_args()

    bundle = load_bundle(args.bundle)
    manifest = bundle.manifest
    calibration = CalibrationSet.load(args.calibration)
    frames = LabelledFrames.from_folder(args.heldout, [c.id for c in manifest.classes],
                                        args.eval_limit)
    grid = make_grid(frames.images[0].shape, (manifest.tile_height, manifest.tile_width))
    tiles = np.concatenate([cut(image, grid, manifest.in_channels)
                            for image in frames.images[:args.frames]])
    report: dict = {"bundle": str(args.bundle), "tiles_per_call": len(tiles)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        net, meta = load_checkpoint(args.checkpoint)
        export_onnx(DeployedModel(net, meta["mean"], meta["std"]).eval(), fp32,
                    manifest.in_channels, (manifest.tile_height, manifest.tile_width))
        paths = {}
        for name, rewrite in (("resize", False), ("copies", True)):
            paths[name] = Path(tmp) / f"{name}.onnx"
            quantize(fp32, paths[name], "cpu", calibration, INPUT_NAME, rewrite=rewrite)
            add_score_tail(paths[name])
        backends = {name: OnnxRuntimeBackend(path, "ort-cpu",
                                             thresholds=manifest.graph_thresholds)
                    for name, path in paths.items()}
        for name, path in paths.items():
            profile = onnx_op_profile(path, tiles, manifest.graph_thresholds)
            report[f"profile_{name}"] = profile
            report[f"upsampling_share_{name}"] = round(
                profile.get("Resize", 0.0) if name == "resize" else
                sum(profile.get(op, 0.0) for op in COPY_OPS), 4)
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        for name in backends:  # warm-up
            backends[name].infer(tiles)
        for _ in range(args.rounds):
            for name, backend in backends.items():
                began = time.perf_counter()
                backend.infer(tiles)
                seconds[name].append(time.perf_counter() - began)
        for name, values in seconds.items():
            report[f"median_call_ms_{name}"] = round(1000 * statistics.median(values), 2)
        report["speed_ratio_copies_over_resize"] = round(
            statistics.median(seconds["resize"]) / statistics.median(seconds["copies"]), 3)
        outputs = {name: b.infer(tiles) for name, b in backends.items()}
        report["outputs_identical"] = all(
            np.array_equal(outputs["resize"][k], outputs["copies"][k])
            for k in outputs["resize"])
        for name, backend in backends.items():
            result = score(LoadedModel(bundle, backend), frames, manifest.classes)
            report[f"heldout_dice_{name}"] = result["dice"]
    report["heldout_frames"] = len(frames.names)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checkpoint -> model bundle directory (ONNX + manifest.json, docs/bundle.md)."""

from __future__ import annotations

import datetime as dt
import logging
import platform
import shutil
from pathlib import Path

import onnx
import torch

import lineside
from lineside.edge.bundle import ClassSpec, Manifest, ModelFile, sha256_file, write_manifest
from lineside.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, parity
from lineside.train.checkpoint import load_checkpoint
from lineside.train.models import DeployedModel

log = logging.getLogger("lineside.export")

# Worst |torch - ONNX Runtime| probability difference an FP32 export may show.
PARITY_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    """The export ran but its result failed a check; the bundle is not usable."""


def export_bundle(checkpoint: str | Path, out: str | Path, name: str = "") -> Manifest:
    checkpoint, out = Path(checkpoint), Path(out)
    net, meta = load_checkpoint(checkpoint)
    deployed = DeployedModel(net, meta["mean"], meta["std"]).eval()
    tile = tuple(meta["tile"])
    in_channels = int(meta["in_channels"])
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    onnx_path = staging / "model_fp32.onnx"
    log.info("exporting %s (%s) to ONNX", checkpoint, meta["architecture"])
    export_onnx(deployed, onnx_path, in_channels, tile)
    shapes = [(3, *tile), (1, tile[0], tile[1] + 64)]
    check = parity(deployed, onnx_path, in_channels, shapes)
    log.info("parity torch vs ONNX Runtime: max |diff| %.2e", check["max_abs_diff"])
    if check["max_abs_diff"] > PARITY_TOLERANCE:
        raise ExportError(f"ONNX output differs from torch by {check['max_abs_diff']:.2e} "
                          f"(> {PARITY_TOLERANCE}); the bundle was not written")

    import onnxruntime

    manifest = Manifest(
        name=name or checkpoint.stem,
        architecture=meta["architecture"],
        classes=[ClassSpec(**c) for c in meta["classes"]],
        tile_height=tile[0], tile_width=tile[1], in_channels=in_channels,
        mean=meta["mean"], std=meta["std"], input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        frame_height=meta["frame"][0], frame_width=meta["frame"][1],
        models={"fp32": ModelFile(onnx_path.name, sha256_file(onnx_path), "fp32")},
        parity={"fp32": {**check, "tolerance": PARITY_TOLERANCE}},
        metrics={"checkpoint": meta.get("metrics", {})},
        versions={"lineside": lineside.__version__, "torch": str(torch.__version__),
                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                  "opset": str(onnx.load(str(onnx_path)).opset_import[0].version),
                  "python": platform.python_version()},
        source_checkpoint_sha256=sha256_file(checkpoint),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_manifest(staging, manifest)
    # Replace the old bundle only once the new one is complete.
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return manifest

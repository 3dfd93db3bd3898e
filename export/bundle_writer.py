"""Checkpoint -> model bundle directory (ONNX variants + manifest.json, docs/bundle.md).

The bundle is written to a staging directory and renamed into place only when every
requested variant passed its checks, so a failed export never leaves a half bundle where
the runtime would find it.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import lineside
from lineside.calibration.calibration_set import CalibrationSet
from lineside.edge.backends.base import MAXIMA, PROBABILITIES, SCORES
from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend
from lineside.edge.backends.tensorrt.engine import ShapeProfile, tensorrt_available
from lineside.edge.bundle import (
    Bundle,
    ClassSpec,
    Manifest,
    ModelFile,
    sha256_file,
    write_manifest,
)
from lineside.edge.labels import detect_format
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.postprocess import score_map
from lineside.edge.variants import INT8_FLAVOURS, engine_variant, variant
from lineside.export.fp16 import convert_fp16
from lineside.export.int8 import FLOAT_ENDS_SCHEDULE, quantize
from lineside.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    PRESENCE_NAME,
    export_onnx,
    output_names,
    parity,
)
from lineside.export.score_tail import add_score_tail
from lineside.export.tensorrt_rules import tensorrt_qdq_problems, tensorrt_uint8_problems
from lineside.tools.evaluation import LabelledFrames, score, score_screen
from lineside.train.checkpoint import load_checkpoint
from lineside.train.models import DeployedModel

log = logging.getLogger("lineside.export")

# |torch - ONNX Runtime| probability for FP32. Export bugs (baked shapes, wrong ops) show
# as errors of 0.1 and more; float reordering in deep nets with sharp BN statistics can
# reach a few 1e-3 at single pixels, so the worst pixel gets more room than the mean.
PARITY_TOLERANCE = 1e-2
PARITY_MEAN_TOLERANCE = 1e-4
# Outputs allowed past PARITY_TOLERANCE: a barely trained network (a few steps, batch-norm
# statistics from a handful of crops) has logits so large that float rounding can flip
# an output near 0 or 1 at a few isolated pixels (seen: 8 of 1.1 M, mean 7e-6). An
# export bug moves whole regions, far more than this.
PARITY_OUTLIERS = 1e-4
FP16_TOLERANCE = 2e-2  # worst |FP32 - FP16| probability
MAX_DICE_DROP = 0.005  # INT8 may lose at most this much held-out Dice against FP32
MAX_SCORED_DICE_CHANGE = 0.002  # the scoring tail must not move held-out Dice more

# What the INT8 gate compares, per bundle task: (result key, name in logs and errors).
GATE_METRIC = {"segmentation": ("dice", "Dice"), "classification": ("tile_accuracy",
                                                                     "tile accuracy")}


class ExportError(RuntimeError):
    """The export ran but its result failed a check; the bundle was not written."""


@dataclass
class ExportOptions:
    name: str = ""
    fp16: bool = False
    int8: bool = False
    calibration: str = ""  # calibration set directory (edge-calibrate)
    eval_data: str = ""  # labelled held-out folder for the INT8 accuracy gate
    eval_limit: int = 24
    accuracy_gate: bool = True
    # "auto": whole frames in one piece when the graph runs them exactly like torch,
    # else tiles; "tiles" or "strip" to insist (strip fails when the graph cannot).
    inference: str = "auto"
    batch: str = "1:8:16"  # TensorRT optimisation profile MIN:OPT:MAX
    engine: bool = False  # build TensorRT engines here (needs TensorRT and a GPU)
    workspace_gb: float = 2.0


@dataclass
class ExportReport:
    manifest: Manifest
    engines_not_built: list[str] = field(default_factory=list)


def _cpu_backend(path: Path) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(path, name="ort-cpu")


def parity_holds(check: dict) -> bool:
    """torch and ONNX Runtime agree: on average within PARITY_MEAN_TOLERANCE, and every
    output within PARITY_TOLERANCE but a PARITY_OUTLIERS share of isolated ones."""
    return check["mean_abs_diff"] <= PARITY_MEAN_TOLERANCE and (
        check["max_abs_diff"] <= PARITY_TOLERANCE
        or check["beyond_tolerance"] <= PARITY_OUTLIERS)


def _fp16_parity(fp32: Path, fp16: Path, tile: tuple[int, int], channels: int) -> dict:
    frames = np.random.default_rng(1).integers(0, 256, (3, channels, *tile), dtype=np.uint8)
    try:
        half = _cpu_backend(fp16).infer(frames)
    except Exception as exc:  # some CPU builds lack FP16 kernels; the GPU check covers it
        return {"checked": False, "reason": f"ONNX Runtime CPU cannot run it here: {exc}"}
    full = _cpu_backend(fp32).infer(frames)
    diff = max(float(np.abs(half[name] - full[name]).max()) for name in full)
    if diff > FP16_TOLERANCE:
        raise ExportError(f"FP16 ONNX differs from FP32 by {diff:.3g} (> {FP16_TOLERANCE})")
    return {"checked": True, "max_abs_diff": diff, "tolerance": FP16_TOLERANCE,
            "runtime": "onnxruntime CPU"}


def _held_out(options: ExportOptions, calibration: CalibrationSet,
              class_ids: list[int]) -> LabelledFrames | None:
    """Labelled frames for the accuracy gate, never ones the scales were fitted on."""
    used = {s["image"] for s in calibration.manifest.sources}
    root = Path(options.eval_data or calibration.manifest.source_root)
    if not root.is_dir() or detect_format(root) is None:
        return None
    frames = LabelledFrames.from_folder(root, class_ids, options.eval_limit, exclude=used)
    return frames if frames.names else None


def _held_out_quality(manifest: Manifest, model: Path,
                      held_out: LabelledFrames) -> tuple[float, dict[str, Any]]:
    """The number the INT8 gate compares, and the full result: Kaggle Dice for a
    segmentation model, tile-level accuracy at the tuned thresholds for a screening
    classifier (one decision per tile and class, so one flipped decision moves it by
    far less than the allowed drop on a few dozen frames)."""
    scorer = score_screen if manifest.task == "classification" else score
    candidate = LoadedModel(Bundle(model.parent, manifest), _cpu_backend(model))
    result = scorer(candidate, held_out, manifest.classes)
    return float(result[GATE_METRIC[manifest.task][0]]), result


def _quantise_with_gate(staging: Path, fp32: Path, manifest: Manifest,
                        calibration: CalibrationSet, held_out: LabelledFrames | None,
                        options: ExportOptions) -> dict[str, Any]:
    report: dict[str, Any] = {}
    key_name, metric = GATE_METRIC[manifest.task]
    baseline = None
    if held_out is not None:
        baseline, result = _held_out_quality(manifest, fp32, held_out)
        manifest.metrics.setdefault("heldout", {})["fp32"] = result
    elif options.accuracy_gate:
        raise ExportError("the INT8 accuracy gate needs labelled held-out frames: pass "
                          "--eval DATA (a Severstal-layout folder), or --no-accuracy-gate")
    for key, flavour in INT8_FLAVOURS.items():
        path = staging / variant(key).file_name
        attempts = []
        for float_ends in FLOAT_ENDS_SCHEDULE:
            excluded = quantize(fp32, path, flavour, calibration, INPUT_NAME, float_ends)
            if flavour == "tensorrt" and (problems := tensorrt_qdq_problems(path)):
                raise ExportError(f"{key}: TensorRT's ONNX parser would refuse this graph: "
                                  + "; ".join(problems[:5]))
            attempt: dict[str, Any] = {"float_layers": excluded}
            if baseline is not None:
                value, result = _held_out_quality(manifest, path, held_out)
                attempt.update({key_name: value, "drop": baseline - value})
                log.info("%s (%s) with %d float layer(s): %s %.4f vs FP32 %.4f", key, flavour,
                         len(excluded), metric, value, baseline)
            attempts.append(attempt)
            if baseline is None or attempt["drop"] <= MAX_DICE_DROP:
                if baseline is not None:
                    manifest.metrics["heldout"][key] = result
                break
        else:
            lines = "; ".join(f"{len(a['float_layers'])} float layers: {metric} "
                              f"{a[key_name]:.4f} (drop {a['drop']:.4f})" for a in attempts)
            raise ExportError(f"{key} ({flavour}) misses the accuracy gate ({metric} may drop "
                              f"at most {MAX_DICE_DROP} from FP32 {baseline:.4f}): {lines}")
        manifest.models[key] = ModelFile(path.name, sha256_file(path), "int8",
                                         target=flavour,
                                         calibration_sha256=calibration.manifest.sha256)
        report[key] = {"flavour": flavour, "attempts": attempts,
                       "gate": "passed" if baseline is not None else "not run (disabled)"}
    return report


def _engines(staging: Path, manifest: Manifest, options: ExportOptions,
             bundle_dir: Path) -> list[str]:
    """Build TensorRT engines where possible; otherwise say which and how to build them."""
    wanted = [p for p, on in (("fp16", options.fp16), ("int8", options.int8)) if on]
    if not wanted:
        return []
    ok, reason = tensorrt_available()
    if not ok or not options.engine:
        why = reason if not ok else "--engine was not given"
        return [f"{engine_variant(p).key}: not built ({why}); on the target device run: "
                f"edge-build-engine {bundle_dir} --precision {p} --batch {options.batch}"
                for p in wanted]
    from lineside.edge.backends.tensorrt.loader import build_bundle_engine

    profile = ShapeProfile.parse(options.batch, manifest.in_channels, manifest.tile_height,
                                 manifest.tile_width)
    for precision in wanted:
        build_bundle_engine(staging, manifest, precision, profile, options.workspace_gb)
    return []


SCORE_TAIL_MISMATCH = 1e-4  # share of pixels whose mask may differ (float ties at t)


def _add_score_tails(staging: Path, manifest: Manifest, held_out: LabelledFrames | None,
                     baseline: float | None) -> dict[str, Any]:
    """Give every ONNX variant the scoring tail (export/score_tail.py), after every
    check of the model itself; then prove the scored FP32 graph gives the same masks as
    its probabilities (random tiles, varied thresholds) and, with held-out frames, the
    same Dice. Variants TensorRT builds from must keep uint8 at the network's edges."""
    tile = (manifest.in_channels, manifest.tile_height, manifest.tile_width)
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, *tile), dtype=np.uint8)
    thresholds = rng.uniform(0.2, 0.8, (3, len(manifest.classes))).astype(np.float32)
    fp32 = staging / manifest.models["fp32"].path
    probabilities = _cpu_backend(fp32).infer(frames)[PROBABILITIES]
    for key, model in list(manifest.models.items()):
        path = staging / model.path
        add_score_tail(path)
        if variant(key).target != "cpu" and (problems := tensorrt_uint8_problems(path)):
            raise ExportError(f"{key} with its scoring tail: " + "; ".join(problems[:5]))
        manifest.models[key] = replace(model, sha256=sha256_file(path))
    manifest.output_form = "scores"
    scored = _cpu_backend(fp32).infer(frames, thresholds)
    expected = score_map(probabilities, thresholds)
    mismatch = float(np.mean((scored[SCORES] > 0) != (expected > 0)))
    report: dict[str, Any] = {
        "mask_mismatch": mismatch, "tolerance": SCORE_TAIL_MISMATCH,
        "max_score_diff": int(np.abs(scored[SCORES].astype(int) - expected).max()),
        "maxima_max_abs_diff": float(np.abs(scored[MAXIMA]
                                            - probabilities.max(axis=(2, 3))).max())}
    if mismatch > SCORE_TAIL_MISMATCH:
        raise ExportError(f"the scored graph's masks differ from its probabilities' in "
                          f"{100 * mismatch:.3f}% of pixels")
    if held_out is not None and baseline is not None:
        dice, _ = _held_out_quality(manifest, fp32, held_out)
        report.update({"dice": dice, "dice_unscored": baseline})
        if abs(dice - baseline) > MAX_SCORED_DICE_CHANGE:
            raise ExportError(f"held-out Dice moved from {baseline:.4f} to {dice:.4f} with "
                              "the scoring tail")
    log.info("scoring tail on %s: mask mismatch %.2e, max score diff %d", ", ".join(
        manifest.models), mismatch, report["max_score_diff"])
    return report


def _inference_shape(deployed: DeployedModel, fp32: Path, in_channels: int,
                     tile: tuple[int, int], frame: tuple[int, int], task: str,
                     wanted: str) -> tuple[str, tuple[int, int], dict[str, Any] | None]:
    """How the runtime feeds the model: "strip" (the tile is the frame: no overlap, no
    stitching, 12% less compute than 7 overlapping 256x256 tiles of a 256x1600 strip) when
    the exported graph runs a whole frame as torch does, else "tiles" of the training
    size. Returns the mode, the model input shape and the strip's parity check."""
    if wanted not in ("auto", "tiles", "strip"):
        raise ExportError(f"inference {wanted!r} is not auto, tiles or strip")
    if wanted == "tiles" or task != "segmentation" or tuple(frame) == tuple(tile):
        return "tiles", tile, None
    try:
        check = parity(deployed, fp32, in_channels, [(1, *frame)])
        fits = parity_holds(check)
        why = f"max |diff| {check['max_abs_diff']:.2e} at {frame[0]}x{frame[1]}"
    except Exception as exc:  # a graph with a fixed size or an odd stride cannot
        check, fits, why = None, False, f"{type(exc).__name__}: {exc}"
    if fits:
        log.info("whole-strip inference: %dx%d frames in one piece (%s)", *frame, why)
        return "strip", tuple(frame), check
    if wanted == "strip":
        raise ExportError(f"the graph cannot run whole {frame[0]}x{frame[1]} frames ({why}); "
                          "export with --inference tiles")
    log.info("tiled inference: the graph cannot run whole frames (%s)", why)
    return "tiles", tile, None


def _output_fields(names: list[str]) -> dict[str, str]:
    if names == [PRESENCE_NAME]:  # a screening classifier
        return {"task": "classification", "output_name": PRESENCE_NAME, "presence_name": ""}
    return {"task": "segmentation", "output_name": OUTPUT_NAME,
            "presence_name": PRESENCE_NAME if PRESENCE_NAME in names else ""}


def export_bundle(checkpoint: str | Path, out: str | Path,
                  options: ExportOptions | None = None) -> ExportReport:
    options = options or ExportOptions()
    checkpoint, out = Path(checkpoint), Path(out)
    net, meta = load_checkpoint(checkpoint)
    deployed = DeployedModel(net, meta["mean"], meta["std"]).eval()
    tile = tuple(meta["tile"])
    in_channels = int(meta["in_channels"])
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    fp32 = staging / variant("fp32").file_name
    log.info("exporting %s (%s) to ONNX", checkpoint, meta["architecture"])
    export_onnx(deployed, fp32, in_channels, tile)
    # Checked at a batch size and tile shape unlike the export example (batch 2).
    check = parity(deployed, fp32, in_channels, [(3, *tile), (1, tile[0], tile[1] + 64)])
    log.info("parity torch vs ONNX Runtime: max |diff| %.2e", check["max_abs_diff"])
    if not parity_holds(check):
        raise ExportError(f"ONNX output differs from torch by up to "
                          f"{check['max_abs_diff']:.2e} (mean {check['mean_abs_diff']:.2e}, "
                          f"{check['beyond_tolerance']:.1e} of outputs beyond "
                          f"{PARITY_TOLERANCE}; limits: mean {PARITY_MEAN_TOLERANCE}, share "
                          f"{PARITY_OUTLIERS}); the bundle was not written")

    import onnxruntime

    fields = _output_fields(output_names(deployed, in_channels, tile))
    frame = (int(meta["frame"][0]), int(meta["frame"][1]))
    inference, model_input, strip_check = _inference_shape(
        deployed, fp32, in_channels, tile, frame, fields["task"], options.inference)
    manifest = Manifest(
        name=options.name or checkpoint.stem,
        architecture=meta["architecture"],
        classes=[ClassSpec(**c) for c in meta["classes"]],
        tile_height=model_input[0], tile_width=model_input[1], in_channels=in_channels,
        mean=meta["mean"], std=meta["std"], input_name=INPUT_NAME, **fields,
        inference=inference, frame_height=frame[0], frame_width=frame[1],
        models={"fp32": ModelFile(fp32.name, sha256_file(fp32), "fp32")},
        parity={"fp32": {**check, "tolerance": PARITY_TOLERANCE,
                         "mean_tolerance": PARITY_MEAN_TOLERANCE}},
        metrics={"checkpoint": meta.get("metrics", {})},
        versions={"lineside": lineside.__version__, "torch": str(torch.__version__),
                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                  "opset": str(onnx.load(str(fp32)).opset_import[0].version),
                  "python": platform.python_version()},
        source_checkpoint_sha256=sha256_file(checkpoint),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    if strip_check is not None:
        manifest.parity["strip"] = {**strip_check, "tolerance": PARITY_TOLERANCE}
    if options.fp16:
        fp16 = staging / variant("fp16").file_name
        convert_fp16(fp32, fp16)
        manifest.models["fp16"] = ModelFile(fp16.name, sha256_file(fp16), "fp16")
        manifest.parity["fp16"] = _fp16_parity(fp32, fp16, model_input, in_channels)
    held_out, baseline = None, None
    if options.int8:
        if not options.calibration:
            raise ExportError("--int8 needs a calibration set: --calib SET (edge-calibrate)")
        calibration = CalibrationSet.load(options.calibration)
        cal = calibration.manifest
        if (cal.tile_height, cal.tile_width, cal.channels) != (*tile, in_channels):
            raise ExportError(f"calibration set tiles are {cal.channels}x{cal.tile_height}x"
                              f"{cal.tile_width}, the model takes {in_channels}x{tile[0]}x"
                              f"{tile[1]}: rebuild it with edge-calibrate --tile")
        # Calibration tiles are the training tile's even for a strip model: activation
        # ranges do not depend on the input's extent, and the graph takes any size.
        held_out = _held_out(options, calibration, manifest.class_ids)
        manifest.metrics["quantization"] = _quantise_with_gate(
            staging, fp32, manifest, calibration, held_out, options)
        manifest.metrics["calibration"] = {
            "sha256": cal.sha256, "tiles": cal.count, "frames": len(cal.sources),
            "path": str(calibration.root), "strategy": cal.strategy}
        baseline = manifest.metrics.get("heldout", {}).get("fp32", {}).get("dice")
    if manifest.task == "segmentation":
        manifest.parity["score_tail"] = _add_score_tails(staging, manifest, held_out,
                                                         baseline)
    not_built = _engines(staging, manifest, options, out)
    manifest.metrics["engines_not_built"] = not_built
    write_manifest(staging, manifest)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return ExportReport(manifest, not_built)

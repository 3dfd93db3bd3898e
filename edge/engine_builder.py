"""Build a bundle's TensorRT engines on this device and record them in its manifest.

Which builder path, by the installed TensorRT and what the bundle holds:

| TensorRT | precision | built from | how |
|---|---|---|---|
| 10 or 11 | fp16 | model_fp16.onnx | strongly typed network |
| 10 or 11 | int8 | model_int8_trt.onnx (symmetric QDQ) | strongly typed network |
| 10 only | fp16 | model_fp32.onnx | `BuilderFlag.FP16` (--mode flags, or no FP16 ONNX) |
| 10 only | int8 | model_fp32.onnx | `BuilderFlag.INT8`, entropy calibrator, cache (--calib) |
"""

from __future__ import annotations

import logging
from pathlib import Path

from lineside.edge.backends.tensorrt_engine import (
    ShapeProfile,
    build_engine,
    has_builder_precision_flags,
)
from lineside.edge.bundle import Manifest, ModelFile, sha256_file

log = logging.getLogger("lineside.edge.tensorrt")

QDQ_SOURCES = {"fp16": "fp16", "int8": "int8-trt", "fp32": "fp32"}


def build_bundle_engine(root: Path, manifest: Manifest, precision: str, profile: ShapeProfile,
                        workspace_gb: float = 2.0, mode: str = "auto",
                        calibration_dir: str = "") -> Path:
    """Build `model_<precision>.engine` (+ sidecar) in `root` and add it to `manifest`."""
    flags = has_builder_precision_flags()
    typed_key = QDQ_SOURCES[precision]
    use_typed = mode == "strongly-typed" or (
        mode == "auto" and typed_key in manifest.models and not calibration_dir)
    if not use_typed and not flags:
        raise RuntimeError("this TensorRT (11+) has no FP16/INT8 builder flags or implicit "
                           "calibrators: export the bundle with --fp16/--int8 and build "
                           "strongly typed")
    engine = root / f"model_{precision}.engine"
    calibrator, calibration_sha = None, ""
    if use_typed:
        if typed_key not in manifest.models:
            raise RuntimeError(f"bundle has no {typed_key} ONNX to build a strongly typed "
                               f"{precision} engine from: re-export with --{precision}")
        source = manifest.models[typed_key]
        calibration_sha = source.calibration_sha256
    else:
        source = manifest.models["fp32"]
        if precision == "int8":
            if not calibration_dir:
                raise RuntimeError("INT8 with builder flags needs --calib SET (entropy "
                                   "calibration), or build from the bundle's QDQ ONNX")
            from lineside.calibration.calibration_set import CalibrationSet
            from lineside.calibration.readers import tensorrt_entropy_calibrator

            calibration = CalibrationSet.load(calibration_dir)
            calibration_sha = calibration.manifest.sha256
            calibrator = tensorrt_entropy_calibrator(
                calibration, root / f"calibration-{calibration_sha[:12]}.cache")
    build_engine(root / source.path, engine, precision, profile, source.sha256, workspace_gb,
                 calibrator=calibrator, calibration_sha256=calibration_sha,
                 timing_cache=root / "timing.cache", strongly_typed=use_typed)
    manifest.models[f"trt-{precision}"] = ModelFile(engine.name, sha256_file(engine), precision,
                                                    target="tensorrt",
                                                    calibration_sha256=calibration_sha)
    log.info("built %s from %s", engine, source.path)
    return engine

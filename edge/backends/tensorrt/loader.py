"""Loading TensorRT engines: the one engine builder, and finding the engine to run.

Polygraphy's split: building an engine is a loader, running it is a runner (runner.py).
Which ONNX an engine is built from and with which builder path comes from the variant
table (lineside.edge.variants.engine_recipe), for the runtime and `edge-build-engine`
alike:

| TensorRT | precision | built from | how |
|---|---|---|---|
| 10 or 11 | fp32 | model_fp32.onnx | as it is |
| 10 or 11 | fp16 | model_fp16.onnx | strongly typed network |
| 10 or 11 | int8 | model_int8_trt.onnx (symmetric QDQ) | strongly typed network |
| 10 only | fp16 | model_fp32.onnx | `BuilderFlag.FP16` (--mode flags, or no FP16 ONNX) |
| 10 only | int8 | model_fp32.onnx | `BuilderFlag.INT8`, entropy calibrator, cache (--calib) |

`tensorrt` and `pycuda` are imported inside functions: this module imports anywhere.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from lineside.edge.backends.tensorrt.engine import (
    EngineMismatch,
    EngineSidecar,
    ShapeProfile,
    device_identity,
    expected_sidecar,
    has_builder_precision_flags,
)
from lineside.edge.bundle import Bundle, Manifest, ModelFile, sha256_file
from lineside.edge.variants import CALIBRATOR, EngineRecipe, engine_recipe, engine_variant

log = logging.getLogger("lineside.edge.tensorrt")


def build_engine(onnx_path: Path, engine_path: Path, recipe: EngineRecipe,
                 profile: ShapeProfile, onnx_sha256: str, workspace_gb: float = 2.0,
                 calibrator: Any = None, calibration_sha256: str = "",
                 timing_cache: Path | None = None) -> EngineSidecar:
    """Build and serialise an engine plus its sidecar, the way `recipe` says.

    `onnx_path` is the recipe's source graph: the FP16 ONNX or QDQ ONNX for the strongly
    typed path, or the FP32 ONNX with builder flags (TensorRT 10 only).
    """
    import tensorrt as trt

    precision = recipe.precision
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_flags = 0
    if recipe.strongly_typed:
        network_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not recipe.strongly_typed:
        if not has_builder_precision_flags():
            raise RuntimeError("this TensorRT has no FP16/INT8 builder flags (TensorRT 11+): "
                               "build from the bundle's FP16 or QDQ ONNX (strongly typed)")
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            if recipe.builder_path != CALIBRATOR or calibrator is None:
                raise RuntimeError("an INT8 engine from the FP32 graph needs a calibrator")
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)  # layers without INT8 kernels use FP16
            config.int8_calibrator = calibrator

    optimisation = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    optimisation.set_shape(network.get_input(0).name, low, opt, high)
    config.add_optimization_profile(optimisation)

    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    log.info("building %s engine from %s (%s, batch %d:%d:%d)", precision, onnx_path,
             recipe.builder_path, profile.min_batch, profile.opt_batch, profile.max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path} "
                           "(see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{engine_path}.tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    if timing_cache:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    name, capability = device_identity()
    sidecar = EngineSidecar(trt.__version__, name, capability, precision, onnx_sha256,
                            calibration_sha256, profile, recipe.builder_path,
                            int(workspace_gb * (1 << 30)),
                            dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    sidecar.write(engine_path)
    return sidecar


def resolve_engine(bundle: Bundle, precision: str, cache_dir: Path,
                   max_batch: int = 16) -> Path:
    """An engine that matches this GPU, TensorRT and bundle: the bundle's own, else one in
    the cache, else one built now into the cache (a log line says why).

    Raises lineside.edge.variants.VariantUnavailable when no engine of this precision can
    be built from the bundle here (the runtime never calibrates).
    """
    manifest = bundle.manifest
    recipe = engine_recipe(precision, set(manifest.models),
                           precision_flags=has_builder_precision_flags())
    source = manifest.models[recipe.source.key]
    calibration = source.calibration_sha256
    profile = ShapeProfile(1, min(8, max_batch), max_batch, manifest.in_channels,
                           manifest.tile_height, manifest.tile_width)
    want = expected_sidecar(source.sha256, precision, profile, calibration)
    candidates = []
    shipped = manifest.models.get(engine_variant(precision).key)
    if shipped is not None:
        candidates.append(bundle.root / shipped.path)
    key = f"{source.sha256[:16]}-{precision}-sm{want.compute_capability}-trt{want.tensorrt_version}"
    cached = cache_dir / f"{key}.engine"
    candidates.append(cached)
    for engine in candidates:
        if not engine.exists():
            continue
        try:
            problems = EngineSidecar.read(engine).mismatches(want)
        except EngineMismatch as exc:
            problems = [str(exc)]
        if not problems:
            return engine
        log.warning("not using engine %s: %s", engine, "; ".join(problems))
    log.warning("no matching %s engine for %s on %s (TensorRT %s): building one into %s; "
                "run edge-build-engine on this device beforehand to avoid this at start-up",
                precision, bundle.root, want.gpu_name, want.tensorrt_version, cached)
    build_engine(bundle.root / source.path, cached, recipe, profile, source.sha256,
                 calibration_sha256=calibration, timing_cache=cache_dir / "timing.cache")
    return cached


def build_bundle_engine(root: Path, manifest: Manifest, precision: str, profile: ShapeProfile,
                        workspace_gb: float = 2.0, mode: str = "auto",
                        calibration_dir: str = "") -> Path:
    """Build the bundle's `precision` engine (+ sidecar) in `root` and add it to
    `manifest` (edge-build-engine, edge-export --engine). Raises VariantUnavailable when
    the bundle and this TensorRT offer no way to build it."""
    recipe = engine_recipe(precision, set(manifest.models),
                           precision_flags=has_builder_precision_flags(),
                           calibration=bool(calibration_dir), mode=mode)
    source = manifest.models[recipe.source.key]
    variant = engine_variant(precision)
    engine = root / variant.file_name
    calibrator, calibration_sha = None, source.calibration_sha256
    if recipe.builder_path == CALIBRATOR:
        from lineside.calibration.calibration_set import CalibrationSet
        from lineside.calibration.readers import tensorrt_entropy_calibrator

        calibration = CalibrationSet.load(calibration_dir)
        calibration_sha = calibration.manifest.sha256
        calibrator = tensorrt_entropy_calibrator(
            calibration, root / f"calibration-{calibration_sha[:12]}.cache")
    build_engine(root / source.path, engine, recipe, profile, source.sha256, workspace_gb,
                 calibrator=calibrator, calibration_sha256=calibration_sha,
                 timing_cache=root / "timing.cache")
    manifest.models[variant.key] = ModelFile(engine.name, sha256_file(engine), precision,
                                             target=variant.target,
                                             calibration_sha256=calibration_sha)
    log.info("built %s from %s (%s)", engine, source.path, recipe.builder_path)
    return engine

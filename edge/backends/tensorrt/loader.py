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

Checked against TensorRT's Python bindings (NVIDIA/TensorRT `python/src/infer/pyCore.cpp`,
release/10.x and 11.x): `IBuilderConfig.set_timing_cache` returns False for a cache from
another device, which is then replaced by an empty one; the legacy calibrator feeds the
OPT shape of the profile given to `set_calibration_profile` (TensorRT 10 only, deprecated
since 10.1; TensorRT 11 has no implicit calibration at all).

`tensorrt` and `pycuda` are imported inside functions: this module imports anywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lineside.edge.backends.base import THRESHOLDS
from lineside.edge.backends.tensorrt.engine import (
    EngineMismatch,
    EngineSidecar,
    Machine,
    ShapeProfile,
    engine_problems,
    has_builder_precision_flags,
    this_machine,
    write_engine_files,
)
from lineside.edge.bundle import Bundle, Manifest, ModelFile, sha256_file
from lineside.edge.config import ConfigError
from lineside.edge.files import write_file_atomically
from lineside.edge.variants import CALIBRATOR, EngineRecipe, engine_recipe, engine_variant

log = logging.getLogger("lineside.edge.tensorrt")

# (network input dtype, calibration batch) -> an IInt8Calibrator (calibration.readers).
CalibratorFactory = Callable[[Any, int], Any]


def _network_flags(trt: Any, strongly_typed: bool) -> int:
    # TensorRT 11 keeps the flag (deprecated: always on); a later one may drop it.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if strongly_typed and flag is not None else 0


def _attach_timing_cache(trt: Any, config: Any, timing_cache: Path | None) -> None:
    data = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # A cache from another GPU or TensorRT version: start an empty one instead of
        # building with a cache TensorRT refused (and saving it over the good one).
        log.warning("timing cache %s does not match this device; starting a new one",
                    timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(onnx_path: Path, engine_path: Path, recipe: EngineRecipe,
                 profile: ShapeProfile, source: ModelFile, machine: Machine,
                 workspace_gb: float = 2.0, calibrator: CalibratorFactory | None = None,
                 calibration_sha256: str = "", timing_cache: Path | None = None) -> EngineSidecar:
    """Build, serialise and write an engine and its sidecar, the way `recipe` says.

    `onnx_path` is the recipe's source graph: the FP16 ONNX or QDQ ONNX for the strongly
    typed path, or the FP32 ONNX with builder flags (TensorRT 10 only).
    """
    import tensorrt as trt

    precision = recipe.precision
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, recipe.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    optimisation = builder.create_optimization_profile()
    input_tensor = network.get_input(0)  # the frames; a scored graph adds `thresholds`
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        optimisation.set_shape(tensor.name, *profile.shapes_for(
            None if index == 0 else tuple(tensor.shape)[1:]))
    config.add_optimization_profile(optimisation)
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
            # Calibration runs at this profile's OPT shape, in the input's own dtype.
            config.set_calibration_profile(optimisation)
            config.int8_calibrator = calibrator(trt.nptype(input_tensor.dtype),
                                                profile.opt_batch)
    _attach_timing_cache(trt, config, timing_cache)

    log.info("building %s engine from %s (%s, batch %d:%d:%d) on %s", precision, onnx_path,
             recipe.builder_path, profile.min_batch, profile.opt_batch, profile.max_batch,
             machine.gpu_name)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path} "
                           "(see the TensorRT log above)")
    sidecar = EngineSidecar.for_machine(
        machine, precision=precision, onnx_sha256=source.sha256, source_key=recipe.source.key,
        calibration_sha256=calibration_sha256 or source.calibration_sha256, profile=profile,
        builder_path=recipe.builder_path, workspace_bytes=int(workspace_gb * (1 << 30)),
        built=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_engine_files(engine_path, bytes(serialized), sidecar)
    if timing_cache:
        write_file_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return sidecar


@contextlib.contextmanager
def building(engine_path: Path) -> Iterator[None]:
    """One builder per engine at a time across processes (two daemons starting together
    on one box): the second waits, then finds the first one's engine."""
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{engine_path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _problems(engine: Path, machine: Machine, precision: str, needed: ShapeProfile,
              models: dict[str, ModelFile]) -> list[str]:
    try:
        return engine_problems(EngineSidecar.read(engine), engine, machine, precision, needed,
                               models)
    except EngineMismatch as exc:
        return [str(exc)]


def _check_writable(cache_dir: Path) -> None:
    """An engine that cannot be saved would be rebuilt on every start (minutes on a
    Jetson): refuse at once instead, saying where."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / ".writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"engine cache {cache_dir} is not writable ({exc}): set "
                          "LINESIDE_ENGINE_CACHE to a writable directory, or build the "
                          "engines into the bundle with edge-build-engine") from None


def needed_profile(bundle: Bundle, max_batch: int = 16) -> ShapeProfile:
    """The batches the runtime runs a bundle's tiles at: 1 to `max_batch`."""
    manifest = bundle.manifest
    return ShapeProfile(1, min(8, max_batch), max_batch, manifest.in_channels,
                        manifest.tile_height, manifest.tile_width)


def find_engine(bundle: Bundle, precision: str, cache_dir: Path, machine: Machine,
                max_batch: int = 16, precision_flags: bool | None = None) -> Path | None:
    """A matching engine that exists already: the bundle's own (whatever it was built
    from, as its sidecar says), else the cache's; None when one must be built. Builds
    nothing: the runtime asks this first and builds off the hot path."""
    manifest = bundle.manifest
    needed = needed_profile(bundle, max_batch)
    shipped = manifest.models.get(engine_variant(precision).key)
    if shipped is not None:
        engine = bundle.root / shipped.path
        problems = _problems(engine, machine, precision, needed, manifest.models)
        if not problems:
            return engine
        log.warning("not using the bundle's engine %s: %s", engine, "; ".join(problems))
    cached = cache_path(bundle, precision, cache_dir, machine, precision_flags)
    problems = _problems(cached, machine, precision, needed, manifest.models)
    if not problems:
        return cached
    if cached.exists():
        log.warning("not using cached engine %s: %s", cached, "; ".join(problems))
    return None


def cache_path(bundle: Bundle, precision: str, cache_dir: Path, machine: Machine,
               precision_flags: bool | None = None) -> Path:
    """Where this machine keeps the engine it builds for the bundle's `precision`; raises
    VariantUnavailable when it cannot build one at all."""
    flags = has_builder_precision_flags() if precision_flags is None else precision_flags
    recipe = engine_recipe(precision, set(bundle.manifest.models), precision_flags=flags)
    source = bundle.manifest.models[recipe.source.key]
    return cache_dir / f"{source.sha256[:16]}-{precision}-{machine.cache_tag}.engine"


def resolve_engine(bundle: Bundle, precision: str, cache_dir: Path, max_batch: int = 16,
                   machine: Machine | None = None,
                   build: Callable[..., EngineSidecar] = build_engine,
                   precision_flags: bool | None = None) -> Path:
    """`find_engine`, else build one into the cache (a log line says why) and return it.
    `machine`, `build` and `precision_flags` (this TensorRT has BuilderFlag.FP16/INT8)
    are asked of TensorRT unless a test injects them.

    Raises lineside.edge.variants.VariantUnavailable when no engine of this precision can
    be built from the bundle here (the runtime never calibrates).
    """
    machine = machine or this_machine()
    found = find_engine(bundle, precision, cache_dir, machine, max_batch, precision_flags)
    if found is not None:
        return found
    flags = has_builder_precision_flags() if precision_flags is None else precision_flags
    recipe = engine_recipe(precision, set(bundle.manifest.models), precision_flags=flags)
    source = bundle.manifest.models[recipe.source.key]
    cached = cache_path(bundle, precision, cache_dir, machine, flags)
    _check_writable(cache_dir)
    with building(cached):  # another process may have built it while we waited
        if not _problems(cached, machine, precision, needed_profile(bundle, max_batch),
                         bundle.manifest.models):
            return cached
        log.warning("no matching %s engine for %s on %s (TensorRT %s): building one into %s; "
                    "run edge-build-engine on this device beforehand to avoid this",
                    precision, bundle.root, machine.gpu_name, machine.tensorrt_version, cached)
        build(bundle.root / source.path, cached, recipe, needed_profile(bundle, max_batch),
              source, machine, timing_cache=cache_dir / f"timing-{machine.cache_tag}.cache")
    return cached


def build_bundle_engine(root: Path, manifest: Manifest, precision: str, profile: ShapeProfile,
                        workspace_gb: float = 2.0, mode: str = "auto",
                        calibration_dir: str = "", machine: Machine | None = None,
                        build: Callable[..., EngineSidecar] = build_engine,
                        precision_flags: bool | None = None) -> Path:
    """Build the bundle's `precision` engine (+ sidecar) in `root` and add it to
    `manifest` (edge-build-engine, edge-export --engine). Raises VariantUnavailable when
    the bundle and this TensorRT offer no way to build it."""
    flags = has_builder_precision_flags() if precision_flags is None else precision_flags
    recipe = engine_recipe(precision, set(manifest.models), precision_flags=flags,
                           calibration=bool(calibration_dir), mode=mode)
    machine = machine or this_machine()
    source = manifest.models[recipe.source.key]
    variant = engine_variant(precision)
    engine = root / variant.file_name
    calibrator, calibration_sha = None, source.calibration_sha256
    if recipe.builder_path == CALIBRATOR:
        from lineside.calibration.calibration_set import CalibrationSet
        from lineside.calibration.readers import tensorrt_entropy_calibrator

        calibration = CalibrationSet.load(calibration_dir)
        calibration_sha = calibration.manifest.sha256
        cache = root / f"calibration-{calibration_sha[:12]}.cache"

        # A scored graph's second input: the bundle's thresholds for every tile (the
        # scoring tail sits after the model; its value does not move any scale).
        defaults = manifest.graph_thresholds
        constants = {} if defaults is None else {THRESHOLDS: np.asarray(defaults, np.float32)}

        def calibrator(dtype: Any, batch: int) -> Any:
            return tensorrt_entropy_calibrator(calibration, cache, batch, dtype,
                                               constants=constants)

    with building(engine):
        build(root / source.path, engine, recipe, profile, source, machine, workspace_gb,
              calibrator=calibrator, calibration_sha256=calibration_sha,
              timing_cache=root / f"timing-{machine.cache_tag}.cache")
    manifest.models[variant.key] = ModelFile(engine.name, sha256_file(engine), precision,
                                             target=variant.target,
                                             calibration_sha256=calibration_sha)
    log.info("built %s from %s (%s)", engine, source.path, recipe.builder_path)
    return engine

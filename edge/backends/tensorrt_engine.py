"""TensorRT engines: build from a bundle's ONNX, describe them in a sidecar, check them.

An engine only runs on the TensorRT version and GPU it was built for. Every engine file
`X.engine` has a sidecar `X.engine.json` (not a header inside the engine) recording what
it depends on; the runtime compares it with the machine and the bundle before loading,
refuses a mismatch with a message that says why, and rebuilds from the bundle's ONNX into
an engine cache instead of failing on the line or rebuilding on every start.

Two builder paths, chosen by what the installed TensorRT offers:
- TensorRT 10 (JetPack 6): `BuilderFlag.FP16` for FP16 from an FP32 ONNX; INT8 from a QDQ
  ONNX (explicit) or from an FP32 ONNX with an entropy calibrator and calibration cache.
- TensorRT 11 (x86): networks are strongly typed; FP16 comes from an FP16 ONNX and INT8
  from a QDQ ONNX. The FP16/INT8 flags and implicit calibrators no longer exist.

`tensorrt` and `pycuda` are imported inside functions: this module imports anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lineside.edge.tensorrt")

SIDECAR_SUFFIX = ".json"


class EngineMismatch(RuntimeError):
    """An engine that was built for another GPU, TensorRT, model or precision."""


@dataclass
class ShapeProfile:
    """Optimisation profile over the batch dimension, for a fixed tile shape."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 16
    channels: int = 1
    height: int = 256
    width: int = 256

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        tail = (self.channels, self.height, self.width)
        return (self.min_batch, *tail), (self.opt_batch, *tail), (self.max_batch, *tail)

    @classmethod
    def parse(cls, text: str, channels: int, height: int, width: int) -> ShapeProfile:
        """From `MIN:OPT:MAX` (the `--batch` flag of edge-export)."""
        try:
            low, opt, high = (int(x) for x in text.split(":"))
        except ValueError:
            raise ValueError(f"batch profile {text!r} is not MIN:OPT:MAX") from None
        if not 1 <= low <= opt <= high:
            raise ValueError(f"batch profile {text!r} needs 1 <= MIN <= OPT <= MAX")
        return cls(low, opt, high, channels, height, width)


@dataclass
class EngineSidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100)
    precision: str  # fp16 | int8 | fp32
    onnx_sha256: str
    calibration_sha256: str = ""  # INT8 only: the calibration set the scales came from
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    builder_path: str = ""  # "strongly-typed" | "builder-flags" | "calibrator"
    workspace_bytes: int = 0
    built: str = ""

    def write(self, engine_path: Path) -> Path:
        path = Path(f"{engine_path}{SIDECAR_SUFFIX}")
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, engine_path: Path) -> EngineSidecar:
        path = Path(f"{engine_path}{SIDECAR_SUFFIX}")
        if not path.is_file():
            raise EngineMismatch(f"engine {engine_path} has no sidecar {path.name}: "
                                 "its origin is unknown, so it is not trusted")
        body = json.loads(path.read_text())
        body["profile"] = ShapeProfile(**body.get("profile", {}))
        return cls(**body)

    def mismatches(self, expected: EngineSidecar) -> list[str]:
        """Why this engine cannot serve `expected` (empty when it can)."""
        problems = []
        for name in ("tensorrt_version", "compute_capability", "gpu_name", "precision",
                     "onnx_sha256", "calibration_sha256"):
            have, want = getattr(self, name), getattr(expected, name)
            if want and have != want:
                problems.append(f"{name} is {have!r}, this machine/bundle needs {want!r}")
        if self.profile.max_batch < expected.profile.max_batch or \
                (self.profile.height, self.profile.width) != \
                (expected.profile.height, expected.profile.width):
            problems.append(f"shape profile {self.profile} does not cover {expected.profile}")
        return problems


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT and a CUDA GPU are usable here, with the reason when not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt package is not installed (pip install 'lineside[tensorrt]')"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return False, "CUDA reports no GPU"
    except ImportError:
        return False, "pycuda is not installed (pip install 'lineside[tensorrt]')"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        return False, f"CUDA is not usable: {exc}"
    return True, ""


def device_identity(device_index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability) of a CUDA device."""
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return device.name(), f"{major}.{minor}"


def expected_sidecar(onnx_sha256: str, precision: str, profile: ShapeProfile,
                     calibration_sha256: str = "") -> EngineSidecar:
    """What an engine for this bundle model must say about itself on this machine."""
    import tensorrt as trt

    name, capability = device_identity()
    return EngineSidecar(trt.__version__, name, capability, precision, onnx_sha256,
                         calibration_sha256, profile)


def has_builder_precision_flags() -> bool:
    """TensorRT 10 has BuilderFlag.FP16/INT8; TensorRT 11 removed them."""
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "FP16")


def build_engine(onnx_path: Path, engine_path: Path, precision: str, profile: ShapeProfile,
                 onnx_sha256: str, workspace_gb: float = 2.0, calibrator: Any = None,
                 calibration_sha256: str = "", timing_cache: Path | None = None,
                 strongly_typed: bool | None = None) -> EngineSidecar:
    """Build and serialise an engine plus its sidecar.

    `onnx_path` is the graph for the target precision: the FP16 ONNX or QDQ ONNX for the
    strongly typed path, or the FP32 ONNX with builder flags (TensorRT 10 only).
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags_available = has_builder_precision_flags()
    if strongly_typed is None:
        strongly_typed = not flags_available or (calibrator is None and precision != "fp16")
    network_flags = 0
    if strongly_typed:
        network_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    builder_path = "strongly-typed"
    if not strongly_typed:
        if not flags_available:
            raise RuntimeError("this TensorRT has no FP16/INT8 builder flags (TensorRT 11+): "
                               "build from the bundle's FP16 or QDQ ONNX (strongly typed)")
        builder_path = "builder-flags"
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)  # layers without INT8 kernels use FP16
            if calibrator is not None:
                config.int8_calibrator = calibrator
                builder_path = "calibrator"

    optimisation = builder.create_optimization_profile()
    low, opt, high = profile.shapes()
    optimisation.set_shape(network.get_input(0).name, low, opt, high)
    config.add_optimization_profile(optimisation)

    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    log.info("building %s engine from %s (%s, batch %d:%d:%d)", precision, onnx_path,
             builder_path, profile.min_batch, profile.opt_batch, profile.max_batch)
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
                            calibration_sha256, profile, builder_path,
                            int(workspace_gb * (1 << 30)),
                            dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    sidecar.write(engine_path)
    return sidecar

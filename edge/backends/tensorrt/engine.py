"""What a TensorRT engine is: its shape profile and its sidecar, checked against a machine.

An engine only runs on the TensorRT version and GPU it was built for. Every engine file
`X.engine` has a sidecar `X.engine.json` (not a header inside the engine) recording what
it depends on; the loader (loader.py) compares it with the machine and the bundle before
use, refuses a mismatch with a message that says why, and builds a new one into an engine
cache instead of failing on the line or rebuilding on every start.

`tensorrt` and `pycuda` are imported inside functions: this module imports anywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

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

"""What a TensorRT engine is: its shape profile and its sidecar, checked against a machine.

An engine only runs on the TensorRT version and GPU it was built for. Every engine file
`X.engine` has a sidecar `X.engine.json` (not a header inside the engine) recording what
it depends on: the TensorRT version, the GPU (name, compute capability, SM count and
memory: Jetson Orin AGX, NX and Nano share compute capability 8.7 and may report one
name), the bundle model it was built from (`source_key` and its sha256), the calibration
set, the shape profile, and the engine file's own sha256. The loader (loader.py) checks
it with `engine_problems` before use, refuses a mismatch with the reasons, and builds a
new one into an engine cache instead of failing on the line or rebuilding on every start.

Engine and sidecar are written together by `write_engine_files`: unique temporary names,
fsync, then renamed into place, so two processes building at once, or a crash halfway,
never leave a pair that lies.

`tensorrt` and `pycuda` are imported inside functions: this module imports anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lineside.edge.files import write_synced

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 2


def engine_cache_dir() -> Path:
    """Where engines built on this machine are kept (native TensorRT, and ONNX Runtime's
    TensorRT provider under `ort-trt/`): $LINESIDE_ENGINE_CACHE, else ~/.cache/lineside."""
    return Path(os.environ.get("LINESIDE_ENGINE_CACHE",
                               Path.home() / ".cache" / "lineside" / "engines"))


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

    def shapes_for(self, per_tile: tuple[int, ...] | None = None
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """MIN, OPT, MAX shapes of an input: the tiles (None), or another per-tile input
        of shape (batch, *per_tile), such as a scored graph's thresholds (batch, K)."""
        if per_tile is None:
            return self.shapes()
        return tuple((batch, *per_tile) for batch in  # type: ignore[return-value]
                     (self.min_batch, self.opt_batch, self.max_batch))

    def covers(self, needed: ShapeProfile) -> bool:
        """Every batch `needed` runs (min..max) fits this profile, for the same tile."""
        return self.min_batch <= needed.min_batch and self.max_batch >= needed.max_batch \
            and (self.channels, self.height, self.width) == \
            (needed.channels, needed.height, needed.width)

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


@dataclass(frozen=True)
class Machine:
    """What an engine depends on in the machine it runs on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "9.0" (H100)
    sm_count: int  # multiprocessors: tells Orin AGX (16), NX (8) and Nano (4/8) apart
    memory_mb: int  # total device memory

    @property
    def cache_tag(self) -> str:
        """For cache file names: an engine or timing cache per GPU kind and TensorRT."""
        return f"sm{self.compute_capability}x{self.sm_count}-trt{self.tensorrt_version}"


@dataclass
class EngineSidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str  # fp16 | int8 | fp32
    onnx_sha256: str  # of the bundle model the engine was built from
    source_key: str = ""  # which bundle model that was (manifest.models key)
    calibration_sha256: str = ""  # INT8: the calibration set the scales came from
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    builder_path: str = ""  # "strongly-typed" | "builder-flags" | "calibrator"
    sm_count: int = 0
    memory_mb: int = 0
    engine_sha256: str = ""  # of the engine file itself: a sidecar belongs to one engine
    workspace_bytes: int = 0
    built: str = ""
    format: int = SIDECAR_FORMAT

    @classmethod
    def for_machine(cls, machine: Machine, **values: Any) -> EngineSidecar:
        return cls(tensorrt_version=machine.tensorrt_version, gpu_name=machine.gpu_name,
                   compute_capability=machine.compute_capability, sm_count=machine.sm_count,
                   memory_mb=machine.memory_mb, **values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, engine_path: Path) -> EngineSidecar:
        path = sidecar_path(engine_path)
        if not path.is_file():
            raise EngineMismatch(f"engine {engine_path} has no sidecar {path.name}: "
                                 "its origin is unknown, so it is not trusted")
        try:
            body = json.loads(path.read_text())
            body["profile"] = ShapeProfile(**body.get("profile", {}))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in body.items() if k in known})
        except (json.JSONDecodeError, TypeError) as exc:
            raise EngineMismatch(f"sidecar {path} is unreadable: {exc}") from None


def sidecar_path(engine_path: Path) -> Path:
    return Path(f"{engine_path}{SIDECAR_SUFFIX}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine_problems(sidecar: EngineSidecar, engine_path: Path, machine: Machine,
                    precision: str, needed: ShapeProfile,
                    models: dict[str, Any]) -> list[str]:
    """Why this engine cannot serve `precision` for a bundle whose models (manifest.models:
    key -> ModelFile) are given, on `machine`, for batches in `needed` (empty: it can)."""
    problems = []
    if sidecar.format != SIDECAR_FORMAT:
        problems.append(f"sidecar format {sidecar.format} is not {SIDECAR_FORMAT} (built by "
                        "an older lineside)")
    for name in ("tensorrt_version", "compute_capability", "gpu_name", "sm_count",
                 "memory_mb"):
        have, want = getattr(sidecar, name), getattr(machine, name)
        if have != want:
            problems.append(f"{name} is {have!r}, this machine has {want!r}")
    if sidecar.precision != precision:
        problems.append(f"precision is {sidecar.precision!r}, {precision!r} is wanted")
    source = models.get(sidecar.source_key)
    if source is None:
        problems.append(f"built from {sidecar.source_key or 'an unnamed model'}, which this "
                        f"bundle does not have ({sorted(models)})")
    elif source.sha256 != sidecar.onnx_sha256:
        problems.append(f"built from another {sidecar.source_key} model (sha256 "
                        f"{sidecar.onnx_sha256[:12]}..., the bundle's is {source.sha256[:12]}...)")
    elif sidecar.builder_path != "calibrator" and \
            sidecar.calibration_sha256 != source.calibration_sha256:
        problems.append("calibrated on another calibration set than its source model")
    if not sidecar.profile.covers(needed):
        problems.append(f"shape profile {sidecar.profile} does not cover {needed}")
    if not engine_path.is_file():
        problems.append(f"engine file {engine_path} is missing")
    elif sidecar.engine_sha256 != sha256_bytes(engine_path.read_bytes()):
        problems.append("the engine file is not the one its sidecar describes (sha256)")
    return problems


def write_engine_files(engine_path: Path, engine: bytes, sidecar: EngineSidecar) -> None:
    """Engine and sidecar into place as one pair: both written under unique temporary
    names and synced before either is renamed, the sidecar naming the engine's sha256."""
    folder = engine_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    sidecar.engine_sha256 = sha256_bytes(engine)
    engine_tmp = write_synced(folder, engine_path.name + ".", engine)
    try:
        sidecar_tmp = write_synced(folder, engine_path.name + ".json.",
                                    sidecar.to_json().encode())
    except BaseException:
        engine_tmp.unlink(missing_ok=True)
        raise
    os.replace(engine_tmp, engine_path)
    os.replace(sidecar_tmp, sidecar_path(engine_path))
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def tensorrt_available() -> tuple[bool, str]:
    """Whether TensorRT and a CUDA GPU are usable here, with the reason when not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt package is not installed (docs/jetson.md)"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return False, "CUDA reports no GPU"
    except ImportError:
        return False, "pycuda is not installed (docs/jetson.md)"
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        return False, f"CUDA is not usable: {exc}"
    return True, ""


def this_machine(device_index: int = 0) -> Machine:
    """The identity of CUDA device `device_index` and the installed TensorRT."""
    import pycuda.driver as cuda
    import tensorrt as trt

    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    sm_count = device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
    return Machine(trt.__version__, device.name(), f"{major}.{minor}", int(sm_count),
                   int(device.total_memory() // (1 << 20)))


def has_builder_precision_flags() -> bool:
    """TensorRT 10 has BuilderFlag.FP16/INT8; TensorRT 11 removed them."""
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "FP16")

"""A CONTRACT FAKE of `tensorrt` (10.x and 11.x) and `pycuda.driver`, for checking our call
sequences where the real libraries cannot be installed (no GPU, no NVIDIA index here).

It is not TensorRT: it computes nothing and no test may claim numerics from it. What it
does reproduce is the API surface and the rules we depend on, taken from the binding
sources (NVIDIA/TensorRT `python/src/infer/pyCore.cpp` and `pyInt8.cpp`, release/10.16
and release/11.0) and from pycuda:
- TensorRT 10 has `BuilderFlag.FP16/INT8`, `IBuilderConfig.int8_calibrator`,
  `set_calibration_profile` and `IInt8EntropyCalibrator2`; TensorRT 11 has none of them
  (networks are strongly typed; `NetworkDefinitionCreationFlag.STRONGLY_TYPED` remains,
  deprecated);
- `IBuilderConfig.set_timing_cache(cache, ignore_mismatch)` and
  `IExecutionContext.set_input_shape(name, shape)` return False instead of raising;
- `build_serialized_network` returns None on failure;
- the network's inputs and outputs are the ONNX graph's (names and types, read from the
  bytes given to the parser); a build fails (returns None) when an input has no shapes in
  the optimisation profile;
- with the INT8 flag and a calibrator, the builder calls `get_batch_size()` and
  `get_batch(names)` with every input's name until it returns None, reading one device
  pointer per name at the calibration profile's OPT shape in that input's dtype;
- pycuda allocates (`pagelocked_empty`, `mem_alloc`) and copies only with a context
  current on the calling thread (`pycuda._driver.LogicError` otherwise).
"""

from __future__ import annotations

import json
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np


# -- pycuda.driver ----------------------------------------------------------------------
class LogicError(RuntimeError):
    """pycuda._driver.LogicError"""


_current = threading.local()


def _stack() -> list:
    if not hasattr(_current, "stack"):
        _current.stack = []
    return _current.stack


def _require_context(what: str) -> None:
    if not _stack():
        raise LogicError(f"cu{what} failed: invalid device context - no currently active "
                         "context?")


class Context:
    def push(self) -> None:
        _stack().append(self)

    def pop(self) -> None:
        if not _stack() or _stack()[-1] is not self:
            raise LogicError("cuCtxPopCurrent failed: invalid context")
        _stack().pop()


@dataclass
class DeviceAllocation:
    size: int
    owner: CudaState
    freed: bool = False
    data: bytes = b""

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        _require_context("MemFree")
        self.freed = True


@dataclass
class CudaState:
    """What the fake GPU saw."""

    name: str = "Orin"
    capability: tuple[int, int] = (8, 7)
    sm_count: int = 16
    memory: int = 64 << 30
    allocations: list[DeviceAllocation] = field(default_factory=list)
    context: Context = field(default_factory=Context)

    def by_pointer(self, pointer: int) -> DeviceAllocation:
        return next(a for a in self.allocations if id(a) == pointer)


def make_pycuda(state: CudaState) -> types.ModuleType:
    driver = types.ModuleType("pycuda.driver")
    driver.LogicError = LogicError

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return state.name

        def compute_capability(self) -> tuple[int, int]:
            return state.capability

        def get_attribute(self, attribute: str) -> int:
            assert attribute == "MULTIPROCESSOR_COUNT"
            return state.sm_count

        def total_memory(self) -> int:
            return state.memory

        def retain_primary_context(self) -> Context:
            return state.context

    def pagelocked_empty(shape, dtype) -> np.ndarray:
        _require_context("MemHostAlloc")
        return np.zeros(shape, dtype)

    def mem_alloc(size: int) -> DeviceAllocation:
        _require_context("MemAlloc")
        allocation = DeviceAllocation(int(size), state)
        state.allocations.append(allocation)
        return allocation

    def memcpy_htod(device: DeviceAllocation, host: np.ndarray) -> None:
        _require_context("MemcpyHtoD")
        device.data = np.ascontiguousarray(host).tobytes()

    def memcpy_htod_async(device: DeviceAllocation, host: np.ndarray, stream: Any) -> None:
        memcpy_htod(device, host)

    def memcpy_dtoh_async(host: np.ndarray, device: DeviceAllocation, stream: Any) -> None:
        _require_context("MemcpyDtoHAsync")

    class Stream:
        def __init__(self) -> None:
            _require_context("StreamCreate")
            self.handle = id(self)

        def synchronize(self) -> None:
            _require_context("StreamSynchronize")

    def mem_get_info() -> tuple[int, int]:
        _require_context("MemGetInfo")
        return state.memory // 2, state.memory

    driver.init = lambda: None
    driver.get_driver_version = lambda: 12060
    driver.mem_get_info = mem_get_info
    driver.Device = Device
    driver.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")
    driver.pagelocked_empty = pagelocked_empty
    driver.mem_alloc = mem_alloc
    driver.memcpy_htod = memcpy_htod
    driver.memcpy_htod_async = memcpy_htod_async
    driver.memcpy_dtoh_async = memcpy_dtoh_async
    driver.Stream = Stream
    return driver


# -- tensorrt ---------------------------------------------------------------------------
class DataType:
    FLOAT, HALF, INT8, INT32, BOOL, UINT8 = "FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"


# ONNX TensorProto element types -> TensorRT DataType, for the types our graphs use.
ONNX_TYPES = {1: DataType.FLOAT, 2: DataType.UINT8, 3: DataType.INT8, 6: DataType.INT32,
              9: DataType.BOOL, 10: DataType.HALF}

NPTYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
           DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}


@dataclass
class BuildRecord:
    """What the fake builder was asked to do."""

    network_flags: int = 0
    flags: set[str] = field(default_factory=set)
    calibration_profile: Any = None
    calibrator_batches: list[tuple[int, str]] = field(default_factory=list)  # (bytes, dtype)
    timing_cache_accepted: list[bool] = field(default_factory=list)


def make_tensorrt(version: str, cuda: CudaState, builds: list[BuildRecord],
                  input_dtype: str = DataType.UINT8,
                  outputs: tuple[str, ...] | None = None,
                  build_delay_s: float = 0.0) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.DataType = DataType
    trt.nptype = lambda dtype: NPTYPES[dtype]

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity: str = "WARNING") -> None:
            self.severity = severity

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    flags = {"GPU_FALLBACK": "GPU_FALLBACK", "REFIT": "REFIT"}
    if major < 11:
        flags.update(FP16="FP16", INT8="INT8")
    trt.BuilderFlag = types.SimpleNamespace(**flags)

    @dataclass
    class Tensor:
        name: str
        dtype: str
        shape: tuple = ()

    class Network:
        def __init__(self, record: BuildRecord) -> None:
            self.record = record
            self.inputs = [Tensor("frames", input_dtype)]
            self.outputs = [Tensor("probabilities", DataType.FLOAT)]

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

    class Parser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            """The graph's inputs and outputs become the network's (bytes that are not
            ONNX keep the defaults: frames in, probabilities out)."""
            import onnx

            try:
                graph = onnx.load_from_string(bytes(data)).graph
            except Exception:
                return bool(data)

            def tensors(values) -> list[Tensor]:
                return [Tensor(v.name, ONNX_TYPES[v.type.tensor_type.elem_type],
                               tuple(d.dim_value or -1 for d in v.type.tensor_type.shape.dim))
                        for v in values]

            self.network.inputs, self.network.outputs = tensors(graph.input), \
                tensors(graph.output)
            return True

        def get_error(self, index: int) -> str:
            return "fake parser error"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, low, opt, high) -> None:
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"TIMING:" + cuda.name.encode()

    class Config:
        def __init__(self, record: BuildRecord) -> None:
            self.record = record
            self.profiles: list[Profile] = []
            self.timing_cache: TimingCache | None = None
            self._calibrator = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def set_flag(self, flag: str) -> None:
            self.record.flags.add(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            ok = not cache.data or cache.data == b"TIMING:" + cuda.name.encode() \
                or ignore_mismatch
            self.record.timing_cache_accepted.append(ok)
            if ok:
                self.timing_cache = cache
            return ok

        def get_timing_cache(self) -> TimingCache:
            return self.timing_cache

    if major < 11:
        def _get(self):
            return self._calibrator

        def _set(self, value):
            self._calibrator = value

        Config.int8_calibrator = property(_get, _set)

        def set_calibration_profile(self, profile: Profile) -> bool:
            self.record.calibration_profile = profile
            return True

        Config.set_calibration_profile = set_calibration_profile

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.record = BuildRecord()
            builds.append(self.record)

        def create_network(self, flags: int = 0) -> Network:
            self.record.network_flags = flags
            return Network(self.record)

        def create_builder_config(self) -> Config:
            return Config(self.record)

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config):
            time.sleep(build_delay_s)  # a real build takes minutes on a Jetson
            calibrator = getattr(config, "_calibrator", None)
            if "INT8" in self.record.flags and calibrator is not None:
                self._calibrate(network, config, calibrator)
            shapes = config.profiles[0].shapes
            if any(t.name not in shapes for t in network.inputs):
                return None  # "input has no shapes in the optimization profile"
            low, _, high = shapes[network.get_input(0).name]
            made = [(t.name, t.dtype) for t in network.outputs] if outputs is None else \
                [(name, DataType.FLOAT) for name in outputs]
            return json.dumps({"fake_engine": True, "flags": sorted(self.record.flags),
                               "min": low, "max": high,
                               "inputs": [(t.name, t.dtype) for t in network.inputs],
                               "outputs": made}).encode()

        def _calibrate(self, network: Network, config: Config, calibrator: Any) -> None:
            """What TensorRT's legacy calibration asks of a Python calibrator (pyInt8.cpp):
            batches at the calibration profile's OPT shape, in the input's dtype."""
            profile = self.record.calibration_profile or config.profiles[0]
            _, opt, _ = profile.shapes[network.get_input(0).name]
            assert calibrator.get_batch_size() == opt[0], "calibrator batch is not OPT"
            calibrator.read_calibration_cache()
            names = [t.name for t in network.inputs]
            while (pointers := calibrator.get_batch(names)) is not None:
                assert len(pointers) == len(names), f"{len(pointers)} pointers for {names}"
                for tensor, pointer in zip(network.inputs, pointers, strict=True):
                    shape = profile.shapes[tensor.name][1]
                    expected = int(np.prod(shape)) * np.dtype(NPTYPES[tensor.dtype]).itemsize
                    allocation = cuda.by_pointer(pointer)
                    assert allocation.size == expected, \
                        f"calibration buffer for {tensor.name} is {allocation.size} bytes, " \
                        f"the OPT input {expected}"
                first = cuda.by_pointer(pointers[0])
                self.record.calibrator_batches.append((len(first.data),
                                                       network.get_input(0).dtype))
            calibrator.write_calibration_cache(b"CALIBRATION-TABLE")

    class ExecutionContext:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape) -> bool:  # False, not an exception
            if name not in self.engine.inputs or \
                    not self.engine.min[0] <= shape[0] <= self.engine.max[0]:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            if name in self.engine.inputs:
                return self.shapes[name]
            frames = self.shapes[self.engine.names[0]]
            return (frames[0], 4, *frames[2:]) if name in ("probabilities", "scores") \
                else (frames[0], 4)

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            _require_context("LaunchKernel")
            batches = {shape[0] for shape in self.shapes.values()}
            return set(self.addresses) == set(self.engine.names) and \
                set(self.shapes) == set(self.engine.inputs) and len(batches) == 1

    class Engine:
        def __init__(self, body: dict) -> None:
            self.min, self.max = tuple(body["min"]), tuple(body["max"])
            self.inputs = dict(body.get("inputs", [("frames", DataType.UINT8)]))
            self.outputs = dict(body["outputs"])
            self.names = [*self.inputs, *self.outputs]

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> str:
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> str:
            return {**self.inputs, **self.outputs}[name]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple]:
            return [self.min, self.min, self.max]

        def create_execution_context(self) -> ExecutionContext:
            _require_context("CtxCreate")
            return ExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            try:
                return Engine(json.loads(bytes(data)))
            except (ValueError, KeyError):
                return None  # as TensorRT does for bytes that are not its engine

    trt.Builder = Builder
    trt.OnnxParser = Parser
    trt.Runtime = Runtime
    return trt


def install(monkeypatch, version: str = "10.3.0", outputs: tuple[str, ...] | None = None,
            build_delay_s: float = 0.0, **cuda: Any) -> tuple[CudaState, list[BuildRecord]]:
    """Put the fakes where `import tensorrt` and `import pycuda.driver` find them."""
    import sys

    state, builds = CudaState(**cuda), []
    driver = make_pycuda(state)
    package = types.ModuleType("pycuda")
    package.driver = driver
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "tensorrt",
                        make_tensorrt(version, state, builds, outputs=outputs,
                                      build_delay_s=build_delay_s))
    return state, builds

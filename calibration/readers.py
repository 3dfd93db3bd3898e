"""Calibration readers: the same set feeds ONNX Runtime's quantiser and TensorRT 10's
implicit INT8 calibration. Runtimes are imported inside, so this module imports anywhere."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lineside.calibration.calibration_set import CalibrationSet

log = logging.getLogger("lineside.calibration")


def onnxruntime_reader(calibration: CalibrationSet, input_name: str, batch: int = 16) -> Any:
    """An onnxruntime.quantization.CalibrationDataReader over the set's tiles."""
    from onnxruntime.quantization import CalibrationDataReader

    class SetReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = calibration.batches(batch)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tiles = next(self._batches, None)
            return None if tiles is None else {input_name: np.ascontiguousarray(tiles)}

        def rewind(self) -> None:
            self._batches = calibration.batches(batch)

    return SetReader()


def tensorrt_entropy_calibrator(calibration: CalibrationSet, cache_path: Path, batch: int,
                                dtype: Any = np.uint8, context: Any = None,
                                constants: dict[str, np.ndarray] | None = None) -> Any:
    """A TensorRT 10 IInt8EntropyCalibrator2 fed from pinned pycuda buffers.

    `batch` is the OPT batch of the calibration profile (a dynamic-shape network is
    calibrated at that shape: loader.build_engine sets it with `set_calibration_profile`);
    `dtype` is the network input's (`trt.nptype(network.get_input(0).dtype)`: uint8 for a
    lineside bundle, whose graph takes raw frames). pycuda needs a CUDA context on the
    thread that allocates and copies, and TensorRT calls `get_batch` from the builder's
    thread: the device's primary context (the one TensorRT uses) is pushed around each.
    `constants` gives the network's other inputs by name, one per-tile row each (a scored
    graph's thresholds), the same for every batch; the tiles are every other input.

    The calibration cache is written beside the engine and reused: a second build on the
    same device does not recalibrate, and a missing cache is logged, never silent.
    TensorRT 11 removed implicit calibrators; there INT8 comes from the QDQ ONNX instead.
    """
    import pycuda.driver as cuda
    import tensorrt as trt

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise RuntimeError(f"TensorRT {trt.__version__} has no implicit INT8 calibrators: "
                           "build the INT8 engine from the bundle's QDQ ONNX")
    manifest = calibration.manifest
    shape = (batch, manifest.channels, manifest.tile_height, manifest.tile_width)
    if context is None:
        cuda.init()
        context = cuda.Device(0).retain_primary_context()

    @contextlib.contextmanager
    def pushed() -> Iterator[None]:
        context.push()
        try:
            yield
        finally:
            context.pop()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            with pushed():
                self.host = cuda.pagelocked_empty(shape, dtype)
                self.device = cuda.mem_alloc(self.host.nbytes)
                self.fixed = {}  # name -> device copy of its constant batch
                for name, row in (constants or {}).items():
                    values = np.ascontiguousarray(np.broadcast_to(row, (batch, *row.shape)))
                    self.fixed[name] = cuda.mem_alloc(values.nbytes)
                    cuda.memcpy_htod(self.fixed[name], values)
            self.batches = calibration.batches(batch)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            tiles = next(self.batches, None)
            if tiles is None or len(tiles) < batch:
                return None  # a short last batch would not fill the OPT shape
            np.copyto(self.host, tiles, casting="same_kind")
            with pushed():
                cuda.memcpy_htod(self.device, self.host)
            return [int(self.fixed[name]) if name in self.fixed else int(self.device)
                    for name in names]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path.exists():
                log.info("using INT8 calibration cache %s", cache_path)
                return cache_path.read_bytes()
            log.info("no calibration cache at %s: calibrating from %s", cache_path,
                     calibration.root)
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            cache_path.write_bytes(bytes(cache))

        def release(self) -> None:
            with pushed():
                self.device.free()
                for device in self.fixed.values():
                    device.free()

    return EntropyCalibrator()

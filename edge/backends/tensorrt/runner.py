"""Native TensorRT runner with pycuda: pinned host buffers, one CUDA stream, async copies.

The engine comes from the loader (loader.resolve_engine): the bundle's own when its
sidecar matches this machine, else the engine cache, else built once into the cache.
pycuda uses the device's primary context, the one TensorRT uses; it is pushed around each
call because the daemon creates the backend on one thread and runs it on another.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lineside.edge.backends.base import Backend, BackendUnavailable, Outputs
from lineside.edge.backends.tensorrt.engine import (
    engine_cache_dir,
    tensorrt_available,
    this_machine,
)
from lineside.edge.backends.tensorrt.loader import find_engine, resolve_engine
from lineside.edge.bundle import Bundle
from lineside.edge.variants import VariantUnavailable

log = logging.getLogger("lineside.edge.tensorrt")

class EngineNotBuilt(BackendUnavailable):
    """No engine matches here yet; one can be built (off the hot path: the daemon serves
    on ONNX Runtime meanwhile, lineside.edge.pipeline.engine_build)."""

    def __init__(self, reason: str, precision: str) -> None:
        super().__init__(reason)
        self.precision = precision


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp16",
                 cache_dir: Path | None = None, build: bool = True) -> None:
        """`build=False`: use an engine that exists (the bundle's or the cache's) or raise
        EngineNotBuilt; never spend minutes building on the caller's thread."""
        ok, reason = tensorrt_available()
        if not ok:
            raise BackendUnavailable(f"backend tensorrt: {reason}")
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        self._context = cuda.Device(0).retain_primary_context()
        self._context.push()
        try:
            cache = cache_dir or engine_cache_dir()
            try:
                if build:
                    self.engine_path = resolve_engine(bundle, precision, cache)
                else:
                    found = find_engine(bundle, precision, cache, this_machine())
                    if found is None:
                        raise EngineNotBuilt(f"no {precision} engine for this GPU yet (one can "
                                             "be built from the bundle)", precision)
                    self.engine_path = found
            except VariantUnavailable as exc:  # `auto` then tries the next backend
                raise BackendUnavailable(f"backend tensorrt: {exc}") from exc
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self.engine is None:
                raise BackendUnavailable(f"TensorRT could not load {self.engine_path}")
            self.execution = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names
                      if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            manifest = bundle.manifest
            if sorted(inputs) != sorted(manifest.graph_inputs) or \
                    sorted(outputs) != sorted(manifest.graph_outputs):
                raise BackendUnavailable(
                    f"engine {self.engine_path} has inputs {inputs} and outputs {outputs}, "
                    f"the bundle's model {manifest.graph_inputs} and {manifest.graph_outputs}")
            self.input_names, self.output_names = manifest.graph_inputs, manifest.graph_outputs
            low, _, high = self.engine.get_tensor_profile_shape(self.input_names[0], 0)
            if int(low[0]) > 1:
                raise BackendUnavailable(f"engine {self.engine_path} runs batches of "
                                         f"{int(low[0])} or more tiles; a frame may need 1")
            self.max_batch = int(high[0])
            classes = len(manifest.classes)
            per_tile = {manifest.input_name: (manifest.in_channels, manifest.tile_height,
                                              manifest.tile_width), "thresholds": (classes,)}
            self.default_thresholds = np.asarray(manifest.graph_thresholds or [], np.float32)
            # Pinned host buffers and device buffers sized for the largest batch, once.
            self.host_in, self.device_in = {}, {}
            for name in self.input_names:
                host = cuda.pagelocked_empty((self.max_batch, *per_tile[name]),
                                             trt.nptype(self.engine.get_tensor_dtype(name)))
                self.host_in[name], self.device_in[name] = host, cuda.mem_alloc(host.nbytes)
                self._set_shape(name, host.shape)
            self.host_out, self.device_out = [], []
            for name in self.output_names:
                shape = tuple(self.execution.get_tensor_shape(name))
                host = cuda.pagelocked_empty(shape, trt.nptype(self.engine.get_tensor_dtype(name)))
                self.host_out.append(host)
                self.device_out.append(cuda.mem_alloc(host.nbytes))
            self.stream = cuda.Stream()
            for name in self.input_names:
                self.execution.set_tensor_address(name, int(self.device_in[name]))
            for name, device in zip(self.output_names, self.device_out, strict=True):
                self.execution.set_tensor_address(name, int(device))
            self._version = trt.__version__
            self._precision = precision
        finally:
            self._context.pop()

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        # set_input_shape returns False (it does not raise) for a shape outside the profile.
        if not self.execution.set_input_shape(name, shape):
            raise RuntimeError(f"TensorRT refused input shape {shape} for {name} of "
                               f"{self.engine_path}")

    def infer(self, tiles: np.ndarray, thresholds: np.ndarray | None = None) -> Outputs:
        cuda = self._cuda
        if len(self.input_names) > 1 and thresholds is None:
            thresholds = np.broadcast_to(self.default_thresholds,
                                         (len(tiles), len(self.default_thresholds)))
        feeds = dict(zip(self.input_names, (tiles, thresholds), strict=False))
        chunks: list[list[np.ndarray]] = [[] for _ in self.output_names]
        self._context.push()
        try:
            for start in range(0, len(tiles), self.max_batch):
                n = len(tiles[start:start + self.max_batch])
                for name, values in feeds.items():
                    chunk = values[start:start + n]
                    np.copyto(self.host_in[name][:n], chunk, casting="unsafe")
                    self._set_shape(name, (n, *self.host_in[name].shape[1:]))
                    # Slices along the batch axis of a pinned array are pinned and
                    # contiguous: only the n tiles in use cross the bus.
                    cuda.memcpy_htod_async(self.device_in[name], self.host_in[name][:n],
                                           self.stream)
                if not self.execution.execute_async_v3(self.stream.handle):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                for host, device in zip(self.host_out, self.device_out, strict=True):
                    cuda.memcpy_dtoh_async(host[:n], device, self.stream)
                self.stream.synchronize()
                for k, host in enumerate(self.host_out):
                    chunks[k].append(host[:n].copy())
        finally:
            self._context.pop()
        return {name: np.concatenate(c) for name, c in zip(self.output_names, chunks,
                                                           strict=True)}

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "tensorrt": self._version, "precision": self._precision,
                "engine": str(self.engine_path)}

    def close(self) -> None:
        """Free the engine, buffers and stream, on the thread that ran them (the infer
        stage closes a swapped-out model after its last batch)."""
        if getattr(self, "engine", None) is None:
            return
        self._context.push()
        try:
            for device in self.device_in.values():
                device.free()
            for device in self.device_out:
                device.free()
            self.execution = self.engine = None
            self.stream = None
        finally:
            self._context.pop()

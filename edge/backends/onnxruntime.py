"""ONNX Runtime backend: the CPU path that every machine has, and the CUDA/TensorRT EPs.

Which ONNX file runs is decided by the variant table (lineside.edge.variants), by the
factory in lineside.edge.backends; this module runs the file it is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineside.edge.backends.base import (
    THRESHOLDS,
    Backend,
    BackendUnavailable,
    Outputs,
    bucket_size,
    pad_batch,
)

# Execution providers per backend name, in ONNX Runtime's order of preference.
PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


# The TensorRT provider builds one engine per input-shape range: give it the whole range
# the daemon runs (padded power-of-two batches, base.bucket_size) so that it builds once,
# and keep engines and timing caches on disk so that it builds once per machine, not at
# every start and again for every warm-up batch size (minutes on an Orin).
TRT_PROFILE_BATCHES = (1, 8, 32)  # min, opt, max tiles per call


def tensorrt_provider_options(input_name: str, tile: tuple[int, int, int], precision: str,
                              cache_dir: Path, classes: int = 0) -> dict[str, str]:
    """ONNX Runtime TensorRT EP options: engine and timing caches, the batch profile (of
    the tiles and, for a scored graph of `classes` classes, of its thresholds), and the
    precision flag matching the graph (the FP16 ONNX, or the symmetric QDQ one)."""
    def shapes(n: int) -> str:
        tiles = f"{input_name}:{n}x{tile[0]}x{tile[1]}x{tile[2]}"
        return f"{tiles},{THRESHOLDS}:{n}x{classes}" if classes else tiles

    low, opt, high = (shapes(n) for n in TRT_PROFILE_BATCHES)
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
            "trt_profile_min_shapes": low, "trt_profile_opt_shapes": opt,
            "trt_profile_max_shapes": high,
            "trt_fp16_enable": str(precision == "fp16"),
            "trt_int8_enable": str(precision == "int8")}


class OnnxRuntimeBackend(Backend):
    def __init__(self, model_path: Path, name: str = "ort-cpu", threads: int = 0,
                 precision: str = "fp32", tile: tuple[int, int, int] | None = None,
                 input_name: str = "frames", thresholds: list[float] | None = None,
                 profile_prefix: str = "") -> None:
        """`thresholds`: the bundle's, for a scored graph (fed when a call gives none);
        `profile_prefix`: turn on ONNX Runtime's profiler, writing there (edge-bench)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed: pip install 'lineside[cpu]' "
                "(or 'lineside[gpu]' on an NVIDIA machine)") from exc
        wanted = PROVIDERS[name]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise BackendUnavailable(
                f"backend {name} needs ONNX Runtime's {wanted[0]}, this install has {available}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting after a call: the cores ONNX Runtime's pool would spin on are the
        # ones the daemon decodes, post-processes and publishes on, and a second session
        # (a screening classifier) runs on next (measured: docs/performance.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if name != "ort-cpu":  # on a GPU the CPU pool only handles shapes and copies
            options.intra_op_num_threads = threads or 1
        elif threads:
            options.intra_op_num_threads = threads
        self.name = name
        self.bucketed = name != "ort-cpu"  # a CPU has no per-shape kernel search to avoid
        providers: list = [p for p in wanted if p in available]
        if name == "ort-trt" and tile is not None:
            from lineside.edge.backends.tensorrt.engine import engine_cache_dir

            cache = engine_cache_dir() / "ort-trt"
            cache.mkdir(parents=True, exist_ok=True)
            providers[0] = (providers[0], tensorrt_provider_options(
                input_name, tile, precision, cache, len(thresholds or [])))
        self.session = ort.InferenceSession(str(model_path), sess_options=options,
                                            providers=providers)
        # ONNX Runtime lists the TensorRT and CUDA providers whenever its GPU build is
        # installed, and when their libraries fail to load it quietly falls back to the
        # next provider. A line must not run on the CPU while the config says GPU.
        running = self.session.get_providers()
        if wanted[0] not in running:
            raise BackendUnavailable(
                f"backend {name}: ONNX Runtime could not start {wanted[0]} (its CUDA, cuDNN "
                f"or TensorRT libraries are missing or do not match) and fell back to "
                f"{running}; see ONNX Runtime's log above for the library it could not load")
        self.input_name = self.session.get_inputs()[0].name
        self.takes_thresholds = any(i.name == THRESHOLDS for i in self.session.get_inputs())
        self.default_thresholds = np.asarray(thresholds or [], np.float32)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._version = ort.__version__
        # One RunOptions for every call: `interrupt` sets its terminate flag, which
        # ONNX Runtime checks between nodes of the call that is running.
        self._run_options = ort.RunOptions()

    def infer(self, tiles: np.ndarray, thresholds: np.ndarray | None = None) -> Outputs:
        count = len(tiles)
        feeds = {self.input_name: pad_batch(tiles) if self.bucketed else tiles}
        if self.takes_thresholds:
            if thresholds is None:
                if not len(self.default_thresholds):
                    raise ValueError("this graph takes per-tile thresholds and none were "
                                     "given (create the backend with the bundle's)")
                thresholds = np.broadcast_to(self.default_thresholds, (count,
                                             len(self.default_thresholds)))
            thresholds = np.ascontiguousarray(thresholds, np.float32)
            feeds[THRESHOLDS] = pad_batch(thresholds) if self.bucketed else thresholds
        self._run_options.terminate = False
        results = self.session.run(self.output_names, feeds, self._run_options)
        return {name: r[:count] for name, r in zip(self.output_names, results, strict=True)}

    def interrupt(self) -> bool:
        self._run_options.terminate = True
        return True

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        sizes = [1]
        while self.bucketed and sizes[-1] < bucket_size(max_batch):
            sizes.append(sizes[-1] * 2)
        for size in sizes:
            self.infer(np.zeros((size, *tile), np.uint8))  # the bundle's thresholds

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "onnxruntime": self._version,
                "providers": ",".join(self.session.get_providers())}

    def close(self) -> None:
        del self.session

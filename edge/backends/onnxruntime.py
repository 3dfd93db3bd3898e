"""ONNX Runtime backend: the CPU path that every machine has, and the CUDA/TensorRT EPs.

Which ONNX file runs is decided by the variant table (lineside.edge.variants), by the
factory in lineside.edge.backends; this module runs the file it is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineside.edge.backends.base import (
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


class OnnxRuntimeBackend(Backend):
    def __init__(self, model_path: Path, name: str = "ort-cpu", threads: int = 0) -> None:
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
        if name != "ort-cpu":  # on a GPU the CPU pool only handles shapes and copies
            options.intra_op_num_threads = threads or 1
        elif threads:
            options.intra_op_num_threads = threads
        self.name = name
        self.bucketed = name != "ort-cpu"  # a CPU has no per-shape kernel search to avoid
        self.session = ort.InferenceSession(str(model_path), sess_options=options,
                                            providers=[p for p in wanted if p in available])
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
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._version = ort.__version__

    def infer(self, tiles: np.ndarray) -> Outputs:
        count = len(tiles)
        if self.bucketed:  # a few fixed shapes on the GPU, see base.bucket_size
            tiles = pad_batch(tiles)
        results = self.session.run(self.output_names, {self.input_name: tiles})
        return {name: np.asarray(r[:count], dtype=np.float32)
                for name, r in zip(self.output_names, results, strict=True)}

    def warm_up(self, tile: tuple[int, int, int], max_batch: int) -> None:
        sizes = [1]
        while self.bucketed and sizes[-1] < bucket_size(max_batch):
            sizes.append(sizes[-1] * 2)
        for size in sizes:
            self.infer(np.zeros((size, *tile), np.uint8))

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "onnxruntime": self._version,
                "providers": ",".join(self.session.get_providers())}

    def close(self) -> None:
        del self.session

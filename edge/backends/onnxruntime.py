"""ONNX Runtime backend: the CPU path that every machine has, and the CUDA/TensorRT EPs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineside.edge.backends.base import Backend, BackendUnavailable

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
        if threads:
            options.intra_op_num_threads = threads
        self.name = name
        self.session = ort.InferenceSession(str(model_path), sess_options=options,
                                            providers=[p for p in wanted if p in available])
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = outputs[0]
        self.presence_name = outputs[1] if len(outputs) > 1 else None
        self._version = ort.__version__

    def infer(self, tiles: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run([self.output_name], {self.input_name: tiles})
        return np.asarray(probabilities, dtype=np.float32)

    def infer_with_presence(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.presence_name is None:
            return self.infer(tiles), None
        probabilities, presence = self.session.run([self.output_name, self.presence_name],
                                                   {self.input_name: tiles})
        return (np.asarray(probabilities, dtype=np.float32),
                np.asarray(presence, dtype=np.float32))

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "onnxruntime": self._version,
                "providers": ",".join(self.session.get_providers())}

    def close(self) -> None:
        del self.session

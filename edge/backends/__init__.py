"""Inference backends behind one interface; `create_backend` is the one way in.

Optional runtimes are imported inside each backend, so a CPU-only machine imports this
package without TensorRT or CUDA present.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lineside.edge.backends.base import Backend, BackendUnavailable


def _onnxruntime(name: str) -> Callable[[Path, int], Backend]:
    def factory(model_path: Path, threads: int) -> Backend:
        from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, name=name, threads=threads)

    return factory


BACKENDS: dict[str, Callable[[Path, int], Backend]] = {
    "ort-cpu": _onnxruntime("ort-cpu"),
    "ort-cuda": _onnxruntime("ort-cuda"),
    "ort-trt": _onnxruntime("ort-trt"),
}

# `auto` tries these in order and takes the first that loads.
AUTO_ORDER = ("ort-trt", "ort-cuda", "ort-cpu")


def create_backend(name: str, model_path: Path, threads: int = 0) -> Backend:
    """Create backend `name` (or the best available for `auto`) for an ONNX model."""
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER:
            try:
                return BACKENDS[candidate](model_path, threads)
            except BackendUnavailable as exc:
                reasons.append(f"{candidate}: {exc}")
        raise BackendUnavailable("no backend could load: " + "; ".join(reasons))
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](model_path, threads)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend"]

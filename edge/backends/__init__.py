"""Inference backends behind one interface; `create_backend` is the one way in.

Optional runtimes are imported inside each backend, so a CPU-only machine imports this
package without TensorRT or CUDA present.
"""

from __future__ import annotations

from collections.abc import Callable

from lineside.edge.backends.base import Backend, BackendUnavailable
from lineside.edge.bundle import Bundle

Factory = Callable[[Bundle, str, int], Backend]


def _onnxruntime(name: str) -> Factory:
    def factory(bundle: Bundle, precision: str, threads: int) -> Backend:
        from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend

        # TensorRT accepts only the symmetric QDQ form; the CPU runs the U8S8 one.
        key = "int8-trt" if precision == "int8" and name != "ort-cpu" else precision
        return OnnxRuntimeBackend(bundle.model_path(key), name=name, threads=threads)

    return factory


def _tensorrt(bundle: Bundle, precision: str, threads: int) -> Backend:
    from lineside.edge.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(bundle, precision)


BACKENDS: dict[str, Factory] = {
    "tensorrt": _tensorrt,
    "ort-trt": _onnxruntime("ort-trt"),
    "ort-cuda": _onnxruntime("ort-cuda"),
    "ort-cpu": _onnxruntime("ort-cpu"),
}

# `auto` tries these in order and takes the first that loads.
AUTO_ORDER = ("tensorrt", "ort-trt", "ort-cuda", "ort-cpu")


def create_backend(name: str, bundle: Bundle, precision: str = "fp32",
                   threads: int = 0) -> Backend:
    """Create backend `name` (or the best available for `auto`) for a bundle's model."""
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER:
            try:
                return BACKENDS[candidate](bundle, precision, threads)
            except BackendUnavailable as exc:
                reasons.append(f"{candidate}: {exc}")
        raise BackendUnavailable("no backend could load: " + "; ".join(reasons))
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](bundle, precision, threads)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend"]

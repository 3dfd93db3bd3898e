"""Inference backends behind one interface; `create_backend` is the one way in.

| name | runs | which file (lineside.edge.variants) |
|---|---|---|
| tensorrt | native TensorRT + pycuda (tensorrt/) | an engine, found or built by its loader |
| ort-trt | ONNX Runtime, TensorRT provider | `onnx_runtime_variant(precision, "ort-trt")` |
| ort-cuda | ONNX Runtime, CUDA provider (no int8) | `onnx_runtime_variant(precision, "ort-cuda")` |
| ort-cpu | ONNX Runtime on the CPU | `onnx_runtime_variant(precision, "ort-cpu")` |

Optional runtimes are imported inside each factory, so a CPU-only machine imports this
package without TensorRT or CUDA present. To add a backend: a module with a `Backend`
subclass, a factory here, and its name in lineside.edge.config.BACKENDS.
"""

from __future__ import annotations

from collections.abc import Callable

from lineside.edge.backends.base import Backend, BackendUnavailable
from lineside.edge.bundle import Bundle
from lineside.edge.config import BACKENDS as BACKEND_NAMES
from lineside.edge.variants import VariantUnavailable, onnx_runtime_variant

# (bundle, precision, threads, build_engines) -> a backend. `build_engines=False`: a
# backend that would have to build first (a TensorRT engine) raises EngineNotBuilt.
Factory = Callable[[Bundle, str, int, bool], Backend]


def _onnxruntime(name: str) -> Factory:
    def factory(bundle: Bundle, precision: str, threads: int, build_engines: bool) -> Backend:
        from lineside.edge.backends.onnxruntime import OnnxRuntimeBackend

        # A precision picks the device's file; an ONNX variant key (edge-bench) that file.
        try:
            variant = onnx_runtime_variant(precision, name)
        except VariantUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc
        if variant.key not in bundle.manifest.models:  # `auto` then tries the next backend
            raise BackendUnavailable(f"backend {name} runs {precision} from the bundle's "
                                     f"{variant.key} model, which {bundle.root} does not have "
                                     f"({sorted(bundle.manifest.models)})")
        return OnnxRuntimeBackend(bundle.model_path(variant.key), name=name, threads=threads,
                                  precision=variant.precision,
                                  tile=(bundle.manifest.in_channels,
                                        bundle.manifest.tile_height,
                                        bundle.manifest.tile_width),
                                  input_name=bundle.manifest.input_name,
                                  thresholds=bundle.manifest.graph_thresholds)

    return factory


def _tensorrt(bundle: Bundle, precision: str, threads: int, build_engines: bool) -> Backend:
    from lineside.edge.backends.tensorrt.runner import TensorRTBackend

    return TensorRTBackend(bundle, precision, build=build_engines)


BACKENDS: dict[str, Factory] = {
    "tensorrt": _tensorrt,
    "ort-trt": _onnxruntime("ort-trt"),
    "ort-cuda": _onnxruntime("ort-cuda"),
    "ort-cpu": _onnxruntime("ort-cpu"),
}
assert tuple(BACKENDS) == BACKEND_NAMES, "config.BACKENDS and the registry must agree"


def create_backend(name: str, bundle: Bundle, precision: str = "fp32", threads: int = 0,
                   build_engines: bool = True, skip: tuple[str, ...] = ()) -> Backend:
    """Create backend `name` (or the first that loads, in BACKENDS order and not in
    `skip`, for `auto`)."""
    if name == "auto":
        reasons = []
        for candidate, factory in BACKENDS.items():
            if candidate in skip:
                continue
            try:
                return factory(bundle, precision, threads, build_engines)
            except BackendUnavailable as exc:
                reasons.append(f"{candidate}: {exc}")
        raise BackendUnavailable("no backend could load: " + "; ".join(reasons))
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](bundle, precision, threads, build_engines)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend"]

"""Backends: ONNX Runtime on the CPU always; CUDA and TensorRT where a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

from lineside.edge.backends import BackendUnavailable, create_backend
from lineside.edge.backends.onnxruntime import PROVIDERS
from lineside.edge.backends.tensorrt.engine import (
    EngineSidecar,
    Machine,
    ShapeProfile,
    engine_problems,
    tensorrt_available,
    write_engine_files,
)
from lineside.edge.bundle import ModelFile, load_bundle
from tests.helpers import assert_outputs_close

ORIN = Machine("10.3.0", "Orin", "8.7", 16, 61_440)
MODELS = {"fp16": ModelFile("model_fp16.onnx", "ab" * 32, "fp16")}


def test_engine_sidecar_round_trip_and_mismatch_reasons(tmp_path):
    engine = tmp_path / "m.engine"
    profile = ShapeProfile(1, 8, 16)
    written = EngineSidecar.for_machine(ORIN, precision="fp16", onnx_sha256="ab" * 32,
                                        source_key="fp16", profile=profile)
    write_engine_files(engine, b"engine", written)
    read = EngineSidecar.read(engine)
    assert read == written
    assert engine_problems(read, engine, ORIN, "fp16", profile, MODELS) == []
    other = Machine("11.0.0", "H200", "9.0", 132, 143_771)
    problems = engine_problems(read, engine, other, "fp16", ShapeProfile(1, 8, 32), MODELS)
    for reason in ("tensorrt_version", "compute_capability", "gpu_name", "sm_count",
                   "memory_mb", "profile"):
        assert any(reason in p for p in problems), reason
    another_model = {"fp16": ModelFile("model_fp16.onnx", "cd" * 32, "fp16")}
    assert engine_problems(read, engine, ORIN, "fp16", profile, another_model)


def test_engine_without_sidecar_is_not_trusted(tmp_path):
    with pytest.raises(Exception, match="no sidecar"):
        EngineSidecar.read(tmp_path / "orphan.engine")


def test_batch_profile_parsing():
    assert ShapeProfile.parse("1:4:8", 1, 256, 256).shapes()[2] == (8, 1, 256, 256)
    for bad in ("8:4:1", "1:2", "a:b:c", "0:1:2"):
        with pytest.raises(ValueError):
            ShapeProfile.parse(bad, 1, 256, 256)


@pytest.mark.slow
def test_auto_falls_back_to_the_cpu_here(trained_bundle):
    backend = create_backend("auto", load_bundle(trained_bundle))
    assert backend.describe()["backend"] in ("tensorrt", "ort-trt", "ort-cuda", "ort-cpu")
    tiles = np.zeros((2, 1, 256, 256), np.uint8)
    assert backend.infer(tiles)["scores"].shape == (2, 4, 256, 256)


def test_unknown_backend_lists_the_valid_ones(trained_bundle):
    with pytest.raises(ValueError, match="ort-cpu"):
        create_backend("openvino", load_bundle(trained_bundle))


def _gpu_reference(bundle_path):
    bundle = load_bundle(bundle_path)
    tiles = np.random.default_rng(0).integers(0, 256, (5, 1, 256, 256), np.uint8)
    expected = create_backend("ort-cpu", bundle).infer(tiles)
    return bundle, tiles, expected


# Decided at collection, so that the bundles these tests need are not built for nothing.
TENSORRT_OK, TENSORRT_REASON = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not TENSORRT_OK,
                                    reason=f"TensorRT backend unavailable here: {TENSORRT_REASON}")


@pytest.fixture(scope="module")
def fp16_bundle(trained_bundle, tmp_path_factory):
    """The trained MiniUNet exported with its FP16 variant (no INT8: quick)."""
    from tests.helpers import run_module

    bundle = tmp_path_factory.mktemp("fp16") / "bundle"
    run_module("lineside.export.cli", str(trained_bundle.parent / "mini.pt"), "-o",
               str(bundle), "--fp16")
    return bundle


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt"])
def test_onnxruntime_gpu_providers_match_the_cpu(trained_bundle, name):
    bundle, tiles, expected = _gpu_reference(trained_bundle)
    try:
        backend = create_backend(name, bundle)
    except BackendUnavailable as exc:
        pytest.skip(f"{name} unavailable here: {exc}")
    assert backend.session.get_providers()[0] == PROVIDERS[name][0]  # no silent fallback
    assert_outputs_close(backend.infer(tiles), expected, 1e-2)


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


# Decided at collection too, so the FP16 export the test needs is not made for nothing.
needs_ort_cuda = pytest.mark.skipif("CUDAExecutionProvider" not in _ort_providers(),
                                    reason="ONNX Runtime here has no CUDA provider "
                                    "(onnxruntime, not onnxruntime-gpu, or no GPU)")


@pytest.mark.gpu
@needs_ort_cuda
def test_onnxruntime_cuda_runs_the_fp16_model_close_to_fp32_on_the_cpu(fp16_bundle):
    bundle, tiles, expected = _gpu_reference(fp16_bundle)
    try:
        backend = create_backend("ort-cuda", bundle, "fp16")
    except BackendUnavailable as exc:
        pytest.skip(f"ort-cuda unavailable here: {exc}")
    assert_outputs_close(backend.infer(tiles), expected, 2e-2)


@pytest.mark.gpu
@needs_tensorrt
def test_native_tensorrt_fp32_engine_matches_onnxruntime(trained_bundle, tmp_path):
    from lineside.edge.backends.tensorrt.runner import TensorRTBackend

    bundle, tiles, expected = _gpu_reference(trained_bundle)
    backend = TensorRTBackend(bundle, "fp32", cache_dir=tmp_path)
    assert backend.engine_path.exists()
    sidecar = EngineSidecar.read(backend.engine_path)
    assert sidecar.precision == "fp32"
    assert_outputs_close(backend.infer(tiles), expected, 1e-2)
    built = backend.engine_path.stat().st_mtime_ns
    # A second start finds the cached engine instead of rebuilding: the very same file.
    again = TensorRTBackend(bundle, "fp32", cache_dir=tmp_path)
    assert again.engine_path == backend.engine_path
    assert again.engine_path.stat().st_mtime_ns == built
    assert EngineSidecar.read(again.engine_path).engine_sha256 == sidecar.engine_sha256


@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision, tolerance", [("fp16", 2e-2), ("int8", 0.1)])
def test_native_tensorrt_engines_from_fp16_and_qdq_onnx_match_onnxruntime(
        quantised_bundle, tmp_path, precision, tolerance):
    from lineside.edge.backends.tensorrt.runner import TensorRTBackend

    bundle, tiles, expected = _gpu_reference(quantised_bundle)
    backend = TensorRTBackend(bundle, precision, cache_dir=tmp_path)
    sidecar = EngineSidecar.read(backend.engine_path)
    assert sidecar.precision == precision and sidecar.builder_path == "strongly-typed"
    source = "fp16" if precision == "fp16" else "int8-trt"
    assert sidecar.onnx_sha256 == bundle.manifest.models[source].sha256
    assert_outputs_close(backend.infer(tiles), expected, tolerance)

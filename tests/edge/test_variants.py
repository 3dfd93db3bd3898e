"""The one table of model variants: which file a precision uses where, and how an engine
is built (our decision logic; TensorRT itself is not needed here)."""

from __future__ import annotations

import pytest

from lineside.edge.variants import (
    BUILDER_FLAGS,
    CALIBRATOR,
    STRONGLY_TYPED,
    VARIANTS,
    VariantUnavailable,
    engine_recipe,
    onnx_for,
    onnx_variant,
    variant,
)

EXPORTED = {"fp32", "fp16", "int8", "int8-trt"}


def test_the_table_has_one_row_per_key_and_file():
    assert len({v.key for v in VARIANTS}) == len({v.file_name for v in VARIANTS}) == \
        len(VARIANTS)
    assert variant("int8-trt").file_name == "model_int8_trt.onnx"
    with pytest.raises(VariantUnavailable, match="known"):
        variant("int4")


def test_each_device_gets_its_own_int8_graph():
    assert onnx_variant("int8", "cpu").key == "int8"
    assert onnx_variant("int8", "gpu").key == "int8-trt"
    assert onnx_variant("fp16", "cpu").key == onnx_variant("fp16", "gpu").key == "fp16"
    assert onnx_for("int8-trt", "cpu").key == "int8-trt"  # named explicitly (edge-bench)
    with pytest.raises(VariantUnavailable):
        onnx_for("trt-int8", "cpu")  # an engine is not an ONNX file


@pytest.mark.parametrize("flags", [True, False])  # TensorRT 10 / 11
def test_engines_are_built_strongly_typed_from_the_precision_s_own_graph(flags):
    for precision, source in (("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8-trt")):
        recipe = engine_recipe(precision, EXPORTED, precision_flags=flags)
        assert (recipe.source.key, recipe.builder_path) == (source, STRONGLY_TYPED)


def test_without_the_precision_s_graph_only_tensorrt_10_builds_and_int8_needs_calibration():
    only_fp32 = {"fp32"}
    recipe = engine_recipe("fp16", only_fp32, precision_flags=True)
    assert (recipe.source.key, recipe.builder_path) == ("fp32", BUILDER_FLAGS)
    with pytest.raises(VariantUnavailable, match=r"TensorRT \(11\+\)"):
        engine_recipe("fp16", only_fp32, precision_flags=False)
    # The defect this table removed: an INT8 engine from the FP32 graph, no calibrator.
    with pytest.raises(VariantUnavailable, match="FP32 engine labelled int8"):
        engine_recipe("int8", only_fp32, precision_flags=True)
    recipe = engine_recipe("int8", only_fp32, precision_flags=True, calibration=True)
    assert (recipe.source.key, recipe.builder_path) == ("fp32", CALIBRATOR)


def test_build_modes():
    recipe = engine_recipe("int8", EXPORTED, precision_flags=True, calibration=True)
    assert recipe.builder_path == CALIBRATOR  # auto with a calibration set: calibrate
    assert engine_recipe("int8", EXPORTED, precision_flags=True, calibration=True,
                         mode=STRONGLY_TYPED).source.key == "int8-trt"
    assert engine_recipe("fp16", EXPORTED, precision_flags=True,
                         mode="flags").builder_path == BUILDER_FLAGS
    with pytest.raises(VariantUnavailable, match="re-export with --fp16"):
        engine_recipe("fp16", {"fp32"}, precision_flags=True, mode=STRONGLY_TYPED)
    with pytest.raises(VariantUnavailable, match="mode"):
        engine_recipe("fp16", EXPORTED, precision_flags=True, mode="fast")


def test_onnx_runtime_providers_get_the_int8_graph_they_have_kernels_for():
    from lineside.edge.variants import onnx_runtime_variant

    assert onnx_runtime_variant("int8", "ort-cpu").key == "int8"
    assert onnx_runtime_variant("int8", "ort-trt").key == "int8-trt"
    with pytest.raises(VariantUnavailable, match="no INT8 convolution kernels"):
        onnx_runtime_variant("int8", "ort-cuda")
    assert onnx_runtime_variant("fp16", "ort-cuda").key == "fp16"
    assert onnx_runtime_variant("int8-trt", "ort-cpu").key == "int8-trt"  # named: as it is


def test_the_tensorrt_provider_gets_caches_and_one_profile_for_every_batch(tmp_path):
    from lineside.edge.backends.onnxruntime import tensorrt_provider_options

    options = tensorrt_provider_options("frames", (1, 256, 256), "int8", tmp_path)
    assert options["trt_engine_cache_enable"] == options["trt_timing_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_profile_min_shapes"] == "frames:1x1x256x256"
    assert options["trt_profile_max_shapes"] == "frames:32x1x256x256"
    assert (options["trt_int8_enable"], options["trt_fp16_enable"]) == ("True", "False")

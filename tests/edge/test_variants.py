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

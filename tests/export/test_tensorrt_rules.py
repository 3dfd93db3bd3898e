"""Every zoo architecture's TensorRT-flavoured INT8 graph obeys what TensorRT's ONNX parser
accepts (export/tensorrt_rules.py), with the scoring tail keeps uint8 at the network's
edges, and the checks catch the forms TensorRT refuses: int32 (quantised) biases, the CPU
flavour's uint8 zero points, uint8 arithmetic. TensorRT itself is not needed:
the rules are taken from its parser's Q/DQ importer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lineside.calibration.calibration_set import CalibrationSet, write_set
from lineside.export.int8 import quantize
from lineside.export.onnx_export import INPUT_NAME, export_onnx
from lineside.export.score_tail import add_score_tail
from lineside.export.tensorrt_rules import tensorrt_qdq_problems, tensorrt_uint8_problems

pytestmark = pytest.mark.slow

ZOO = [("mini_unet", {}), ("unet", {"encoder_name": "resnet18"}),
       ("unetplusplus", {"encoder_name": "resnet18"}),
       ("deeplabv3plus", {"encoder_name": "resnet18"}), ("fpn", {"encoder_name": "resnet18"}),
       ("segformer", {"encoder_name": "mit_b0"}),
       ("classifier", {"backbone": "resnet18"})]
TILE = (64, 64)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> CalibrationSet:
    root = tmp_path_factory.mktemp("cal")
    rng = np.random.default_rng(0)
    frames = [(f"f{i}", [], rng.integers(0, 256, (64, 128), dtype=np.uint8)) for i in range(4)]
    write_set(root, frames, 8, TILE, 1, "random", 0, "generated")
    return CalibrationSet.load(root)


def exported(tmp_path, architecture: str, params: dict) -> str:
    from lineside.train.models import DeployedModel, create_model

    net = create_model(architecture, in_channels=1, classes=4, **params).eval()
    path = tmp_path / f"{architecture}.onnx"
    export_onnx(DeployedModel(net, 0.5, 0.25), path, 1, TILE)
    return path


@pytest.mark.parametrize("architecture, params", ZOO, ids=[a for a, _ in ZOO])
def test_the_tensorrt_int8_graph_of_every_architecture_passes(tmp_path, calibration,
                                                             architecture, params):
    fp32 = exported(tmp_path, architecture, params)
    qdq = tmp_path / "trt.onnx"
    quantize(fp32, qdq, "tensorrt", calibration, INPUT_NAME)
    assert tensorrt_qdq_problems(qdq) == []
    graph = onnx.load(str(qdq)).graph
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)  # it is quantised
    if architecture != "classifier":  # segmentation graphs get the scoring tail
        for path in (fp32, qdq):
            add_score_tail(path)
            assert tensorrt_uint8_problems(path) == [], path.name


def test_the_check_refuses_quantised_biases_and_uint8_zero_points(tmp_path, calibration):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from lineside.calibration.readers import onnxruntime_reader

    fp32 = exported(tmp_path, "mini_unet", {})
    with_biases = tmp_path / "biases.onnx"
    quantize_static(str(fp32), str(with_biases), onnxruntime_reader(calibration, INPUT_NAME),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    problems = tensorrt_qdq_problems(with_biases)
    assert problems and all("INT32" in p for p in problems), problems[:3]
    cpu = tmp_path / "cpu.onnx"
    quantize(fp32, cpu, "cpu", calibration, INPUT_NAME)
    assert any("UINT8" in p for p in tensorrt_qdq_problems(cpu))


def test_the_uint8_check_names_a_graph_that_computes_on_uint8():
    """TensorRT takes uint8 only as a network input cast to float, or an output cast from
    float (the zoo with its scoring tail passes, above); anything else is named."""
    from onnx import TensorProto, helper

    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, [1, 4])
    out = helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 4])
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["frames", "frames"], ["out"], name="add_u8")], "g",
        [frames], [out]), opset_imports=[helper.make_opsetid("", 17)])
    problems = tensorrt_uint8_problems(bad)
    assert any("add_u8: reads uint8 frames" in p for p in problems)
    assert any("add_u8: makes uint8 out" in p for p in problems)

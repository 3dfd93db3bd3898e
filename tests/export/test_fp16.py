"""FP16 conversion repairs: exact duplicate nodes are dropped, real conflicts are kept."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from lineside.export.fp16 import drop_duplicate_nodes


def graph_with(*nodes: onnx.NodeProto) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def cast(name: str, to: int = TensorProto.FLOAT) -> onnx.NodeProto:
    return helper.make_node("Cast", ["x"], ["x32"], name=name, to=to)


def test_an_exact_repeat_is_dropped_and_the_graph_checks():
    model = graph_with(cast("c"), cast("c"), helper.make_node("Relu", ["x32"], ["y"]))
    with pytest.raises(onnx.checker.ValidationError, match="single static assignment"):
        onnx.checker.check_model(model, full_check=True)
    assert drop_duplicate_nodes(model.graph) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Cast", "Relu"]


def test_two_different_producers_of_one_name_are_left_for_the_checker():
    model = graph_with(cast("a"), cast("b", TensorProto.DOUBLE),
                       helper.make_node("Relu", ["x32"], ["y"]))
    assert drop_duplicate_nodes(model.graph) == 0
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=True)

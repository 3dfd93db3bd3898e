"""The scoring tail: what the exported graph returns instead of float32 probabilities.

Appended to every ONNX variant of a bundle after its checks (parity, the INT8 accuracy
gate), so those still judge the model itself. It takes a second input, `thresholds`
float32 [N, K] (one row per tile: per-camera thresholds keep working), and turns the
`probabilities` output [N, K, H, W] into

- `scores` uint8 [N, K, H, W]: 0 where p <= threshold, round(255 p) clamped to 1..255
  above it (the mask, exactly, and the probability to 1/255 for the defect list);
- `maxima` float32 [N, K]: the highest probability per tile and class;
- `areas` int32 [N, K]: pixels above the threshold per tile and class;

the same rule as lineside.edge.postprocess.score_map, on the device: a quarter of the
bytes to copy back, no float work on the host, and a clean tile recognisable from two
numbers. A `presence` output passes through unchanged.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from lineside.edge.backends.base import AREAS, MAXIMA, PROBABILITIES, SCORES, THRESHOLDS


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _reduce(op: str, source: str, out: str, opset: int, nodes: list, inits: list) -> None:
    """Reduce over H and W (axes 2, 3) without keeping them, in the graph's opset."""
    takes_axes_input = opset >= (18 if op == "ReduceMax" else 13)
    if takes_axes_input:
        name = f"score_tail_{op}_axes"
        inits.append(helper.make_tensor(name, TensorProto.INT64, [2], [2, 3]))
        nodes.append(helper.make_node(op, [source, name], [out], keepdims=0,
                                      name=f"score_tail_{op}"))
    else:
        nodes.append(helper.make_node(op, [source], [out], axes=[2, 3], keepdims=0,
                                      name=f"score_tail_{op}"))


def add_score_tail(path: Path) -> None:
    """Rewrite the ONNX file at `path` (a segmentation graph with a `probabilities`
    output) to take `thresholds` and return scores, maxima and areas."""
    model = onnx.load(str(path))
    graph = model.graph
    names = [o.name for o in graph.output]
    if PROBABILITIES not in names:
        raise ValueError(f"{path} has no {PROBABILITIES} output (outputs: {names})")
    probabilities = next(o for o in graph.output if o.name == PROBABILITIES)
    dims = probabilities.type.tensor_type.shape.dim
    batch, classes = (d.dim_param or d.dim_value for d in dims[:2])
    opset = _opset(model)
    inits = [helper.make_tensor("score_tail_255", TensorProto.FLOAT, [], [255.0]),
             helper.make_tensor("score_tail_one", TensorProto.FLOAT, [], [1.0]),
             helper.make_tensor("score_tail_zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("score_tail_hw", TensorProto.INT64, [2], [2, 3])]
    # Float all the way to the last Cast: TensorRT takes uint8 only as a network input or
    # output, made by a Cast from float (NvInferRuntimeBase.h, DataType::kUINT8), and an
    # area summed in float is exact up to 2^24 pixels, far above any tile.
    nodes = [
        # thresholds [N, K] -> [N, K, 1, 1], broadcast over the pixels
        helper.make_node("Unsqueeze", [THRESHOLDS, "score_tail_hw"], ["score_tail_thr"],
                         name="score_tail_unsqueeze"),
        helper.make_node("Greater", [PROBABILITIES, "score_tail_thr"], ["score_tail_above"],
                         name="score_tail_greater"),
        helper.make_node("Mul", [PROBABILITIES, "score_tail_255"], ["score_tail_scaled"],
                         name="score_tail_mul"),
        helper.make_node("Round", ["score_tail_scaled"], ["score_tail_rounded"],
                         name="score_tail_round"),
        helper.make_node("Max", ["score_tail_rounded", "score_tail_one"],
                         ["score_tail_atleast1"], name="score_tail_max1"),
        helper.make_node("Where", ["score_tail_above", "score_tail_atleast1",
                                   "score_tail_zero"], ["score_tail_kept"],
                         name="score_tail_where"),
        helper.make_node("Cast", ["score_tail_kept"], [SCORES], to=TensorProto.UINT8,
                         name="score_tail_cast_u8"),
        helper.make_node("Cast", ["score_tail_above"], ["score_tail_above_f"],
                         to=TensorProto.FLOAT, name="score_tail_cast_f"),
    ]
    _reduce("ReduceMax", PROBABILITIES, MAXIMA, opset, nodes, inits)
    _reduce("ReduceSum", "score_tail_above_f", "score_tail_area_f", opset, nodes, inits)
    nodes.append(helper.make_node("Cast", ["score_tail_area_f"], [AREAS], to=TensorProto.INT32,
                                  name="score_tail_cast_i32"))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    graph.input.append(helper.make_tensor_value_info(THRESHOLDS, TensorProto.FLOAT,
                                                     [batch, classes]))
    kept = [o for o in graph.output if o.name != PROBABILITIES]
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(SCORES, TensorProto.UINT8,
                                      [d.dim_param or d.dim_value for d in dims]),
        helper.make_tensor_value_info(MAXIMA, TensorProto.FLOAT, [batch, classes]),
        helper.make_tensor_value_info(AREAS, TensorProto.INT32, [batch, classes]),
        *kept])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))

"""What TensorRT's ONNX parser accepts in an explicitly quantised (Q/DQ) graph, checked at
export, so that a bundle TensorRT would refuse is never written.

The rules, as onnx-tensorrt's QuantizeLinear/DequantizeLinear importer applies them
(TensorRT 10 and 11):
- the quantised type comes from the zero point and must be INT8 here (the parser also
  knows FP8/INT4/FP4; UINT8 only on DLA); a DequantizeLinear of int32 data (a quantised
  bias, as ONNX Runtime's quantiser writes by default) is refused (NVIDIA/TensorRT#4542);
- zero points must be all zeros (symmetric quantisation);
- a per-channel scale has one value per channel along the node's `axis`; weights of a
  Conv are quantised along axis 0, of a ConvTranspose along axis 1;
- activations are quantised per tensor (one scale);
- `axis` needs opset 13 or newer.

And one rule for any graph TensorRT builds from (`tensorrt_uint8_problems`): UINT8 is a
network input or output type only, converted from or to float by a Cast
(NvInferRuntimeBase.h, DataType::kUINT8): the uint8 frames in, the uint8 scores out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Which axis a weight's per-channel scales must follow, by the consuming op.
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}


def type_name(data_type: int) -> str:
    return onnx.TensorProto.DataType.Name(data_type)


def tensorrt_qdq_problems(model: onnx.ModelProto | str | Path) -> list[str]:
    """Why TensorRT's parser would refuse this Q/DQ graph (empty when it would not)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    problems: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        problems.append(f"opset {opset}: per-channel Q/DQ needs opset 13 or newer")
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        where = f"{node.op_type} {node.name or node.output[0]}"
        if len(node.input) < 3 or node.input[2] not in initializers:
            problems.append(f"{where}: no constant zero point (TensorRT needs an int8 one)")
            continue
        zero = initializers[node.input[2]]
        if zero.data_type != onnx.TensorProto.INT8:
            problems.append(f"{where}: zero point is {type_name(zero.data_type)}, TensorRT "
                            "takes INT8 only")
        elif np.any(numpy_helper.to_array(zero)):
            problems.append(f"{where}: non-zero zero point (TensorRT is symmetric only)")
        data = initializers.get(node.input[0])
        if node.op_type == "DequantizeLinear" and data is not None and \
                data.data_type != onnx.TensorProto.INT8:
            problems.append(f"{where}: dequantises {type_name(data.data_type)} data (a quantised "
                            "bias?): TensorRT takes INT8 only")
        scale = initializers.get(node.input[1])
        count = 1 if scale is None else int(np.prod(scale.dims)) if scale.dims else 1
        if count == 1:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if data is None:
            problems.append(f"{where}: per-channel scales on an activation (TensorRT "
                            "quantises activations per tensor)")
            continue
        if not -len(data.dims) <= axis < len(data.dims) or data.dims[axis] != count:
            problems.append(f"{where}: {count} scales for axis {axis} of a {list(data.dims)} "
                            "weight")
        for consumer in consumers.get(node.output[0], []):
            want = WEIGHT_AXIS.get(consumer.op_type)
            if want is not None and axis % len(data.dims) != want:
                problems.append(f"{where}: {consumer.op_type} weights are quantised along "
                                f"axis {axis}, TensorRT needs axis {want}")
    return problems


FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
# Ops that read a tensor's shape, not its values (TensorRT's shape layer takes any type).
METADATA_OPS = ("Shape", "Size")


def tensorrt_uint8_problems(model: onnx.ModelProto | str | Path) -> list[str]:
    """Where this graph uses UINT8 other than as TensorRT allows (empty when it does not)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    inputs, outputs = {v.name for v in graph.input}, {v.name for v in graph.output}
    uint8 = onnx.TensorProto.UINT8
    problems = []
    for node in graph.node:
        where = f"{node.op_type} {node.name or node.output[0]}"
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        for name in node.input:
            reads_values = node.op_type not in METADATA_OPS
            if types.get(name) == uint8 and reads_values and not (
                    name in inputs and node.op_type == "Cast" and to in FLOAT_TYPES):
                problems.append(f"{where}: reads uint8 {name} (TensorRT converts uint8 "
                                "network inputs to float with a Cast only)")
        for name in node.output:
            if types.get(name) != uint8:
                continue
            source = types.get(node.input[0]) if node.input else None
            if name not in outputs or node.op_type != "Cast" or source not in FLOAT_TYPES:
                problems.append(f"{where}: makes uint8 {name} (TensorRT makes uint8 only "
                                "as a network output, cast from float)")
    return problems

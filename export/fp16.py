"""FP32 ONNX -> FP16 ONNX for strongly typed TensorRT and ONNX Runtime CUDA.

The graph's interface is kept (uint8 frames in, float32 probabilities out); everything
in between runs in FP16, except ops the converter keeps in FP32 for correctness (Resize
takes FP32 scales), which it wraps in casts.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def topologically_sorted(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` so every node follows the producers of its inputs.

    The FP16 converter appends the casts it inserts for an initializer shared by several
    nodes after some of their consumers; ONNX requires producer-before-consumer order.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                remaining.append(node)
        if not progressed:
            missing = sorted({n for node in remaining for n in node.input} - available)
            raise ValueError(f"graph has a cycle or undefined inputs: {missing[:5]}")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    # keep_io_types: the float32 output stays float32; the uint8 input is untouched.
    half = convert_float_to_float16(model, keep_io_types=True)
    topologically_sorted(half.graph)
    # The converter leaves stale type hints behind; shape inference recomputes them.
    del half.graph.value_info[:]
    onnx.save(half, str(out_path))
    onnx.checker.check_model(str(out_path), full_check=True)

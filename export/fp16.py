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


def drop_duplicate_nodes(graph: onnx.GraphProto) -> int:
    """Remove nodes that repeat an earlier node exactly (same op, inputs, outputs and
    attributes); returns how many were dropped.

    Some versions of the FP16 converter insert the same cast twice for a value that two
    float32-only consumers share (seen with ONNX Runtime 1.31 on a torch 2.11 export),
    which breaks ONNX's one-producer-per-name rule. An exact repeat computes nothing new;
    two different nodes writing one name are a real error and stay for the checker.
    """
    seen: dict[str, bytes] = {}
    kept, dropped = [], 0
    for node in graph.node:
        key = node.SerializeToString()
        if node.output and all(seen.get(name) == key for name in node.output):
            dropped += 1
            continue
        for name in node.output:
            seen.setdefault(name, key)
        kept.append(node)
    if dropped:
        del graph.node[:]
        graph.node.extend(kept)
    return dropped


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    # keep_io_types: the float32 output stays float32; the uint8 input is untouched.
    half = convert_float_to_float16(model, keep_io_types=True)
    drop_duplicate_nodes(half.graph)
    topologically_sorted(half.graph)
    # The converter leaves stale type hints behind; shape inference recomputes them.
    del half.graph.value_info[:]
    onnx.save(half, str(out_path))
    onnx.checker.check_model(str(out_path), full_check=True)

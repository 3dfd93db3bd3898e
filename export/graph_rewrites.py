"""Exact ONNX graph rewrites for a quantised graph on ONNX Runtime's CPU, measured before
use (scripts/resize_rewrite.py).

`nearest_upsampling_as_copies`: a decoder's 2x nearest `Resize` (smp's UNet, FPN)
becomes copies: each pixel repeated by a `Gather` of index (0, 0) on a new last axis,
each row by the same on a new row axis, with reshapes in between; ONNX Runtime runs
`Gather`, `Unsqueeze` and `Reshape` on uint8 without requantising (it drops their Q/DQ
pairs), whereas its uint8 `Resize` goes through a generic coordinate-mapping path
(profiled: 20% of an INT8 UNet-ResNet18's kernel time). Measured on ONNX Runtime 1.32,
2 cores, the copies are not faster (Gather 0.94x, Concat 0.87x the Resize graph's speed:
docs/performance.md), so export does not apply it (`int8.quantize(rewrite=False)`); it
stays to be measured again on another runtime or target. The result is bit-identical
for the Resize attribute combinations it accepts (tests on random tensors, and an INT8
UNet); any other Resize is left alone.

A Resize given output `sizes` (what smp's decoder exports: the skip connection's size,
computed from the frame's) doubles only at some frame sizes (sides that are multiples of
the encoder's stride). Those are rewritten only when a `probe` input (a calibration
batch, so the bundle's tile shape) shows the node doubling, and the copies are reshaped
to those same `sizes`: at a frame size where the Resize would not double, the reshape's
element count differs and ONNX Runtime refuses the call instead of answering wrongly.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# (coordinate_transformation_mode, nearest_mode) pairs for which output[i] = input[i // 2]
# at scale 2: asymmetric floor (PyTorch's `nearest`), and half_pixel with
# round_prefer_floor (ONNX's default nearest mode): (i + 0.5) / 2 - 0.5 rounds to i // 2.
EXACT_MODES = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
               ("tf_half_pixel_for_nn", "floor")}


def _attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.s.decode()
    return default


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for initializer in graph.initializer:
        if initializer.name == name:
            return numpy_helper.to_array(initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _nearest_exact(node: onnx.NodeProto) -> bool:
    return (node.op_type == "Resize" and _attribute(node, "mode", "nearest") == "nearest"
            and (_attribute(node, "coordinate_transformation_mode", "half_pixel"),
                 _attribute(node, "nearest_mode", "round_prefer_floor")) in EXACT_MODES)


def _sizes_input(node: onnx.NodeProto) -> str:
    return node.input[3] if len(node.input) > 3 else ""


def doubles_nearest(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """A Resize whose constant scales double height and width by nearest neighbour."""
    if not _nearest_exact(node) or _sizes_input(node):
        return False
    scales = _constant(graph, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return scales is not None and scales.astype(np.float64).tolist() == [1.0, 1.0, 2.0, 2.0]


def doubling_by_size(model: onnx.ModelProto, probe: dict[str, np.ndarray]) -> set[str]:
    """Names of the nearest Resizes with `sizes` that double their input on `probe` (the
    graph is run once with those tensors' shapes exposed)."""
    import onnxruntime as ort

    candidates = [n for n in model.graph.node if _nearest_exact(n) and _sizes_input(n)]
    if not candidates:
        return set()
    probed = onnx.ModelProto.FromString(model.SerializeToString())
    wanted = [t for n in candidates for t in (n.input[0], n.output[0])]
    probed.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted)
    session = ort.InferenceSession(probed.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    shapes = dict(zip(wanted, (v.shape for v in session.run(wanted, probe)), strict=True))
    return {n.name for n in candidates
            if len(shapes[n.input[0]]) == 4 and shapes[n.output[0]] == (
                *shapes[n.input[0]][:2], 2 * shapes[n.input[0]][2], 2 * shapes[n.input[0]][3])}


def nearest_upsampling_as_copies(model: onnx.ModelProto,
                                 probe: dict[str, np.ndarray] | None = None,
                                 ) -> tuple[onnx.ModelProto, int]:
    """`model` with every Resize `doubles_nearest` accepts (and, given a `probe` input,
    every one `doubling_by_size` finds) replaced by copies; and how many."""
    graph = model.graph
    by_size = doubling_by_size(model, probe) if probe is not None else set()
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:  # Unsqueeze takes its axes as an input from opset 13
        return model, 0
    nodes, count = [], 0
    constants = {"ls_axis_last": np.array([4], np.int64),
                 "ls_axis_rows": np.array([3], np.int64),
                 "ls_pair": np.array([0, 0], np.int64),
                 "ls_width_doubled": np.array([0, 0, 0, -1], np.int64),
                 "ls_height_doubler": np.array([1, 1, 2, 1], np.int64)}
    for node in graph.node:
        sized = node.name in by_size
        if not (sized or doubles_nearest(graph, node)):
            nodes.append(node)
            continue
        count += 1
        x, y, tag = node.input[0], node.output[0], f"{node.name or 'resize'}_{count}"
        # The last reshape's target: the Resize's own sizes, or the doubled shape.
        target = [] if sized else [
            helper.make_node("Shape", [f"{tag}_w"], [f"{tag}_shape"], f"{tag}_shape"),
            helper.make_node("Mul", [f"{tag}_shape", "ls_height_doubler"], [f"{tag}_target"],
                             f"{tag}_target")]
        nodes += [
            # (N, C, H, W) -> (N, C, H, W, 1) -> (N, C, H, W, 2) -> (N, C, H, 2W)
            helper.make_node("Unsqueeze", [x, "ls_axis_last"], [f"{tag}_u"], f"{tag}_u"),
            helper.make_node("Gather", [f"{tag}_u", "ls_pair"], [f"{tag}_w2"], f"{tag}_w2",
                             axis=4),
            helper.make_node("Reshape", [f"{tag}_w2", "ls_width_doubled"], [f"{tag}_w"],
                             f"{tag}_w"),
            # rows side by side: (N, C, H, 4W), which in memory is (N, C, 2H, 2W)
            helper.make_node("Unsqueeze", [f"{tag}_w", "ls_axis_rows"], [f"{tag}_wu"],
                             f"{tag}_wu"),
            helper.make_node("Gather", [f"{tag}_wu", "ls_pair"], [f"{tag}_h2"], f"{tag}_h2",
                             axis=3),
            *target,
            helper.make_node("Reshape", [f"{tag}_h2", _sizes_input(node) if sized
                                         else f"{tag}_target"], [y], f"{tag}_h"),
        ]
    if not count:
        return model, 0
    del graph.node[:]
    graph.node.extend(nodes)
    known = {i.name for i in graph.initializer}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items()
                             if k not in known)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]  # the Resizes' scales go
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model, count


__all__ = ["doubles_nearest", "doubling_by_size", "nearest_upsampling_as_copies"]

"""A toy model bundle written by the tests: a real ONNX graph (built with onnx.helper) that
ONNX Runtime runs, with the manifest edge-export would write. Not a mock: the runtime
loads, verifies and runs it like any bundle; its "model" is simply pixel/255 for every
class, so a test knows every probability in advance. With `gate`, it also has the
presence output (max over the tile), like a gated segmentation model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from lineside.edge.bundle import ClassSpec, Manifest, ModelFile, sha256_file, write_manifest


def toy_graph(classes: int, gate: bool) -> onnx.ModelProto:
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", 1, "H", "W"])
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                             ["N", classes, "H", "W"])]
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255])
    nodes = [helper.make_node("Cast", ["frames"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "scale"], ["p1"]),
             helper.make_node("Concat", ["p1"] * classes, ["probabilities"], axis=1)]
    if gate:
        outputs.append(helper.make_tensor_value_info("presence", TensorProto.FLOAT,
                                                     ["N", classes]))
        nodes.append(helper.make_node("ReduceMax", ["probabilities"], ["presence"], axes=[2, 3],
                                      keepdims=0))
    graph = helper.make_graph(nodes, "toy", [frames], outputs, [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    return model


def write_toy_bundle(root: Path, classes: int = 4, gate: bool = False, tile: int = 64,
                     thresholds: float = 0.5, gate_threshold: float = 0.0,
                     scored: bool = False) -> Path:
    """`scored`: with the scoring tail edge-export appends (thresholds in, uint8 scores,
    maxima and areas out); without, an older bundle's probabilities."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "model_fp32.onnx"
    onnx.save(toy_graph(classes, gate), str(path))
    if scored:
        from lineside.export.score_tail import add_score_tail

        add_score_tail(path)
    manifest = Manifest(
        name="toy", architecture="toy",
        classes=[ClassSpec(k + 1, f"class{k + 1}", thresholds, 0,
                           gate_threshold if gate else 0.0) for k in range(classes)],
        tile_height=tile, tile_width=tile, presence_name="presence" if gate else "",
        frame_height=tile, frame_width=4 * tile,
        output_form="scores" if scored else "probabilities",
        models={"fp32": ModelFile(path.name, sha256_file(path), "fp32")})
    write_manifest(root, manifest)
    return root


def toy_frame(value: int, shape: tuple[int, int] = (64, 256)) -> np.ndarray:
    return np.full(shape, value, np.uint8)

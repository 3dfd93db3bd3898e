"""Static INT8 quantisation (QDQ) from a calibration set, in the two forms targets need.

- `cpu`: uint8 activations, int8 per-channel weights (U8S8): ONNX Runtime's fast path on
  VNNI CPUs.
- `tensorrt`: int8 activations and weights, symmetric (zero point 0), per-channel weights,
  per-tensor activations, biases left in float: the only Q/DQ form TensorRT's ONNX parser
  accepts (slow on a CPU); export/tensorrt_rules.py checks every graph against it.

Accuracy is guarded by the caller: if Dice drops too far, the most sensitive layers (the
first and last convolutions, where the input and the logits live) stay in float, and the
quantisation is retried with more of them excluded.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from lineside.calibration.calibration_set import CalibrationSet
from lineside.calibration.readers import onnxruntime_reader
from lineside.export.graph_rewrites import nearest_upsampling_as_copies

log = logging.getLogger("lineside.export")

# Ops worth int8: convolutions and the ops between them, so tensors stay int8 across
# pooling, upsampling, skip concatenations and residual adds. Pre-processing (Cast, Mul,
# Sub at the input) and the final Sigmoid stay float. Relu and Clip must be listed too:
# left out, every convolution's output is dequantised for its activation and quantised
# again after it, and what follows (a decoder's upsampling) runs on float tensors four
# times the size (profiled: 15% of a UNet-ResNet18's INT8 time; a ResNet classifier 25%).
QUANTISED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm", "MaxPool", "AveragePool",
                 "Resize", "Concat", "Add", "GlobalAveragePool", "Relu", "Clip"]
# With `rewrite`, the CPU graph's upsampling copies (graph_rewrites.py) stay uint8 through
# these too (ONNX Runtime drops their Q/DQ pairs).
CPU_COPY_OPS = ["Unsqueeze", "Reshape", "Gather"]


def flavour_options(flavour: str) -> dict:
    from onnxruntime.quantization import QuantType

    if flavour == "cpu":
        return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                "per_channel": True, "extra_options": {}}
    if flavour == "tensorrt":
        # Biases stay float: ONNX Runtime would quantise them to int32, and TensorRT's
        # parser refuses a DequantizeLinear of int32 data (NVIDIA/TensorRT#4542).
        return {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                "per_channel": True,
                "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                  "QuantizeBias": False}}
    raise ValueError(f"INT8 flavour {flavour!r} is not cpu or tensorrt")


def conv_nodes(model_path: Path) -> list[str]:
    """Convolution node names in graph order (the graph is topologically sorted)."""
    graph = onnx.load(str(model_path)).graph
    return [n.name for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]


# How many convolutions at each end of the network stay float, attempt by attempt.
FLOAT_ENDS_SCHEDULE = (0, 1, 2, 4)


def quantize(fp32_path: Path, out_path: Path, flavour: str, calibration: CalibrationSet,
             input_name: str, float_ends: int = 0, rewrite: bool = False) -> list[str]:
    """Quantise; the first and last `float_ends` convolutions stay float. Returns their
    names. `rewrite=True` (the `cpu` flavour only) writes 2x nearest upsampling as
    copies first (exact; graph_rewrites.py). Off: on ONNX Runtime 1.32 the copies were
    slower than its uint8 Resize (scripts/resize_rewrite.py, docs/performance.md)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Fold and fuse first (Conv+BN), so the scales are for what actually runs.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if flavour == "cpu" and rewrite:
            # A calibration batch has the bundle's tile shape: the shape served.
            probe = {input_name: np.ascontiguousarray(next(calibration.batches(2)))}
            model, rewritten = nearest_upsampling_as_copies(onnx.load(str(prepared)), probe)
            if rewritten:
                onnx.save(model, str(prepared))
                log.info("%d nearest 2x Resize(s) written as copies for the CPU", rewritten)
        convs = conv_nodes(prepared)
        excluded = convs[:float_ends] + convs[-float_ends:] if float_ends else []
        quantize_static(
            str(prepared), str(out_path), onnxruntime_reader(calibration, input_name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTISED_OPS + (CPU_COPY_OPS if flavour == "cpu" else []),
            nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
            **flavour_options(flavour))
    onnx.checker.check_model(str(out_path))
    return excluded

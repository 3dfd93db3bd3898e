"""Checkpoint -> ONNX with pre-processing folded in (uint8 frames in, probabilities out)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

log = logging.getLogger("lineside.export")
# The ONNX exporter logs every optimisation pass at INFO; keep the export log readable.
for _name in ("onnx_ir", "onnxscript"):
    logging.getLogger(_name).setLevel(logging.WARNING)

INPUT_NAME = "frames"
OUTPUT_NAME = "probabilities"
PRESENCE_NAME = "presence"


def output_names(model: nn.Module, in_channels: int, tile: tuple[int, int]) -> list[str]:
    """["probabilities"], ["probabilities", "presence"] for a gated segmentation model, or
    ["presence"] for a screening classifier."""
    with torch.no_grad():
        out = model.eval()(torch.zeros((1, in_channels, *tile), dtype=torch.uint8))
    if isinstance(out, tuple):
        return [OUTPUT_NAME, PRESENCE_NAME]
    return [PRESENCE_NAME] if out.ndim == 2 else [OUTPUT_NAME]


def export_onnx(model: nn.Module, path: Path, in_channels: int,
                tile: tuple[int, int]) -> None:
    """Write one self-contained ONNX file with dynamic batch, height and width.

    The example batch is 2, not 1: some exporters bake a batch of 1 into Reshape nodes.
    """
    example = torch.randint(0, 256, (2, in_channels, *tile), dtype=torch.uint8)
    outputs = output_names(model, in_channels, tile)
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC,
            3: torch.export.Dim.DYNAMIC}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not ours
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, external_data=False,
            input_names=[INPUT_NAME], output_names=outputs,
            dynamic_shapes={"frames": dims}, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


def parity(model: nn.Module, onnx_path: Path, in_channels: int,
           shapes: list[tuple[int, int, int]], seed: int = 0,
           tolerance: float = 1e-2) -> dict[str, object]:
    """Largest and mean |torch - ONNX Runtime| over random uint8 batches of the given
    (N, H, W), and the share of outputs off by more than `tolerance`.

    Checked at batch sizes and tile shapes that differ from the export example, which is
    where baked-in shapes show up.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst, total, count, beyond = 0.0, 0.0, 0, 0
    for batch, height, width in shapes:
        frames = rng.integers(0, 256, (batch, in_channels, height, width), dtype=np.uint8)
        with torch.no_grad():
            expected = model(torch.from_numpy(frames))
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else
                                        (expected,))]
        actual = session.run(None, {INPUT_NAME: frames})
        for got, want in zip(actual, expected, strict=True):
            if got.shape != want.shape:
                raise RuntimeError(f"ONNX output shape {got.shape} != torch {want.shape} "
                                   f"for input {frames.shape}")
            diff = np.abs(got - want)
            worst = max(worst, float(diff.max()))
            total, count = total + float(diff.sum()), count + diff.size
            beyond += int(np.count_nonzero(diff > tolerance))
    return {"max_abs_diff": worst, "mean_abs_diff": total / count,
            "beyond_tolerance": beyond / count,
            "shapes": [list(s) for s in shapes],
            "runtime": f"onnxruntime {ort.__version__} CPU"}

"""The nearest-upsampling rewrite is exact: a 2x nearest Resize and its copies give the
same tensors in ONNX Runtime, for every accepted mode, batch and shape; other Resizes
are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lineside.export.graph_rewrites import nearest_upsampling_as_copies


def resize_model(mode: str = "nearest", coordinates: str = "asymmetric",
                 nearest: str = "floor", scales=(1.0, 1.0, 2.0, 2.0),
                 dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x -> Resize -> Relu (a consumer, so the rewrite must keep the name it reads)."""
    attributes = {"mode": mode, "coordinate_transformation_mode": coordinates}
    if mode == "nearest":
        attributes["nearest_mode"] = nearest
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["up"], "up", **attributes),
         helper.make_node("Identity", ["up"], ["y"], "out")],
        "resize", [helper.make_tensor_value_info("x", dtype, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", dtype, ["n", 3, "h2", "w2"])],
        [numpy_helper.from_array(np.asarray(scales, np.float32), "scales")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("coordinates,nearest", [("asymmetric", "floor"),
                                                 ("half_pixel", "round_prefer_floor"),
                                                 ("tf_half_pixel_for_nn", "floor")])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.UINT8])
def test_copies_equal_the_resize(coordinates, nearest, dtype):
    model = resize_model(coordinates=coordinates, nearest=nearest, dtype=dtype)
    rewritten, count = nearest_upsampling_as_copies(onnx.ModelProto.FromString(
        model.SerializeToString()))
    assert count == 1 and "Resize" not in {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten)
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 4, 5), (2, 3, 7, 3), (3, 3, 1, 16)]:
        x = rng.integers(0, 255, shape).astype(helper.tensor_dtype_to_np_dtype(dtype))
        want = run(model, x)
        assert want.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
        np.testing.assert_array_equal(run(rewritten, x), want)


@pytest.mark.parametrize("kwargs", [{"mode": "linear"}, {"scales": (1.0, 1.0, 3.0, 3.0)},
                                    {"coordinates": "half_pixel", "nearest": "ceil"},
                                    {"coordinates": "align_corners"}])
def test_other_resizes_are_left_alone(kwargs):
    model = resize_model(**kwargs)
    _, count = nearest_upsampling_as_copies(model)
    assert count == 0 and [n.op_type for n in model.graph.node] == ["Resize", "Identity"]


def test_the_exporter_writes_nearest_upsampling_the_rewrite_takes(tmp_path):
    torch = pytest.importorskip("torch")
    from lineside.export.onnx_export import INPUT_NAME, export_onnx

    class Decoder(torch.nn.Module):  # uint8 frames in, as every bundle's graph
        def forward(self, frames):
            x = frames.float().repeat(1, 3, 1, 1)
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") + 1

    path = tmp_path / "up.onnx"
    export_onnx(Decoder(), path, 1, (8, 8))
    model = onnx.load(str(path))
    rewritten, count = nearest_upsampling_as_copies(onnx.load(str(path)))
    assert count == 1
    frames = np.random.default_rng(1).integers(0, 255, (2, 1, 6, 10), dtype=np.uint8)
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=[
        "CPUExecutionProvider"]).run(None, {INPUT_NAME: frames})[0] for m in (rewritten, model))
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_the_cpu_int8_unet_has_no_resize_and_the_same_outputs(tmp_path):
    """smp's UNet decoder upsamples by nearest Resize: the CPU INT8 graph with the rewrite
    holds copies instead, and scores exactly what the graph with Resizes scores."""
    pytest.importorskip("torch")
    from lineside.calibration.calibration_set import CalibrationSet, write_set
    from lineside.export.int8 import quantize
    from lineside.export.onnx_export import INPUT_NAME, export_onnx
    from lineside.train.models import DeployedModel, create_model

    rng = np.random.default_rng(0)
    write_set(tmp_path / "cal", [(f"f{i}", [], rng.integers(0, 256, (64, 128), np.uint8))
                                 for i in range(4)], 8, (64, 64), 1, "random", 0, "generated")
    calibration = CalibrationSet.load(tmp_path / "cal")
    net = create_model("unet", in_channels=1, classes=4, encoder_name="resnet18").eval()
    fp32 = tmp_path / "unet.onnx"
    export_onnx(DeployedModel(net, 0.5, 0.25), fp32, 1, (64, 64))
    assert sum(n.op_type == "Resize" for n in onnx.load(str(fp32)).graph.node) == 5
    kept, copies = tmp_path / "resize.onnx", tmp_path / "copies.onnx"
    quantize(fp32, kept, "cpu", calibration, INPUT_NAME, rewrite=False)
    quantize(fp32, copies, "cpu", calibration, INPUT_NAME, rewrite=True)
    assert "Resize" not in {n.op_type for n in onnx.load(str(copies)).graph.node}
    frames = rng.integers(0, 256, (3, 1, 64, 96), dtype=np.uint8)
    want, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: frames}) for p in (kept, copies))
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    # 80 is not a multiple of the encoder's stride 32: there the decoder's Resize does not
    # double (5 from 3), and the copies refuse the call instead of answering wrongly.
    odd = rng.integers(0, 256, (1, 1, 64, 80), dtype=np.uint8)
    ort.InferenceSession(str(kept), providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: odd})
    with pytest.raises(Exception, match=r"(?i)reshape|shape"):
        ort.InferenceSession(str(copies), providers=["CPUExecutionProvider"]).run(
            None, {INPUT_NAME: odd})

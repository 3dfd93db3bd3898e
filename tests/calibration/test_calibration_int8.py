"""Calibration sets and INT8/FP16 export with the accuracy gate (real ONNX Runtime)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lineside.calibration.calibration_set import (
    CalibrationSet,
    CalibrationSetError,
    build_from_folder,
    choose_frames,
)
from lineside.edge.backends import create_backend
from lineside.edge.bundle import load_bundle
from lineside.edge.labels import open_dataset
from lineside.edge.labels.severstal import read_labels
from tests.helpers import assert_outputs_close

pytestmark = pytest.mark.slow


def test_stratified_choice_covers_every_class_early(synth_data):
    labels = read_labels(synth_data / "train.csv")
    dataset = open_dataset(synth_data)
    chosen = choose_frames(dataset.samples, dataset.labelled, "stratified", seed=0)
    names = [s.name for s in chosen]
    assert sorted(names) == dataset.names  # a permutation: nothing lost, nothing twice
    first = names[:8]
    classes = {c for name in first for c in labels.get(name, {})}
    assert classes == {1, 2, 3, 4}
    assert any(not labels.get(name) for name in first)  # and defect-free steel


def test_set_is_versioned_tiled_like_the_runtime_and_verified(synth_data, tmp_path):
    manifest = build_from_folder(synth_data, tmp_path / "cal", 20, "stratified", 0, (256, 256))
    assert manifest.count == 20 and len(manifest.sources) == 3  # 7 tiles per strip
    loaded = CalibrationSet.load(tmp_path / "cal")
    tiles = np.stack(list(loaded.tiles()))
    assert tiles.shape == (20, 1, 256, 256) and tiles.dtype == np.uint8
    again = build_from_folder(synth_data, tmp_path / "cal2", 20, "stratified", 0, (256, 256))
    assert again.sha256 == manifest.sha256  # same inputs, same version
    shard = tmp_path / "cal" / manifest.shards[0].path
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CalibrationSetError, match="sha256"):
        CalibrationSet.load(tmp_path / "cal")


def test_int8_and_fp16_export_pass_the_gate_and_run(quantised_bundle, synth_data):
    bundle_dir = quantised_bundle
    calibration = bundle_dir.parent / "cal"
    log = (bundle_dir.parent / "export.log").read_text()
    if "trt-fp16: not built" in log:  # says which engines were not built, and how
        assert "edge-build-engine" in log
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert {"fp32", "fp16", "int8", "int8-trt"} <= set(manifest["models"])
    assert manifest["models"]["int8"]["target"] == "cpu"
    cal_sha = json.loads((calibration / "calibration.json").read_text())["sha256"]
    assert manifest["models"]["int8"]["calibration_sha256"] == cal_sha
    heldout = manifest["metrics"]["heldout"]
    for key in ("int8", "int8-trt"):
        assert heldout["fp32"]["dice"] - heldout[key]["dice"] <= 0.005
        assert manifest["metrics"]["quantization"][key]["gate"] == "passed"
    bundle = load_bundle(bundle_dir)
    # Real steel (INT8 scales are fitted to it), at a batch and tile shape unlike export.
    strips = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
              for p in sorted((synth_data / "train_images").iterdir())[:3]]
    tiles = np.stack([s[:, 100:420] for s in strips])[:, None]
    reference = create_backend("ort-cpu", bundle, "fp32").infer(tiles)
    for precision in ("int8", "int8-trt", "fp16"):
        out = create_backend("ort-cpu", bundle, precision).infer(tiles)
        # other batch and tile shape than the export
        assert_outputs_close(out, reference, 0.05, maxima=precision == "fp16")


def test_symmetric_int8_has_zero_points_zero_and_cpu_int8_uses_uint8(quantised_bundle):
    import onnx
    from onnx import numpy_helper

    bundle_dir = quantised_bundle

    def zero_points(path):
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [inits[n.input[2]] for n in model.graph.node
                if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits]
    trt_zps = zero_points(bundle_dir / "model_int8_trt.onnx")
    cpu_zps = zero_points(bundle_dir / "model_int8.onnx")
    assert trt_zps and all(z.dtype == np.int8 and not z.any() for z in trt_zps)
    assert cpu_zps and all(z.dtype == np.uint8 for z in cpu_zps)


def test_int8_without_calibration_or_labels_is_refused(trained_bundle, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lineside.export.cli",
                             str(trained_bundle.parent / "mini.pt"), "-o", str(tmp_path / "x"),
                             "--int8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "calibration set" in result.stderr
    assert not (tmp_path / "x").exists()


def test_capture_a_calibration_set_from_a_live_stream(tmp_path):
    import subprocess
    import sys
    import time

    from lineside.edge.client import FrameSender
    from lineside.edge.protocol import FrameHeader
    from tests.helpers import free_endpoint

    endpoint = free_endpoint()
    capture = subprocess.Popen([sys.executable, "-m", "lineside.calibration.cli", "--from",
                                endpoint, "-o", str(tmp_path / "live"), "--n", "14",
                                "--timeout", "60"], stdout=subprocess.PIPE, text=True)
    sender = FrameSender(endpoint)
    try:
        rng = np.random.default_rng(0)
        for i in range(6):  # PUSH queues until the capture binds; extra frames are ignored
            sender.send(FrameHeader("cam0", i, time.time_ns(), "mono8", (256, 1600)),
                        rng.integers(0, 256, (256, 1600), dtype=np.uint8))
        out, _ = capture.communicate(timeout=120)
    finally:
        sender.close()
    assert capture.returncode == 0, out
    loaded = CalibrationSet.load(tmp_path / "live")
    assert loaded.manifest.count == 14 and loaded.manifest.strategy == "live"
    assert [s["image"] for s in loaded.manifest.sources] == ["cam0:0", "cam0:1"]

"""Training writes a self-describing checkpoint; export writes a verified bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lineside.edge.backends import create_backend
from lineside.edge.bundle import BundleError, load_bundle

pytestmark = pytest.mark.slow


def test_checkpoint_carries_what_export_needs(trained_bundle):
    from lineside.train.checkpoint import load_checkpoint

    _, meta = load_checkpoint(trained_bundle.parent / "mini.pt")
    assert meta["architecture"] == "mini_unet"
    assert [c["id"] for c in meta["classes"]] == [1, 2, 3, 4]
    assert meta["tile"] == [256, 256] and meta["in_channels"] == 1
    assert 0 < meta["mean"] < 1 and 0 < meta["std"] < 1
    assert (trained_bundle.parent / "mini.jsonl").read_text().count("\n") == 1
    assert (trained_bundle.parent / "mini.png").stat().st_size > 1000  # training curve


def test_bundle_manifest_records_parity_hashes_and_versions(trained_bundle):
    manifest = json.loads((trained_bundle / "manifest.json").read_text())
    assert manifest["parity"]["fp32"]["mean_abs_diff"] < 1e-4
    # Parity was checked at a batch size and tile shape unlike the export example.
    assert [3, 256, 256] in manifest["parity"]["fp32"]["shapes"]
    assert [1, 256, 320] in manifest["parity"]["fp32"]["shapes"]
    assert len(manifest["models"]["fp32"]["sha256"]) == 64
    assert {"torch", "onnx", "onnxruntime", "lineside"} <= set(manifest["versions"])
    assert [c["id"] for c in manifest["classes"]] == [1, 2, 3, 4]


def test_bundle_runs_on_onnxruntime_with_uint8_input_and_any_batch(trained_bundle):
    bundle = load_bundle(trained_bundle)
    backend = create_backend("ort-cpu", bundle)
    for batch in (1, 5):
        tiles = np.random.default_rng(batch).integers(0, 256, (batch, 1, 256, 256), np.uint8)
        out = backend.infer(tiles)["probabilities"]
        assert out.shape == (batch, 4, 256, 256) and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1  # sigmoid inside the graph


def test_altered_bundle_is_refused(trained_bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(trained_bundle, copy)
    model = copy / "model_fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="integrity check"):
        load_bundle(copy)

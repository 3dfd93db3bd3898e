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
        out = backend.infer(tiles)
        # The scored graph: uint8 scores, per-tile maxima (sigmoid inside) and areas.
        assert out["scores"].shape == (batch, 4, 256, 256) and out["scores"].dtype == np.uint8
        assert out["maxima"].shape == (batch, 4) and 0 <= out["maxima"].min() <= 1
        assert out["maxima"].max() <= 1
        assert (out["areas"] == np.count_nonzero(out["scores"], axis=(2, 3))).all()


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


@pytest.mark.slow
def test_the_default_export_runs_whole_strips_with_the_same_dice(trained_bundle, strip_bundle,
                                                                 screen_bundle, synth_data):
    """Whole-strip inference (the tile is the frame: no overlap, no stitching) where the
    graph runs a frame as torch does; the bundle records it, and held-out Dice is that of
    tiled inference within 0.002. A screen, which picks tiles, is refused with the fix."""
    from lineside.edge.config import ModelSettings
    from lineside.edge.pipeline.model import compose_model, screening_thresholds
    from lineside.tools.evaluation import LabelledFrames, score

    strip, tiles = load_bundle(strip_bundle), load_bundle(trained_bundle)
    assert (strip.manifest.inference, tiles.manifest.inference) == ("strip", "tiles")
    assert (strip.manifest.tile_height, strip.manifest.tile_width) == (256, 1600)
    assert strip.manifest.parity["strip"]["max_abs_diff"] < 1e-2
    frames = LabelledFrames.from_folder(synth_data, [1, 2, 3, 4], 8)
    dice = {}
    for bundle in (strip, tiles):
        model = compose_model(bundle, ModelSettings(backend="ort-cpu"))
        dice[bundle.manifest.inference] = score(model, frames, bundle.manifest.classes)["dice"]
    assert abs(dice["strip"] - dice["tiles"]) <= 0.002, dice
    with pytest.raises(BundleError, match="--inference tiles"):
        screening_thresholds(load_bundle(screen_bundle), strip)

"""Screening classifier in front of the segmentation model (real ONNX Runtime sessions):
only flagged tiles are segmented, and the result is exactly what the segmentation model
gives on those tiles. The screen is a pipeline stage with its own bundle and counters."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineside.edge.backends import create_backend
from lineside.edge.bundle import Bundle, BundleError, ClassSpec, Manifest, load_bundle
from lineside.edge.config import CameraSettings, ModelSettings
from lineside.edge.pipeline.batch import Batch
from lineside.edge.pipeline.infer import default_thresholds, infer_tiles, scored
from lineside.edge.pipeline.model import (
    LoadedModel,
    Screen,
    compose_model,
    screening_thresholds,
)
from lineside.edge.pipeline.screen import ScreenStage
from lineside.edge.tiling import cut, make_grid

pytestmark = pytest.mark.slow


def synth_tiles(synth_data, frames: int = 3) -> np.ndarray:
    images = sorted((synth_data / "train_images").glob("*.jpg"))[:frames]
    grid = make_grid((256, 1600), (256, 256))
    return np.concatenate([cut(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), grid)
                           for p in images])


def screened(trained_bundle, screen_bundle, thresholds) -> LoadedModel:
    segment, screen = load_bundle(trained_bundle), load_bundle(screen_bundle)
    return LoadedModel(segment, create_backend("ort-cpu", segment),
                       Screen(screen, create_backend("ort-cpu", screen),
                              np.asarray(thresholds, np.float32)))


def alone(trained_bundle, tiles) -> np.ndarray:
    """The segmentation model's scores on every tile, no screen."""
    bundle = load_bundle(trained_bundle)
    limits = default_thresholds(LoadedModel(bundle, None), len(tiles))
    return scored(create_backend("ort-cpu", bundle).infer(tiles, limits), limits)["scores"]


def test_every_tile_flagged_gives_the_segmentation_model_exactly(
        trained_bundle, screen_bundle, synth_data):
    tiles = synth_tiles(synth_data)
    out = infer_tiles(screened(trained_bundle, screen_bundle, [0.0] * 4), tiles)
    np.testing.assert_array_equal(out.outputs["scores"], alone(trained_bundle, tiles))
    assert out.gate.shape == (len(tiles), 4) and ((out.gate >= 0) & (out.gate <= 1)).all()
    assert out.segmented == len(tiles)


def test_no_tile_flagged_segments_nothing(trained_bundle, screen_bundle, synth_data):
    tiles = synth_tiles(synth_data)
    out = infer_tiles(screened(trained_bundle, screen_bundle, [2.0] * 4), tiles)  # > any p
    scores = out.outputs["scores"]
    assert scores.shape == (len(tiles), 4, 256, 256) and not scores.any()
    assert not out.outputs["areas"].any() and not out.outputs["maxima"].any()
    assert out.segmented == 0


def test_flagged_tiles_keep_exactly_their_flagged_classes(trained_bundle, screen_bundle,
                                                          synth_data):
    tiles = synth_tiles(synth_data, frames=4)
    scores = create_backend("ort-cpu", load_bundle(screen_bundle)).infer(tiles)["presence"]
    # The class the briefly trained classifier scores most diversely splits the tiles in
    # two halves; the other classes are never flagged.
    split = max(range(4), key=lambda k: len(np.unique(scores[:, k])))
    values = np.unique(scores[:, split])
    assert len(values) >= 2, f"the classifier scores every tile alike: {scores.max(0)}"
    thresholds = [2.0] * 4
    thresholds[split] = float(values[len(values) // 2])  # float32-exact
    model = screened(trained_bundle, screen_bundle, thresholds)
    scores_out = infer_tiles(model, tiles).outputs["scores"]
    reference = alone(trained_bundle, tiles)
    flagged = scores >= np.asarray(thresholds, np.float32)
    assert 0 < flagged.any(axis=1).sum() < len(tiles)
    for i in range(len(tiles)):
        for k in range(4):
            if flagged[i, k]:
                # a smaller batch may round a last float bit differently: 1/255 at most
                difference = np.abs(scores_out[i, k].astype(int) - reference[i, k])
                assert difference.max() <= 1
            else:
                assert not scores_out[i, k].any()
    # The stage counts what it sent on, and marks the batch with its flags.
    stage = ScreenStage(max_batch=8)
    batch = stage.process(Batch([], [], tiles, model, 0,
                                default_thresholds(model, len(tiles))))
    assert (batch.flags == flagged).all() and batch.screen_scores.shape == (len(tiles), 4)
    assert stage.segmented == int(flagged.any(axis=1).sum()) and stage.tiles == len(tiles)


def test_thresholds_come_from_the_classifier_and_config_overrides_them(
        trained_bundle, screen_bundle):
    screen, segment = load_bundle(screen_bundle), load_bundle(trained_bundle)
    tuned = [c.gate_threshold for c in screen.manifest.classes]
    assert screening_thresholds(screen, segment) == tuned
    assert screening_thresholds(screen, segment, {3: 0.25})[2] == 0.25
    with pytest.raises(BundleError, match="unknown classes"):
        screening_thresholds(screen, segment, {9: 0.5})
    model = compose_model(trained_bundle, ModelSettings(
        backend="ort-cpu", screen=str(screen_bundle), screen_thresholds={3: 0.25}))
    assert model.screen.thresholds[2] == np.float32(0.25)
    assert model.describe()["backend"] == "ort-cpu+screen"


def test_bundles_that_do_not_fit_together_are_refused(trained_bundle, screen_bundle,
                                                      tmp_path):
    segment = load_bundle(trained_bundle)
    with pytest.raises(BundleError, match="screening classifier"):
        screening_thresholds(segment, segment)  # a segmentation model as the screen
    other = tmp_path / "screen-512"
    shutil.copytree(screen_bundle, other)
    manifest = (other / "manifest.json")
    manifest.write_text(manifest.read_text().replace('"tile_width": 256', '"tile_width": 512'))
    with pytest.raises(BundleError, match="256x512 tiles"):
        compose_model(segment, ModelSettings(backend="ort-cpu", screen=str(other)))


def test_daemon_keeps_the_gate_threshold_of_a_gated_bundle():
    """A camera's threshold override must not reset the tuned presence-gate threshold."""
    manifest = Manifest("m", "mini_unet", [ClassSpec(1, "a", 0.5, 10, gate_threshold=0.7)],
                        256, 256)
    bundle = Bundle(Path("not-loaded"), manifest)
    no_backend = None  # classes_for reads the manifest only
    (spec,) = LoadedModel(bundle, no_backend).classes_for(CameraSettings(thresholds={1: 0.4}))
    assert (spec.threshold, spec.min_area, spec.gate_threshold) == (0.4, 10, 0.7)
    screen = Screen(bundle, no_backend, np.asarray([0.3], np.float32))
    (screened_spec,) = LoadedModel(bundle, no_backend, screen).classes_for(CameraSettings())
    assert screened_spec.gate_threshold == pytest.approx(0.3)


def test_padded_batches_are_few_powers_of_two_and_give_the_same_results(trained_bundle):
    from lineside.edge.backends.base import bucket_size, pad_batch

    assert [bucket_size(n) for n in (1, 2, 3, 7, 8, 9, 14)] == [1, 2, 4, 8, 8, 16, 16]
    tiles = np.random.default_rng(1).integers(0, 256, (3, 1, 64, 64), np.uint8)
    padded = pad_batch(tiles)
    assert padded.shape[0] == 4 and (padded[:3] == tiles).all() and (padded[3] == tiles[0]).all()
    backend = create_backend("ort-cpu", load_bundle(trained_bundle))
    reference = backend.infer(tiles)
    backend.bucketed = True  # what a GPU backend does
    padded_out = backend.infer(tiles)
    assert padded_out["scores"].shape == reference["scores"].shape
    assert np.abs(padded_out["scores"].astype(int) - reference["scores"]).max() <= 1
    np.testing.assert_allclose(padded_out["maxima"], reference["maxima"], atol=1e-6)


def test_screen_int8_export_is_gated_on_tile_accuracy_and_edge_eval_scores_it(
        screen_bundle, synth_data, tmp_path):
    """A classifier's INT8 variant is judged by tile accuracy at its tuned thresholds.
    This briefly trained one scores near its thresholds, so INT8 may flip decisions:
    either the gate passes with the drop recorded, or it refuses with that report and
    writes no bundle. Both are the gate working; a crash or a silent bundle is not."""
    import subprocess
    import sys

    from tests.helpers import run_module

    calibration = tmp_path / "cal"
    run_module("lineside.calibration.cli", str(synth_data), "-o", str(calibration), "--n", "32")
    bundle = tmp_path / "screen-int8"
    result = subprocess.run(
        [sys.executable, "-m", "lineside.export.cli", str(screen_bundle.parent / "screen.pt"),
         "-o", str(bundle), "--int8", "--calib", str(calibration), "--eval", str(synth_data),
         "--eval-limit", "8"], capture_output=True, text=True, timeout=600)
    if result.returncode == 0:
        manifest = load_bundle(bundle).manifest
        for key in ("fp32", "int8", "int8-trt"):
            held_out = manifest.metrics["heldout"][key]
            assert 0 <= held_out["tile_accuracy"] <= 1 and held_out["tiles"] == 8 * 7
        assert manifest.metrics["quantization"]["int8"]["attempts"][-1]["drop"] <= 0.005
    else:
        assert "misses the accuracy gate (tile accuracy may drop" in result.stderr
        assert not bundle.exists()
    scored = run_module("lineside.tools.evaluate", str(screen_bundle), str(synth_data),
                        "--limit", "4")
    assert '"defect_tile_recall"' in scored.stdout and '"tiles": 28' in scored.stdout

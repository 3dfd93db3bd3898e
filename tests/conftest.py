"""Shared fixtures: sample data paths and one small trained bundle per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_module


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small generated Severstal-layout data set (real generator, real files)."""
    out = tmp_path_factory.mktemp("synth")
    run_module("lineside.train.data.synth", "-o", str(out), "--count", "48", "--seed", "11")
    return out


@pytest.fixture(scope="session")
def trained_bundle(synth_data, tmp_path_factory) -> Path:
    """A MiniUNet trained briefly on `synth_data` and exported: the real train+export path.
    Tiled inference (256x256 tiles), as a screen needs; `strip_bundle` is the default
    export of the same checkpoint (whole strips)."""
    work = tmp_path_factory.mktemp("model")
    checkpoint = work / "mini.pt"
    run_module("lineside.train.cli", str(synth_data), "-o", str(checkpoint), "--epochs", "1",
               "--samples-per-epoch", "16", "--batch-size", "4", "--val-fraction", "0.2")
    bundle = work / "bundle"
    run_module("lineside.export.cli", str(checkpoint), "-o", str(bundle), "--inference",
               "tiles")
    return bundle


@pytest.fixture(scope="session")
def strip_bundle(trained_bundle, tmp_path_factory) -> Path:
    """`trained_bundle`'s checkpoint exported as edge-export does by default: the MiniUNet
    runs whole 256x1600 strips."""
    bundle = tmp_path_factory.mktemp("strip") / "bundle"
    run_module("lineside.export.cli", str(trained_bundle.parent / "mini.pt"), "-o",
               str(bundle))
    return bundle


@pytest.fixture(scope="session")
def quantised_bundle(trained_bundle, synth_data, tmp_path_factory) -> Path:
    """The trained MiniUNet exported with FP16 and both INT8 flavours (accuracy-gated)."""
    work = tmp_path_factory.mktemp("quantised")
    calibration = work / "cal"
    run_module("lineside.calibration.cli", str(synth_data), "-o", str(calibration),
               "--n", "48")
    bundle = work / "bundle"
    result = run_module("lineside.export.cli", str(trained_bundle.parent / "mini.pt"),
                        "-o", str(bundle), "--fp16", "--int8", "--calib", str(calibration),
                        "--eval", str(synth_data), "--eval-limit", "8")
    (work / "export.log").write_text(result.stdout)
    return bundle


@pytest.fixture(scope="session")
def screen_bundle(synth_data, tmp_path_factory) -> Path:
    """A ResNet-18 screening classifier at half resolution (as configs/screen_r18.yaml) on
    the same 256x256 tiles as `trained_bundle`, trained briefly and exported: the real
    classifier train+export path."""
    work = tmp_path_factory.mktemp("screen")
    checkpoint = work / "screen.pt"
    run_module("lineside.train.cli", f"data={synth_data}", f"out={checkpoint}",
               "model.architecture=classifier", "model.encoder_name=resnet18",
               "model.downsample=2", "epochs=2",
               "samples_per_epoch=48", "batch_size=4", "limit=16", "val_fraction=0.25")
    bundle = work / "bundle"
    run_module("lineside.export.cli", str(checkpoint), "-o", str(bundle))
    return bundle

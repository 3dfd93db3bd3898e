"""One data set, three label formats, the same answers: `edge-labels convert` writes the
generated set as Severstal CSV (both layouts), image + mask folders and LabelMe, and
edge-eval, edge-calibrate and edge-export's INT8 accuracy gate (real commands, real
ONNX Runtime sessions) give the same Dice, the same calibration set and the same gate
decision on every copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineside.calibration.calibration_set import MANIFEST_NAME
from lineside.edge.labels import Dataset, open_dataset
from lineside.edge.labels.convert import convert
from tests.helpers import run_module

FORMATS = {"severstal": ["--to", "severstal"],
           "severstal-old": ["--to", "severstal", "--layout", "old"],
           "mask_folders": ["--to", "mask_folders"],
           "labelme": ["--to", "labelme"]}


@pytest.fixture(scope="module")
def copies(synth_data, tmp_path_factory) -> dict[str, Path]:
    """The generated strips every format holds exactly (LabelMe has no holes: strips whose
    masks have one are left out, as the converter's report names them), as CSV, then
    converted from that CSV into each format by the command a user runs."""
    work = tmp_path_factory.mktemp("formats")
    source = open_dataset(synth_data)
    probe = convert(source, work / "probe", "labelme")
    kept = [s for s in source.samples if s.name not in probe.changed_pixels]
    assert len(kept) >= 40 and any(s.classes() for s in kept)
    base = work / "base"
    convert(Dataset(source.root, source.format, kept), base, "severstal")
    folders = {}
    for kind, flags in FORMATS.items():
        result = run_module("lineside.tools.labels", "convert", str(base), str(work / kind),
                            *flags)
        report = json.loads(result.stdout)
        assert report["exact"] and report["images"] == len(kept), report
        folders[kind] = work / kind
    return folders


def test_converted_copies_are_the_formats_they_claim(copies):
    for kind, folder in copies.items():
        info = json.loads(run_module("lineside.tools.labels", "info", str(folder)).stdout)
        assert info["format"] == kind.removesuffix("-old"), info
    first_line = (copies["severstal-old"] / "train.csv").read_text().splitlines()[0]
    assert first_line == "ImageId_ClassId,EncodedPixels"


def test_eval_dice_is_the_same_in_every_format(copies, trained_bundle, tmp_path):
    scores = {}
    for kind, folder in copies.items():
        run_module("lineside.tools.evaluate", str(trained_bundle), str(folder),
                   "--backend", "ort-cpu", "-o", str(tmp_path / kind))
        metrics = json.loads((tmp_path / kind / "metrics.json").read_text())
        scores[kind] = json.dumps(metrics, sort_keys=True)  # Dice, IoU, image level
    assert len(set(scores.values())) == 1, scores
    assert 0 < json.loads(scores["severstal"])["dice"] < 1


def test_calibration_and_int8_gate_are_the_same_in_every_format(copies, trained_bundle,
                                                                 tmp_path):
    checkpoint = trained_bundle.parent / "mini.pt"
    decisions = {}
    for kind in ("severstal", "mask_folders", "labelme"):
        calibration = tmp_path / f"cal-{kind}"
        run_module("lineside.calibration.cli", str(copies[kind]), "-o", str(calibration),
                   "--n", "16")
        calibration_sha = json.loads((calibration / MANIFEST_NAME).read_text())["sha256"]
        bundle = tmp_path / f"bundle-{kind}"
        run_module("lineside.export.cli", str(checkpoint), "-o", str(bundle), "--int8",
                   "--calib", str(calibration), "--eval", str(copies[kind]),
                   "--eval-limit", "8")
        metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
        gate = {key: [(len(a["float_layers"]), a["dice"], a["drop"]) for a in r["attempts"]]
                + [r["gate"]] for key, r in metrics["quantization"].items()}
        decisions[kind] = (calibration_sha, gate, metrics["heldout"])
    reference = decisions["severstal"]
    assert all(r["gate"] == "passed" for r in json.loads(
        (tmp_path / "bundle-severstal" / "manifest.json").read_text())
        ["metrics"]["quantization"].values())
    for kind, decision in decisions.items():
        assert decision == reference, kind


def test_edge_labels_says_why_it_cannot_convert(tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "lineside.tools.labels", "convert",
                             str(tmp_path / "empty"), str(tmp_path / "out"), "--to", "labelme"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no images" in result.stderr, result.stderr

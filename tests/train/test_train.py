"""Training: configs, losses, augmentation, splits, the model zoo, resume, DDP, edge-eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lineside.edge.config import ConfigError
from lineside.train.config import Augmentation, load_train_config
from lineside.train.data.severstal_dataset import augment, load_strips, split
from tests.helpers import CONFIGS, run_module


def test_config_file_flags_and_dotted_overrides():
    config = load_train_config(CONFIGS / "unet_r34.yaml", ["epochs=3", "optimizer.lr=1e-3",
                                                            "augment.rotate_deg=0"],
                               {"data": "d", "out": "o.pt"})
    assert config.epochs == 3 and config.optimizer.lr == 1e-3
    assert config.model.encoder_name == "resnet34" and config.augment.rotate_deg == 0
    prelim = load_train_config(CONFIGS / "prelim.yaml", ["data=d", "out=o.pt"])
    assert prelim.epochs == 3 and prelim.model.architecture == "unet"  # refines its base


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    load_train_config(CONFIGS / name, ["data=d", "out=o.pt"])


@pytest.mark.parametrize("override, message", [
    (["loss=hinge"], "loss"), (["optimizer.name=sgd"], "optimizer.name"),
    (["bogus=1"], "unknown setting"), (["crop=[250, 256]"], "multiples of 8"),
    (["epochs=many"], "expected int"), (["model.in_channels=2"], "in_channels"),
])
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(CONFIGS / "mini_unet.yaml", ["data=d", "out=o.pt", *override])


@pytest.mark.parametrize("loss", ["bce_dice", "bce", "dice", "focal", "tversky",
                                  "focal_tversky", "lovasz"])
def test_losses_fall_as_the_prediction_improves(loss):
    import torch

    from lineside.train.losses import create_loss

    target = (torch.rand(2, 4, 16, 16) > 0.7).float()
    criterion = create_loss(loss)
    good = criterion(target * 8 - 4, target)
    bad = criterion(-(target * 8 - 4), target)
    assert float(good) < float(bad)


def test_rotation_moves_masks_with_the_image():
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64), np.uint8)
    image[20:30, 20:40] = 255
    masks = (image > 0)[None].astype(np.uint8).repeat(2, axis=0)
    out_image, out_masks = augment(image, masks, Augmentation(hflip=0, vflip=0, rotate_deg=20,
                                                              translate_px=6), rng)
    assert out_masks.shape == masks.shape and set(np.unique(out_masks)) <= {0, 1}
    moved = out_image > 127
    overlap = (moved & (out_masks[0] > 0)).sum() / max(1, (moved | (out_masks[0] > 0)).sum())
    assert overlap > 0.8 and not np.array_equal(out_masks[0], masks[0])


@pytest.mark.slow
def test_k_folds_partition_the_strips(synth_data):
    strips = load_strips(synth_data)
    seen = []
    for fold in range(4):
        train, val = split(strips, 0.2, seed=0, folds=4, fold=fold)
        assert not set(train.names) & set(val.names)
        seen += val.names
    assert sorted(seen) == sorted(strips.names)


ZOO = [("mini_unet", None, 1), ("unet", "resnet18", 1), ("unet", "resnet34", 1),
       ("unetplusplus", "resnet34", 1), ("deeplabv3plus", "resnet34", 1),
       ("fpn", "resnet34", 1), ("segformer", "mit_b0", 3), ("unet", "efficientnet-b0", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("architecture, encoder, channels", ZOO)
def test_every_architecture_trains_saves_reloads_and_exports(synth_data, tmp_path,
                                                             architecture, encoder, channels):
    checkpoint = tmp_path / "m.pt"
    args = ["data=" + str(synth_data), f"out={checkpoint}", f"model.architecture={architecture}",
            f"model.in_channels={channels}", "epochs=1", "samples_per_epoch=2",
            "batch_size=2", "crop=[64, 128]", "tile=[64, 128]", "limit=6",
            "val_fraction=0.2"]
    if encoder:
        args.append(f"model.encoder_name={encoder}")
    run_module("lineside.train.cli", *args)
    from lineside.train.checkpoint import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    assert meta["architecture"] == architecture and meta["in_channels"] == channels
    assert (tmp_path / "m.last.pt").exists() and (tmp_path / "m.png").exists()
    run_module("lineside.export.cli", str(checkpoint), "-o", str(tmp_path / "bundle"))
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["parity"]["fp32"]["mean_abs_diff"] < 1e-4


@pytest.mark.slow
def test_resume_continues_where_the_last_checkpoint_stopped(synth_data, tmp_path):
    base = [f"data={synth_data}", f"out={tmp_path / 'm.pt'}", "samples_per_epoch=8",
            "limit=12"]
    # A two-epoch run that stops after its first epoch (the time budget stands in for a
    # killed job), then resumed: its schedule is the two-epoch one.
    run_module("lineside.train.cli", "--config", str(CONFIGS / "mini_unet.yaml"), *base,
               "epochs=2", "max_minutes=0.00001")
    result = run_module("lineside.train.cli", "--config", str(CONFIGS / "mini_unet.yaml"),
                        *base, "epochs=2", "resume=true")
    history = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert "resumed after epoch 1" in result.stderr
    # the same curve as one uninterrupted run (optimiser, scheduler, scaler, RNG restored)
    straight = tmp_path / "straight"
    run_module("lineside.train.cli", "--config", str(CONFIGS / "mini_unet.yaml"), *base[:1],
               f"out={straight / 'm.pt'}", *base[2:], "epochs=2")
    reference = [json.loads(line) for line in (straight / "m.jsonl").read_text().splitlines()]
    for resumed, uninterrupted in zip(history, reference, strict=True):
        assert resumed["loss"] == pytest.approx(uninterrupted["loss"], abs=1e-6)
        assert resumed["val_dice"] == pytest.approx(uninterrupted["val_dice"], abs=1e-6)


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_matches_one_process(synth_data, tmp_path):
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    script = Path(__file__).parent / "ddp_step.py"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    subprocess.run([sys.executable, str(script), str(synth_data), str(single)], check=True,
                   env=env, timeout=300)
    # --standalone: a private rendezvous on a free port, so parallel runs cannot collide.
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", str(script), str(synth_data), str(double)],
                         env=env, timeout=300, capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert abs(one["loss"] - two["loss"]) < 1e-5
    assert np.allclose(one["params"], two["params"], atol=1e-5)
    # validation sharded over the ranks, counts gathered: the one-process scores
    assert one["val_strips"] == two["val_strips"] == 7
    assert abs(one["val_dice"] - two["val_dice"]) <= 1e-6
    assert abs(one["val_dice_tuned"] - two["val_dice_tuned"]) <= 1e-6
    assert one["tuned"] == two["tuned"]


@pytest.mark.slow
def test_edge_eval_on_bundle_and_checkpoint_agree(trained_bundle, synth_data, tmp_path):
    bundle = run_module("lineside.tools.evaluate", str(trained_bundle), str(synth_data),
                        "--limit", "8", "-o", str(tmp_path / "bundle"))
    ckpt = run_module("lineside.tools.evaluate", str(trained_bundle.parent / "mini.pt"),
                      str(synth_data), "--limit", "8", "-o", str(tmp_path / "ckpt"))
    a = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    assert abs(a["dice"] - b["dice"]) <= 0.002
    assert 0 <= a["pixel_accuracy"] <= 1 and set(a["image_level"]) == {"1", "2", "3", "4"}
    assert len(list((tmp_path / "bundle").glob("worst-*.png"))) == 3
    assert "Dice" in bundle.stdout or "dice" in bundle.stdout
    assert ckpt.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("architecture, encoder", [("mini_unet", None), ("unet", "resnet18")])
def test_presence_gate_trains_exports_and_gates_in_the_runtime(synth_data, tmp_path,
                                                               architecture, encoder):
    from lineside.edge.backends import create_backend
    from lineside.edge.bundle import load_bundle
    from lineside.edge.pipeline.infer import run_model
    from lineside.edge.pipeline.model import LoadedModel

    checkpoint = tmp_path / "g.pt"
    args = [f"data={synth_data}", f"out={checkpoint}", f"model.architecture={architecture}",
            "model.gate=true", "epochs=1", "samples_per_epoch=4", "batch_size=2",
            "crop=[64, 128]", "tile=[64, 128]", "limit=8", "val_fraction=0.25"]
    if encoder:
        args.append(f"model.encoder_name={encoder}")
    run_module("lineside.train.cli", *args)
    run_module("lineside.export.cli", str(checkpoint), "-o", str(tmp_path / "bundle"))
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.presence_name == "presence"
    assert all(hasattr(c, "gate_threshold") for c in bundle.manifest.classes)
    backend = create_backend("ort-cpu", bundle)
    gray = np.random.default_rng(0).integers(60, 140, (64, 300), dtype=np.uint8)
    out = run_model(LoadedModel(bundle, backend), gray)
    scores, presence = out.scores, out.gate
    assert scores.scores.shape == (4, 64, 300) and presence.shape == (4,)
    assert ((presence >= 0) & (presence <= 1)).all()


@pytest.mark.slow
def test_screening_classifier_trains_exports_and_is_refused_by_the_segmentation_daemon(
        synth_data, tmp_path):
    from lineside.edge.backends import create_backend
    from lineside.edge.bundle import load_bundle

    checkpoint = tmp_path / "screen.pt"
    result = run_module("lineside.train.cli", f"data={synth_data}", f"out={checkpoint}",
                        "model.architecture=classifier", "model.encoder_name=resnet18",
                        "epochs=1", "samples_per_epoch=4", "batch_size=2", "crop=[64, 128]",
                        "tile=[64, 128]", "limit=8", "val_fraction=0.25")
    assert "val Dice" in result.stdout  # image-level accuracy, reported under one key
    run_module("lineside.export.cli", str(checkpoint), "-o", str(tmp_path / "bundle"))
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.task == "classification"
    assert bundle.manifest.output_name == "presence"
    assert 0 <= bundle.manifest.classes[0].gate_threshold <= 1
    tiles = np.random.default_rng(0).integers(0, 256, (3, 1, 64, 128), np.uint8)
    outputs = create_backend("ort-cpu", bundle).infer(tiles)
    assert set(outputs) == {"presence"} and outputs["presence"].shape == (3, 4)
    refused = subprocess.run([sys.executable, "-m", "lineside.edge.cli.serve",
                              str(tmp_path / "bundle"), "--backend", "ort-cpu"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "classification" in refused.stderr


@pytest.mark.slow
def test_held_out_test_split_is_scored_once_and_recorded(synth_data, tmp_path):
    from lineside.train.checkpoint import load_checkpoint

    checkpoint = tmp_path / "m.pt"
    run_module("lineside.train.cli", f"data={synth_data}", f"out={checkpoint}", "epochs=1",
               "samples_per_epoch=4", "test_fraction=0.25", "val_fraction=0.2")
    _, meta = load_checkpoint(checkpoint)
    metrics = meta["metrics"]
    assert metrics["test_strips"] == len(metrics["test_images"]) > 0
    assert 0 <= metrics["test_dice"] <= 1
    assert metrics["train_strips"] + metrics["val_strips"] + metrics["test_strips"] == 48


def test_local_pretrained_encoder_weights_are_loaded(tmp_path):
    import torch

    from lineside.train.models import create_model

    donor = create_model("unet", encoder_name="resnet18", in_channels=1, classes=4)
    path = tmp_path / "encoder.pth"
    torch.save(donor.encoder.state_dict(), path)
    model = create_model("unet", encoder_name="resnet18", in_channels=1, classes=4,
                         encoder_weights=str(path))
    for key, value in donor.encoder.state_dict().items():
        assert torch.equal(value, model.encoder.state_dict()[key])

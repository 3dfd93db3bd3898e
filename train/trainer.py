"""Fit a segmentation model on a Severstal-layout folder and write a checkpoint.

Random crops for training, full strips for validation; BCE + soft Dice; the best epoch by
validation Kaggle Dice is kept, then per-class thresholds and minimum areas are tuned on
the validation strips and stored in the checkpoint for export.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from lineside.train.checkpoint import save_checkpoint
from lineside.train.data.severstal_dataset import CropDataset, StripSet, load_strips, split
from lineside.train.data.synth import CLASS_NAMES
from lineside.train.models import create_model, normalise
from lineside.train.tuning import class_dice, tune_class

log = logging.getLogger("lineside.train")


@dataclass
class TrainConfig:
    data: str
    out: str
    architecture: str = "mini_unet"
    model_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    max_minutes: float = 0.0  # stop after this much training time (0: no limit)
    batch_size: int = 4
    crop: tuple[int, int] = (256, 256)
    tile: tuple[int, int] = (256, 256)  # what the runtime feeds the exported model
    samples_per_epoch: int = 128
    lr: float = 5e-3
    val_fraction: float = 0.15
    seed: int = 0
    limit: int = 0  # use only the first N strips (0: all)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = torch.sigmoid(logits)
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return 1 - ((2 * inter + 1) / (total + 1)).mean()


@torch.no_grad()
def predict_strips(model: nn.Module, strips: StripSet, mean: float, std: float,
                   batch: int = 4) -> np.ndarray:
    """(N, K, H, W) float16 probabilities on full strips."""
    model.eval()
    out = []
    for i in range(0, len(strips.names), batch):
        frames = torch.from_numpy(strips.images[i:i + batch])[:, None]
        out.append(torch.sigmoid(model(normalise(frames, mean, std))).half().numpy())
    return np.concatenate(out)


def evaluate(probabilities: np.ndarray, strips: StripSet,
             thresholds: list[float], min_areas: list[int]) -> dict[str, Any]:
    per_class = []
    for k in range(len(strips.class_ids)):
        truth = (strips.bits >> k) & 1
        pred = probabilities[:, k] > thresholds[k]
        areas = pred.reshape(len(pred), -1).sum(1)
        pred &= (areas >= min_areas[k])[:, None, None]
        per_class.append(class_dice(pred, truth.astype(bool)))
    dice = np.stack(per_class, axis=1)
    return {"dice": float(dice.mean()),
            "dice_per_class": {str(c): float(dice[:, k].mean())
                               for k, c in enumerate(strips.class_ids)}}


def tune_post_processing(probabilities: np.ndarray, strips: StripSet) -> list[dict[str, Any]]:
    """Per-class threshold and minimum area that maximise validation Dice."""
    tuned = []
    for k, class_id in enumerate(strips.class_ids):
        threshold, min_area, _ = tune_class(probabilities[:, k], (strips.bits >> k) & 1)
        tuned.append({"id": class_id, "name": CLASS_NAMES.get(class_id, f"class{class_id}"),
                      "threshold": threshold, "min_area": min_area})
    return tuned


def fit(config: TrainConfig) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    strips = load_strips(config.data, limit=config.limit)
    train_set, val_set = split(strips, config.val_fraction, config.seed)
    if not len(val_set.names):
        raise ValueError("validation split is empty: use more strips or a larger val_fraction")
    mean = float(train_set.images.mean() / 255.0)
    std = float(train_set.images.std() / 255.0) or 1.0
    log.info("%d training / %d validation strips, mean %.3f std %.3f", len(train_set.names),
             len(val_set.names), mean, std)

    classes = len(strips.class_ids)
    params = {"in_channels": 1, "classes": classes, **config.model_params}
    model = create_model(config.architecture, **params)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    bce = nn.BCEWithLogitsLoss()
    dataset = CropDataset(train_set, tuple(config.crop), config.seed, config.samples_per_epoch)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False, num_workers=0)

    history_path = out.with_suffix(".jsonl")
    history_path.write_text("")
    best: dict[str, Any] = {"dice": -1.0}
    best_state = None
    began = time.monotonic()
    for epoch in range(config.epochs):
        model.train()
        dataset.epoch = epoch
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                   leave=False, mininterval=2.0, disable=None)
        for images, targets in bar:
            logits = model(normalise(images, mean, std))
            loss = bce(logits, targets) + soft_dice_loss(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        scheduler.step()
        probabilities = predict_strips(model, val_set, mean, std)
        untuned = evaluate(probabilities, val_set, [0.5] * classes, [0] * classes)
        tuned = tune_post_processing(probabilities, val_set)
        scores = evaluate(probabilities, val_set, [c["threshold"] for c in tuned],
                          [c["min_area"] for c in tuned])
        elapsed = time.monotonic() - began
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                  "val_dice": scores["dice"], "val_dice_untuned": untuned["dice"],
                  "val_dice_per_class": scores["dice_per_class"], "elapsed_s": round(elapsed, 1)}
        with open(history_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info("epoch %d loss %.4f val Dice %.4f tuned, %.4f at 0.5 (%.0f s)", epoch + 1,
                 record["loss"], scores["dice"], untuned["dice"], elapsed)
        # Select on the metric the line will see: Dice after tuned post-processing.
        if scores["dice"] > best["dice"]:
            best = {**scores, "epoch": epoch + 1, "untuned": untuned["dice"], "classes": tuned}
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if config.max_minutes and elapsed > config.max_minutes * 60:
            log.info("time budget of %.1f min reached after epoch %d", config.max_minutes,
                     epoch + 1)
            break

    model.load_state_dict(best_state)
    log.info("best epoch %d: val Dice %.4f with tuned post-processing (%.4f at 0.5)",
             best["epoch"], best["dice"], best["untuned"])
    meta = {
        # Pretrained weights are in the state dict now; a reload must not need the file.
        "architecture": config.architecture,
        "model_params": {k: v for k, v in params.items() if k != "encoder_weights"},
        "classes": best["classes"],
        "in_channels": 1, "tile": list(config.tile), "frame": list(strips.images.shape[1:]),
        "mean": mean, "std": std,
        "metrics": {"val_dice_untuned": best["untuned"], "val_dice": best["dice"],
                    "val_dice_per_class": best["dice_per_class"], "best_epoch": best["epoch"],
                    "val_strips": len(val_set.names), "train_strips": len(train_set.names)},
        "train_config": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in asdict(config).items()},
    }
    save_checkpoint(out, model, meta)
    plot_history(history_path, out.with_suffix(".png"))
    return meta


def plot_history(history_path: Path, png_path: Path) -> None:
    """Training curve: loss and validation Dice per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in history_path.read_text().splitlines() if line]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["loss"] for r in rows], "o-", label="train loss (BCE+Dice)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_dice"] for r in rows], "s-", color="tab:green",
             label="val Kaggle Dice (tuned)")
    ax2.plot(epochs, [r["val_dice_untuned"] for r in rows], "^--", color="tab:olive",
             label="val Dice at 0.5")
    ax2.set_ylabel("Dice")
    fig.legend(loc="lower center", ncol=3, fontsize=7)
    fig.subplots_adjust(bottom=0.25)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

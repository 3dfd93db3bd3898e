"""Fit a segmentation model on a Severstal-layout folder and write a checkpoint.

Random crops for training, full strips for validation; BCE + soft Dice; the best epoch by
validation Kaggle Dice is kept, then per-class thresholds and minimum areas are tuned on
the validation strips and stored in the checkpoint for export.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from lineside.train.checkpoint import save_checkpoint, start_from
from lineside.train.config import TrainConfig
from lineside.train.data.severstal_dataset import (
    CropDataset,
    StripSet,
    hold_out,
    load_strips,
    split,
)
from lineside.train.data.synth import CLASS_NAMES
from lineside.train.losses import create_loss
from lineside.train.models import CLASSIFIERS, create_model, normalise, split_output
from lineside.train.progress import progress
from lineside.train.validation import UNTUNED, ValidationCounts, measure

log = logging.getLogger("lineside.train")


def screening_accuracy(counts: ValidationCounts,
                       classes: list[dict[str, Any]]) -> dict[str, Any]:
    """Image-level accuracy with given per-class thresholds (`gate_threshold`)."""
    truth = counts.truth > 0
    presence = _presence(counts)
    accuracy = [float(((presence[:, k] >= c["gate_threshold"]) == truth[:, k]).mean())
                for k, c in enumerate(classes)]
    return {"dice": float(np.mean(accuracy)),
            "dice_per_class": {str(c["id"]): a for c, a in zip(classes, accuracy, strict=True)}}


def screening_scores(counts: ValidationCounts, class_ids: tuple[int, ...],
                     names: dict[int, str]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Image-level accuracy of a screening classifier, at 0.5 and at per-class thresholds
    tuned on validation. Reported under "dice" so that model selection and the logs read
    one key; the checkpoint's classes carry the tuned thresholds as `gate_threshold`."""
    truth = counts.truth > 0
    presence = _presence(counts)
    untuned_acc = ((presence >= 0.5) == truth).mean(0)
    tuned, accuracy = [], []
    for k, class_id in enumerate(class_ids):
        best = max(((t, float(((presence[:, k] >= t) == truth[:, k]).mean()))
                    for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)), key=lambda x: x[1])
        tuned.append({"id": class_id, "name": names.get(class_id, CLASS_NAMES.get(
            class_id, f"class{class_id}")), "threshold": 0.5, "min_area": 0,
            "gate_threshold": best[0]})
        accuracy.append(best[1])
    per_class = {str(c): float(a) for c, a in zip(class_ids, accuracy, strict=True)}
    return ({"dice": float(untuned_acc.mean())}, tuned,
            {"dice": float(np.mean(accuracy)), "dice_per_class": per_class})


def _presence(counts: ValidationCounts) -> np.ndarray:
    if counts.presence is None:
        raise ValueError("the model gives no presence scores")
    return counts.presence


def validation_scores(counts: ValidationCounts, class_ids: tuple[int, ...],
                      names: dict[int, str]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(untuned score, tuned post-processing, tuned score) of one validation pass."""
    if not counts.segments:  # a screening classifier is judged image by image
        return screening_scores(counts, class_ids, names)
    untuned = counts.dice([{"id": c, **UNTUNED} for c in class_ids])
    tuned = counts.tune(class_ids, names or CLASS_NAMES)
    return untuned, tuned, counts.dice(tuned)


def model_params(config: TrainConfig, classes: int) -> dict[str, Any]:
    settings = config.model
    params: dict[str, Any] = {"in_channels": settings.in_channels, "classes": classes}
    if settings.encoder_weights:  # every architecture takes it (train/models/weights.py)
        params["encoder_weights"] = settings.encoder_weights
    if settings.architecture == "mini_unet":
        params["norm"] = settings.norm
        if settings.widths:
            params["widths"] = list(settings.widths)
    elif settings.architecture in CLASSIFIERS:
        params["backbone"] = settings.encoder_name or "resnet18"
        params["downsample"] = settings.downsample
        return params
    else:
        params["encoder_name"] = settings.encoder_name or "resnet34"
    if settings.gate:
        params["gate"] = True
    return params


def _optimiser(config: TrainConfig, model: nn.Module):
    settings = config.optimizer
    kind = torch.optim.AdamW if settings.name == "adamw" else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif settings.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", patience=settings.plateau_patience, factor=0.5)
    else:
        scheduler = None
    return optimizer, scheduler


def make_loader(dataset: CropDataset, batch_size: int, workers: int = 0) -> DataLoader:
    """Under DDP each rank takes its share of every global batch of `batch_size` crops.
    `workers` processes decode and augment (each crop depends only on its index and the
    epoch, so the crops are the same whatever the worker count)."""
    sampler, per_rank = None, batch_size
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world} processes")
        sampler, per_rank = DistributedSampler(dataset, shuffle=False), batch_size // world
    # forkserver, not fork: a process that already used OpenCV's thread pool (reading the
    # first image) deadlocks in a forked child's first cv2 call. The server imports the
    # data code (torch, OpenCV) once; workers fork from it. Workers are not persistent:
    # each epoch's workers must see the dataset's new `epoch` (persistent ones keep the
    # copy they started with and would draw the first epoch's crops forever).
    context = None
    if workers:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["lineside.train.data.severstal_dataset"])
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers,
                      worker_init_fn=_one_thread, prefetch_factor=4 if workers else None,
                      multiprocessing_context=context)


def _one_thread(_worker: int) -> None:
    # A worker decodes with OpenCV and numpy: torch's intra-op threads would only compete
    # with the training process for the same cores.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion,
               optimizer, scaler, mean: float, std: float, channels: int, device: str,
               amp: bool, channels_last: bool, gate_weight: float = 0.0) -> float:
    # uint8 to the device, floats there: a quarter of the host-to-device bytes
    inputs = normalise(images.to(device, non_blocking=True), mean, std)
    if channels == 3:
        inputs = inputs.expand(-1, 3, -1, -1)
    targets = targets.to(device, non_blocking=True).float()
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cuda", enabled=amp):
        logits, presence = split_output(model(inputs))
        if logits.ndim == 2:  # a screening classifier: (N, K) presence logits only
            logits, presence, gate_weight = None, logits, 1.0
            loss = torch.zeros((), device=inputs.device)
        else:
            loss = criterion(logits, targets)
        if presence is not None:  # the gate learns "is the class anywhere in this crop"
            loss = loss + gate_weight * nn.functional.binary_cross_entropy_with_logits(
                presence, targets.amax(dim=(2, 3)))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # DDP averages the gradients across ranks here
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


def splits_of(config: TrainConfig) -> tuple[StripSet, StripSet, StripSet, StripSet | None]:
    """(all strips, training, validation, test or None) as `config` splits its data: the
    one rule, so a checkpoint's validation strips can be found again from its config."""
    strips = load_strips(config.data, tuple(config.class_ids), config.limit,
                         tuple(config.resize) if config.resize else None,
                         config.label_names or None, config.cache_dir or None)
    test_set = None
    if config.test_fraction:
        strips, test_set = hold_out(strips, config.test_fraction, config.seed)
    train_set, val_set = split(strips, config.val_fraction, config.seed, config.folds,
                               config.fold)
    if not len(val_set.names):
        raise ValueError("validation split is empty: use more strips or a larger val_fraction")
    return strips, train_set, val_set, test_set


def last_path(out: Path) -> Path:
    return out.with_name(out.stem + ".last" + out.suffix)


def fit(config: TrainConfig, device: str | None = None) -> dict[str, Any] | None:
    """Train, keeping the best checkpoint (by tuned validation Dice) at `config.out` and
    the last one beside it (`<name>.last.pt`, used by `resume`)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    on_cuda = device.startswith("cuda")
    main_process = rank == 0
    torch.manual_seed(config.seed)
    if not on_cuda:
        world = dist.get_world_size() if distributed else 1
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    strips, train_set, val_set, test_set = splits_of(config)
    mean, std = train_set.pixel_statistics()
    std = std or 1.0
    log.info("%d training / %d validation strips, mean %.3f std %.3f, %s on %s",
             len(train_set.names), len(val_set.names), mean, std,
             config.model.architecture, device)

    classes = len(strips.class_ids)
    params = model_params(config, classes)
    model = create_model(config.model.architecture, **params)
    if config.init:
        start_from(model, config.init, config.model.architecture, params)
        log.info("starting from the weights of %s", config.init)
    model = model.to(device)
    if on_cuda and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model  # what is saved; `model` may become its DDP wrapper
    if distributed:
        if on_cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            net = model
        model = DistributedDataParallel(model, device_ids=[device] if on_cuda else None)
    optimizer, scheduler = _optimiser(config, model)
    criterion = create_loss(config.loss)
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda and config.amp)
    dataset = CropDataset(train_set, tuple(config.crop), config.seed, config.samples_per_epoch,
                          config.defect_share, config.augment, config.class_weights)
    loader = make_loader(dataset, config.batch_size, config.workers)
    channels = config.model.in_channels

    history_path = out.with_suffix(".jsonl")
    best: dict[str, Any] = {"dice": -1.0}
    best_state, start_epoch, elapsed_before, stale = None, 0, 0.0, 0
    if config.resume and last_path(out).exists():
        state = torch.load(last_path(out), map_location=device, weights_only=True)
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        # The random streams as they were after that epoch (dropout, anything drawn from
        # torch's generators): a resumed run continues the curve it would have drawn.
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        if on_cuda and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_epoch, elapsed_before = state["epoch"], state["elapsed_s"]
        best, stale = state["best"], state["stale"]
        best_state = state.get("best_state_dict")
        log.info("resumed after epoch %d (best val Dice %.4f)", start_epoch, best["dice"])
    elif main_process:
        history_path.write_text("")
    began = time.monotonic() - elapsed_before
    names = {v: k for k, v in config.label_names.items()}
    for epoch in range(start_epoch, config.epochs):
        model.train()
        dataset.epoch = epoch
        losses = []
        batches = progress(loader, len(loader), f"epoch {epoch + 1}/{config.epochs} "
                           "training", "crops", scale=loader.batch_size or 1,
                           enabled=main_process)
        for images, targets in batches:
            losses.append(train_step(model, images, targets, criterion, optimizer, scaler,
                                     mean, std, channels, device, on_cuda and config.amp,
                                     on_cuda and config.channels_last, config.gate_weight))
        # Each rank predicts its share of the strips; the gathered counts are the same on
        # every rank, so all agree on the best epoch and on stopping.
        counts = measure(net, val_set, mean, std, tuple(config.tile), channels,
                         device).gathered()
        untuned, tuned, scores = validation_scores(counts, strips.class_ids, names)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(scores["dice"])
        elif scheduler is not None:
            scheduler.step()
        elapsed = time.monotonic() - began
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                  "val_dice": scores["dice"], "val_dice_untuned": untuned["dice"],
                  "val_dice_per_class": scores["dice_per_class"],
                  "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1)}
        if main_process:
            with open(history_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        log.info("epoch %d loss %.4f val Dice %.4f tuned, %.4f at 0.5 (%.0f s)", epoch + 1,
                 record["loss"], scores["dice"], untuned["dice"], elapsed)
        # Select on the metric the line will see: Dice after tuned post-processing.
        if scores["dice"] > best["dice"]:
            best = {**scores, "epoch": epoch + 1, "untuned": untuned["dice"], "classes": tuned}
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            stale = 0
        else:
            stale += 1
        if main_process:
            torch.save({"state_dict": net.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "epoch": epoch + 1, "elapsed_s": elapsed, "best": best,
                        "stale": stale, "best_state_dict": best_state,
                        "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if on_cuda else None},
                       last_path(out))
        if config.early_stopping and stale >= config.early_stopping:
            log.info("early stopping: no better val Dice for %d epochs", stale)
            break
        if config.max_minutes and elapsed > config.max_minutes * 60:
            log.info("time budget of %.1f min reached after epoch %d", config.max_minutes,
                     epoch + 1)
            break

    if not main_process:
        return None
    net.load_state_dict(best_state)
    test_metrics: dict[str, Any] = {}
    if test_set is not None and len(test_set.names):
        # The one look at the test split: best epoch, post-processing tuned on validation.
        counts = measure(net, test_set, mean, std, tuple(config.tile), channels, device,
                         shard=(0, 1))
        result = counts.dice(best["classes"]) if counts.segments else \
            screening_accuracy(counts, best["classes"])
        test_metrics = {"test_dice": result["dice"], "test_strips": len(test_set.names),
                        "test_images": test_set.names}
        log.info("held-out test split: Dice %.4f on %d strips", result["dice"],
                 len(test_set.names))
    log.info("best epoch %d: val Dice %.4f with tuned post-processing (%.4f at 0.5)",
             best["epoch"], best["dice"], best["untuned"])
    meta = {
        # Pretrained weights are in the state dict now; a reload must not need the file.
        "architecture": config.model.architecture,
        "model_params": {k: v for k, v in params.items() if k != "encoder_weights"},
        "classes": best["classes"],
        "in_channels": channels, "tile": list(config.tile),
        "frame": list(strips.shape), "mean": mean, "std": std,
        "metrics": {"val_dice_untuned": best["untuned"], "val_dice": best["dice"],
                    "val_dice_per_class": best["dice_per_class"], "best_epoch": best["epoch"],
                    "val_strips": len(val_set.names), "train_strips": len(train_set.names),
                    **test_metrics},
        "train_config": config.to_json(),
    }
    save_checkpoint(out, net.cpu(), meta)
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

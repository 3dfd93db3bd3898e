"""Scoring a model the way the line runs it: tile, screen, infer, stitch, post-process.

Used by the INT8 accuracy gate in export and by `edge-eval`, so training, export and
deployment are judged by the same numbers (Kaggle Dice per image and class, from
lineside.edge.scoring) on frames read by the one data reader (lineside.edge.labels), in
any label format it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lineside.edge.backends.base import PRESENCE, infer_in_batches
from lineside.edge.bundle import ClassSpec
from lineside.edge.labels import open_dataset
from lineside.edge.pipeline.decide import frame_verdict
from lineside.edge.pipeline.infer import run_model
from lineside.edge.pipeline.model import LoadedModel
from lineside.edge.pipeline.screen import tiles_to_segment
from lineside.edge.postprocess import frame_masks, thresholds_of
from lineside.edge.scoring import Agreement, Scorecard
from lineside.edge.tiling import cut, make_grid


@dataclass
class LabelledFrames:
    names: list[str]
    images: list[np.ndarray]  # (H, W) uint8
    truths: list[np.ndarray]  # (K, H, W) uint8

    @classmethod
    def from_folder(cls, root: str | Path, class_ids: list[int], limit: int = 0,
                    exclude: set[str] | None = None,
                    label_names: dict[str, int] | None = None) -> LabelledFrames:
        """Every labelled image of a folder in any supported format (edge.labels)."""
        dataset = open_dataset(root, label_names=label_names, require_labels=True,
                               exclude=exclude, limit=limit)
        images, truths = [], []
        for sample in dataset.samples:
            gray = sample.image()
            images.append(gray)
            truths.append(sample.masks(tuple(class_ids), gray.shape))
        return cls(dataset.names, images, truths)


def score(model: LoadedModel, frames: LabelledFrames, classes: list[ClassSpec],
          keep_masks: bool = False) -> dict[str, object]:
    """Kaggle Dice, IoU, pixel accuracy and image-level precision/recall per class, with
    the model's post-processing (and screen). `keep_masks` adds per-frame predictions for
    overlays; behind a screen, `screen` says how many tiles were segmented."""
    card = Scorecard([c.id for c in classes])
    kept, per_frame, tiles, segmented = [], [], 0, 0
    for gray, truth in zip(frames.images, frames.truths, strict=True):
        out = run_model(model, gray, thresholds=thresholds_of(classes))
        masks = frame_masks(out.scores, out.gate, classes)
        per_frame.append(card.add(masks, truth))
        tiles, segmented = tiles + out.tiles, segmented + out.segmented
        if keep_masks:
            kept.append(masks)
    result = card.summary()
    if model.screen is not None:
        result["screen"] = {"tiles": tiles, "segmented": segmented,
                            "segmented_share": round(segmented / max(1, tiles), 4)}
    if keep_masks:
        result["per_frame_dice"] = per_frame
        result["masks"] = kept
    return result


def score_screen(model: LoadedModel, frames: LabelledFrames, classes: list[ClassSpec],
                 max_batch: int = 8) -> dict[str, object]:
    """A screening classifier judged the way the runtime uses it: tile by tile, a class
    flagged when its score reaches the class's `gate_threshold`, against whether the
    tile holds any pixel of that class. Recall matters most: a defect tile the screen
    misses is never segmented."""
    flags, truths = [], []
    thresholds = np.asarray([c.gate_threshold for c in classes], np.float32)
    for gray, truth in zip(frames.images, frames.truths, strict=True):
        grid = make_grid(gray.shape, model.tile_shape)
        tiles = cut(gray, grid, model.bundle.manifest.in_channels)
        scores = infer_in_batches(model.backend, tiles, max_batch)[PRESENCE]
        flags.append(scores >= thresholds)
        truths.append(cut(truth, grid).reshape(grid.count, len(classes), -1).any(axis=2))
    flagged, true = np.concatenate(flags), np.concatenate(truths)
    per_class = {}
    for k, c in enumerate(classes):
        tp = int((flagged[:, k] & true[:, k]).sum())
        per_class[str(c.id)] = {
            "accuracy": float((flagged[:, k] == true[:, k]).mean()),
            "recall": tp / int(true[:, k].sum()) if true[:, k].any() else None,
            "flagged": int(flagged[:, k].sum()), "support": int(true[:, k].sum())}
    defect = true.any(axis=1)
    kept = tiles_to_segment(flagged)
    return {"tile_accuracy": float((flagged == true).mean()),
            "defect_tile_recall": float((kept & defect).sum() / max(1, defect.sum())),
            "tiles_segmented_share": float(kept.mean()), "tiles": len(flagged),
            "per_class": per_class, "images": len(frames.names)}


def compare_variants(models: dict[str, LoadedModel], frames: LabelledFrames,
                     classes: list[ClassSpec]) -> dict[str, dict[str, object]]:
    """Every model on the same frames: its Kaggle Dice against the labels, and its
    agreement with the first model (the reference, normally FP32): per-class Dice between
    their masks and verdict agreement."""
    ids = [c.id for c in classes]
    reference_label = next(iter(models))
    reference = [frame_verdict(models[reference_label], gray, classes)
                 for gray in frames.images]
    report = {}
    for label, model in models.items():
        card, agreement = Scorecard(ids), Agreement(ids)
        for gray, truth, (ref_masks, ref_verdict) in zip(frames.images, frames.truths,
                                                        reference, strict=True):
            masks, verdict = frame_verdict(model, gray, classes)
            card.add(masks, truth)
            agreement.add(masks, ref_masks, verdict, ref_verdict)
        summary = card.summary()
        report[label] = {"dice": summary["dice"], "dice_per_class": summary["dice_per_class"],
                         f"vs_{reference_label}": agreement.summary()}
    return report

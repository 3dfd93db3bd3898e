"""Scoring a bundle model the way the line runs it: tile, infer, stitch, post-process.

Used by the INT8 accuracy gate in export and by `edge-eval` on bundles, so training,
export and deployment are judged by the same numbers (Kaggle Dice per image and class).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineside.edge.backends import Backend
from lineside.edge.backends.base import infer_in_batches
from lineside.edge.backends.screened import tiles_to_segment
from lineside.edge.bundle import ClassSpec
from lineside.edge.postprocess import apply_gate, threshold_masks
from lineside.edge.scoring import dice_pairs, iou_pairs
from lineside.edge.severstal import masks_for, read_labels
from lineside.edge.tiling import cut, make_grid, stitch


@dataclass
class LabelledFrames:
    names: list[str]
    images: list[np.ndarray]  # (H, W) uint8
    truths: list[np.ndarray]  # (K, H, W) uint8

    @classmethod
    def from_folder(cls, root: str | Path, class_ids: list[int], limit: int = 0,
                    exclude: set[str] | None = None) -> LabelledFrames:
        root = Path(root)
        labels = read_labels(root / "train.csv")
        folder = root / "train_images" if (root / "train_images").is_dir() else root
        names = sorted(p.name for p in folder.iterdir()
                       if p.suffix.lower() in (".jpg", ".png") and p.name not in (exclude or ()))
        if limit:
            names = names[:limit]
        images, truths = [], []
        for name in names:
            gray = cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE)
            images.append(gray)
            truths.append(masks_for(labels.get(name, {}), gray.shape, tuple(class_ids)))
        return cls(names, images, truths)


def predict_frame(backend: Backend, gray: np.ndarray, tile: tuple[int, int],
                  in_channels: int = 1, max_batch: int = 8
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(K, H, W) probabilities and (K,) frame presence (or None) for one frame, exactly
    as the daemon computes them."""
    grid = make_grid(gray.shape, tile)
    probabilities, presence = infer_in_batches(backend, cut(gray, grid, in_channels),
                                               max_batch)
    return stitch(probabilities, grid), None if presence is None else presence.max(axis=0)


def score(backend: Backend, frames: LabelledFrames, classes: list[ClassSpec],
          tile: tuple[int, int], in_channels: int = 1,
          keep_masks: bool = False) -> dict[str, object]:
    """Kaggle Dice, IoU, pixel accuracy and image-level precision/recall per class, with
    the bundle's post-processing. `keep_masks` adds per-frame predictions for overlays."""
    dice, iou, correct, predicted_any, truth_any, kept = [], [], 0, [], [], []
    pixels = 0
    for gray, truth in zip(frames.images, frames.truths, strict=True):
        probabilities, presence = predict_frame(backend, gray, tile, in_channels)
        masks = apply_gate(threshold_masks(probabilities, classes), presence, classes)
        dice.append(dice_pairs(masks, truth)[0])
        iou.append(iou_pairs(masks, truth)[0])
        correct += int((masks.astype(bool) == truth.astype(bool)).sum())
        pixels += masks.size
        predicted_any.append(masks.reshape(len(classes), -1).any(1))
        truth_any.append(truth.reshape(len(classes), -1).any(1))
        if keep_masks:
            kept.append(masks)
    dice_arr, iou_arr = np.array(dice), np.array(iou)
    pred, true = np.array(predicted_any), np.array(truth_any)
    image_level = {}
    for k, c in enumerate(classes):
        tp = int((pred[:, k] & true[:, k]).sum())
        image_level[str(c.id)] = {
            "precision": tp / max(1, int(pred[:, k].sum())) if pred[:, k].any() else None,
            "recall": tp / max(1, int(true[:, k].sum())) if true[:, k].any() else None,
            "support": int(true[:, k].sum())}
    result: dict[str, object] = {
        "dice": float(dice_arr.mean()), "iou": float(iou_arr.mean()),
        "pixel_accuracy": correct / max(1, pixels),
        "dice_per_class": {str(c.id): float(dice_arr[:, k].mean())
                           for k, c in enumerate(classes)},
        "image_level": image_level, "images": len(frames.names)}
    if keep_masks:
        result["per_frame_dice"] = dice_arr.mean(axis=1).tolist()
        result["masks"] = kept
    return result


def score_screen(backend: Backend, frames: LabelledFrames, classes: list[ClassSpec],
                 tile: tuple[int, int], in_channels: int = 1,
                 max_batch: int = 8) -> dict[str, object]:
    """A screening classifier judged the way the runtime uses it: tile by tile, a class
    flagged when its score reaches the class's `gate_threshold`, against whether the
    tile holds any pixel of that class. Recall matters most: a defect tile the screen
    misses is never segmented."""
    flags, truths = [], []
    for gray, truth in zip(frames.images, frames.truths, strict=True):
        grid = make_grid(gray.shape, tile)
        scores, _ = infer_in_batches(backend, cut(gray, grid, in_channels), max_batch)
        flags.append(scores >= np.asarray([c.gate_threshold for c in classes], np.float32))
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

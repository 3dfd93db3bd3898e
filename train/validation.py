"""Validation by pixel counts: what Kaggle Dice and the post-processing sweep need, and
nothing more.

For every strip, class and tuning threshold the model's predicted pixels and their
intersection with the truth are counted as the strip is predicted; its probability map is
then dropped. Memory is a few numbers per strip whatever the data set size (a Severstal
validation split as float16 maps would be 8 GB), and under DDP each rank predicts its
own share of the strips and the integer counts are gathered exactly: every rank tunes on
the same table, so all agree on the best epoch and on early stopping, and the Dice is the
one a single process computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from lineside.edge.tiling import cut, make_grid, stitch
from lineside.train.data.severstal_dataset import StripSet, planes_to_masks
from lineside.train.models import normalise, split_output
from lineside.train.progress import progress
from lineside.train.tuning import THRESHOLDS, dice_of_counts, tune_counts

UNTUNED = {"threshold": 0.5, "min_area": 0, "gate_threshold": 0.0}


@dataclass
class ValidationCounts:
    """Counts per strip (in strip order), class and threshold (tuning.THRESHOLDS)."""

    index: np.ndarray  # (N,) strip indices in the validation set
    truth: np.ndarray  # (N, K) truth pixels
    predicted: np.ndarray | None  # (N, K, T) pixels above each threshold; None: classifier
    intersection: np.ndarray | None  # (N, K, T) of those, pixels in the truth
    presence: np.ndarray | None  # (N, K) presence (max over tiles), gated models / classifiers

    @property
    def segments(self) -> bool:
        return self.predicted is not None

    def dice(self, post: list[dict[str, Any]]) -> dict[str, Any]:
        """Kaggle Dice (mean over strips and classes) with per-class post-processing
        (threshold, min_area, gate_threshold)."""
        if self.predicted is None or self.intersection is None:
            raise ValueError("a classifier has no masks to score")
        per_class = np.stack([dice_of_counts(
            self.predicted[:, k], self.intersection[:, k], self.truth[:, k],
            None if self.presence is None else self.presence[:, k], p["threshold"],
            p["min_area"], p.get("gate_threshold", 0.0)) for k, p in enumerate(post)], axis=1)
        return {"dice": float(per_class.mean()),
                "dice_per_class": {str(p["id"]): float(per_class[:, k].mean())
                                   for k, p in enumerate(post)}}

    def tune(self, class_ids: tuple[int, ...], names: dict[int, str]) -> list[dict[str, Any]]:
        """Per-class threshold, minimum area and gate threshold maximising Dice."""
        if self.predicted is None or self.intersection is None:
            raise ValueError("a classifier has no masks to tune")
        tuned = []
        for k, class_id in enumerate(class_ids):
            threshold, min_area, gate, _ = tune_counts(
                self.predicted[:, k], self.intersection[:, k], self.truth[:, k],
                None if self.presence is None else self.presence[:, k])
            tuned.append({"id": class_id, "name": names.get(class_id, f"class{class_id}"),
                          "threshold": threshold, "min_area": min_area,
                          "gate_threshold": gate})
        return tuned

    def gathered(self) -> ValidationCounts:
        """Every rank's share, in strip order (itself when not distributed)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        shares: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shares, self)
        return ValidationCounts.joined(shares)

    @staticmethod
    def joined(shares: list[ValidationCounts]) -> ValidationCounts:
        # A rank with no strip (fewer strips than ranks) knows nothing of the model's heads.
        shares = [s for s in shares if len(s.index)] or shares[:1]
        index = np.concatenate([s.index for s in shares])
        order = np.argsort(index, kind="stable")

        def join(name: str) -> np.ndarray | None:
            parts = [getattr(s, name) for s in shares]
            return None if parts[0] is None else np.concatenate(parts)[order]

        return ValidationCounts(index[order], join("truth"), join("predicted"),  # type: ignore[arg-type]
                                join("intersection"), join("presence"))


def shard_of_this_rank() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside DDP."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def measure(model: nn.Module, strips: StripSet, mean: float, std: float,
            tile: tuple[int, int] | None = None, channels: int = 1, device: str = "cpu",
            tiles_per_call: int | None = None,
            shard: tuple[int, int] | None = None) -> ValidationCounts:
    """Predict this rank's share of `strips` (every `world`-th from `rank`), cut into
    tiles and stitched as the runtime does (a strip's presence is the maximum over its
    tiles), and count. Gather with `.gathered()`."""
    rank, world = shard or shard_of_this_rank()
    model.eval()
    indices = np.arange(rank, len(strips.names), world)
    grid = make_grid(strips.shape, tile or strips.shape)
    # Whole strips per call, as many as fit the tile budget: on a CPU the activations of a
    # bigger call are memory (a UNet keeps every level), not speed; a GPU wants more.
    budget = tiles_per_call or (32 if device.startswith("cuda") else 8)
    batch = max(1, budget // grid.count)
    limits = np.asarray(THRESHOLDS, np.float32)
    classes, levels = len(strips.class_ids), len(THRESHOLDS)
    # Every count is written into arrays sized once here. Small arrays kept per strip
    # between the big per-strip temporaries fragmented glibc's heap: a full-size
    # validation grew the trainer by about 2 MB per strip (4 GB on 1,884 strips).
    truth = np.zeros((len(indices), classes), np.int64)
    predicted = np.zeros((len(indices), classes, levels), np.int64)
    intersection = np.zeros_like(predicted)
    gates: np.ndarray | None = None
    segments = True
    starts = range(0, len(indices), batch)
    for start in progress(starts, len(starts), "validation", "strips", scale=batch,
                          enabled=rank == 0):
        chunk = indices[start:start + batch]
        decoded = [strips.decoded(int(i)) for i in chunk]
        tiles = np.concatenate([cut(pixels, grid) for pixels, _ in decoded])
        inputs = normalise(torch.from_numpy(tiles), mean, std)
        if channels == 3:
            inputs = inputs.expand(-1, 3, -1, -1)
        logits, presence = split_output(model(inputs.to(device)))
        if logits.ndim == 2:  # a classifier: presence only, no masks
            logits, presence, segments = None, logits, False
        for j, (_, planes) in enumerate(decoded):
            row = start + j
            masks = planes_to_masks(planes, classes).astype(bool)
            truth[row] = masks.reshape(classes, -1).sum(1)
            if logits is None:
                continue
            part = torch.sigmoid(logits[j * grid.count:(j + 1) * grid.count])
            count_above(stitch(part.float().cpu().numpy(), grid), masks, limits,
                        predicted[row], intersection[row])
        if presence is not None:
            scores = torch.sigmoid(presence).float().cpu().numpy()
            if gates is None:
                gates = np.zeros((len(indices), scores.shape[-1]), np.float32)
            gates[start:start + len(chunk)] = scores.reshape(len(chunk), grid.count,
                                                             -1).max(axis=1)
    return ValidationCounts(indices, truth, predicted if segments else None,
                            intersection if segments else None, gates)


def count_above(probabilities: np.ndarray, masks: np.ndarray, limits: np.ndarray,
                predicted: np.ndarray, intersection: np.ndarray) -> None:
    """Per class k and threshold t: pixels with probability > limits[t] into
    predicted[k, t], and those inside masks[k] into intersection[k, t]. Each
    pixel's level is how many (sorted) thresholds it exceeds, and counts above a threshold
    are the histogram of levels summed from the top."""
    levels = len(limits)
    level = np.empty(probabilities.shape[1:], np.uint8)
    flat = level.reshape(-1)
    for k in range(len(probabilities)):
        level[...] = probabilities[k] > limits[0]
        for limit in limits[1:]:  # sorted: a pixel above one is above all below it
            level += probabilities[k] > limit
        every = np.bincount(flat, minlength=levels + 1)
        inside = np.bincount(flat[masks[k].reshape(-1)], minlength=levels + 1)
        predicted[k] = np.cumsum(every[::-1])[::-1][1:]
        intersection[k] = np.cumsum(inside[::-1])[::-1][1:]

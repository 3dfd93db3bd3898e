"""Losses by name, from segmentation-models-pytorch (multi-label: one sigmoid per class).

smp's Dice/Tversky/Lovasz compute over the batch, which suits training; evaluation uses
the Kaggle per-image Dice (lineside.edge.scoring), never these.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def create_loss(name: str) -> Loss:
    from segmentation_models_pytorch import losses

    bce = nn.BCEWithLogitsLoss()
    dice = losses.DiceLoss(mode="multilabel", from_logits=True)
    table: dict[str, Loss] = {
        "bce": bce,
        "dice": dice,
        "bce_dice": lambda logits, target: bce(logits, target) + dice(logits, target),
        "focal": losses.FocalLoss(mode="multilabel"),
        "tversky": losses.TverskyLoss(mode="multilabel", alpha=0.3, beta=0.7),
        "focal_tversky": losses.TverskyLoss(mode="multilabel", alpha=0.3, beta=0.7,
                                            gamma=0.75),
        "lovasz": losses.LovaszLoss(mode="multilabel"),
    }
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(table)}")
    return table[name]

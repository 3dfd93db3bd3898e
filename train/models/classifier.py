"""Standalone defect/no-defect screening classifier (a ResNet), as several Severstal
solutions used in front of the segmentation model: per-class presence logits per image."""

from __future__ import annotations

import torch
from torch import nn


class PresenceClassifier(nn.Module):
    """ResNet-18/34 from torchvision (no downloaded weights) with `in_channels` inputs and
    one presence logit per class."""

    def __init__(self, in_channels: int = 1, classes: int = 4,
                 backbone: str = "resnet18", downsample: int = 1) -> None:
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be 1 or more, got {downsample}")
        # A screen only has to notice a defect, not outline it: at half resolution a
        # ResNet costs a quarter of the work, and the pooling is part of the exported graph.
        self.pool = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        from torchvision import models

        builders = {"resnet18": models.resnet18, "resnet34": models.resnet34}
        if backbone not in builders:
            raise ValueError(f"backbone {backbone!r}: choose from {sorted(builders)}")
        net = builders[backbone](weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Linear(net.fc.in_features, classes)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.pool(x))  # (N, K) presence logits

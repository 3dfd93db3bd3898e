"""MiniUNet: a small UNet for CPU lines and small devices (0.12 M parameters by default).

Four resolution levels with double 3x3 convolutions, batch norm and ReLU; bilinear
upsampling (exports to a plain ONNX Resize, which every runtime runs fast). Input height
and width must be multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm does not depend on the batch: exact under DDP on CPUs, where
    # SyncBatchNorm is not available, and stable at tiny batch sizes.
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(4, channels)


def _double_conv(cin: int, cout: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(norm, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class MiniUNet(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 4,
                 widths: tuple[int, ...] = (8, 16, 32, 64), norm: str = "batch",
                 gate: bool = False) -> None:
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"norm {norm!r} is not batch or group")
        self.downs = nn.ModuleList()
        cin = in_channels
        for width in widths:
            self.downs.append(_double_conv(cin, width, norm))
            cin = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.ups = nn.ModuleList(_double_conv(widths[i + 1] + widths[i], widths[i], norm)
                                 for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], classes, 1)
        # Presence gate: per-class "is this class anywhere in the input" logits from the
        # bottleneck, as smp's auxiliary classification head does.
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(widths[-1], classes)) if gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for i, block in enumerate(self.downs):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        presence = self.gate(x) if self.gate is not None else None
        for block in self.ups:
            x = block(torch.cat([self.up(x), skips.pop()], dim=1))
        logits = self.head(x)
        return logits if presence is None else (logits, presence)

"""Model registry: `create_model(architecture, **params)` is the one way to build a network.

Every model maps (N, C, H, W) normalised float input to (N, K, H, W) logits. The registry
is a plain dict; an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lineside.train.models.classifier import PresenceClassifier
from lineside.train.models.mini_unet import MiniUNet
from lineside.train.models.weights import load_pretrained

# Architectures that answer "which classes are in this image" instead of segmenting.
CLASSIFIERS = {"classifier"}

# segmentation-models-pytorch architectures, by our name -> smp's name.
SMP_ARCHITECTURES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "deeplabv3plus": "DeepLabV3Plus",
    "fpn": "FPN",
    "segformer": "Segformer",
}


def _smp_factory(smp_name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int = 1, classes: int = 4, encoder_name: str = "resnet18",
              encoder_weights: str | None = None, gate: bool = False,
              **extra: Any) -> nn.Module:
        import segmentation_models_pytorch as smp

        # Only None or a local file: nothing is ever downloaded at run time.
        weights_path = encoder_weights
        if gate:  # smp's auxiliary head: per-class presence logits from the encoder
            extra["aux_params"] = {"classes": classes, "dropout": 0.2}
        model = smp.create_model(smp_name, encoder_name=encoder_name, encoder_weights=None,
                                 in_channels=in_channels, classes=classes, **extra)
        if weights_path:
            load_pretrained(model.encoder, weights_path)
        return model

    return build


def _with_weights(build: Callable[..., nn.Module], part: str = "",
                  inner: str = "") -> Callable[..., nn.Module]:
    """`build` taking `encoder_weights` (a local file) into its encoder: the keys under
    `part` of the model, or of its `inner` submodule."""
    def build_with(encoder_weights: str | None = None, **params: Any) -> nn.Module:
        model = build(**params)
        if encoder_weights:
            load_pretrained(getattr(model, inner) if inner else model, encoder_weights,
                            part=part)
        return model

    return build_with


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    # MiniUNet's encoder is its down path (weights from an earlier MiniUNet checkpoint);
    # the classifier's is its torchvision ResNet (any ResNet file; the head stays new).
    "mini_unet": _with_weights(MiniUNet, part="downs."),
    "classifier": _with_weights(PresenceClassifier, inner="net"),
    **{name: _smp_factory(smp_name) for name, smp_name in SMP_ARCHITECTURES.items()},
}


def create_model(architecture: str, **params: Any) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; valid: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](**params)


def split_output(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mask logits, presence logits or None) from any model in the registry."""
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, None


class DeployedModel(nn.Module):
    """What a bundle runs: uint8 frames in, normalisation inside, probabilities out (and
    per-class presence probabilities when the model has a gate)."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * std)))
        self.register_buffer("shift", torch.tensor(mean / std))

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = frames.to(torch.float32) * self.scale - self.shift
        logits, presence = split_output(self.net(x))
        if presence is None:
            return torch.sigmoid(logits)
        return torch.sigmoid(logits), torch.sigmoid(presence)


def normalise(frames: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The training-side twin of DeployedModel's pre-processing (uint8 -> float)."""
    return (frames.to(torch.float32) / 255.0 - mean) / std

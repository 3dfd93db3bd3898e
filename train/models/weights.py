"""Pretrained weights from a local file into any model of the registry (nothing is ever
downloaded at run time).

A plant brings whatever it has: a torchvision ResNet state dict, a timm checkpoint, an smp
encoder, a whole smp model saved by someone else, an earlier lineside checkpoint. The
file's keys are matched to the target module after removing the usual wrappers
(`module.` from DDP, `encoder.`, `backbone.`, `model.`), classification heads are left
untrained, and the first convolution is adapted when the channel counts differ the way
timm's `adapt_input_conv` does: summed over RGB for a grey model (a grey image is R=G=B,
so the sum gives the same response), repeated and rescaled for more channels. Anything else
that does not fit is one clear error naming the keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

WRAPPER_PREFIXES = ("module.", "encoder.", "backbone.", "model.", "net.")
WRAPPER_KEYS = ("state_dict", "model", "model_state", "net")


class WeightsError(ValueError):
    """A weights file that does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from a training checkpoint if need be."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or torch errors: say which file
        raise WeightsError(f"weights file {path} could not be read: {exc}") from exc
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"weights file {path} holds no state dict of tensors")
    return state


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-convolution weight (O, I, kh, kw) for `in_channels` inputs (timm's rule)."""
    source = weight.shape[1]
    if source == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(in_channels / source)
    return weight.repeat(1, repeat, 1, 1)[:, :in_channels] * (source / in_channels)


def _strip(key: str, prefixes: Iterable[str]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _first_conv(target: dict[str, torch.Tensor]) -> str | None:
    return next((k for k, v in target.items() if k.endswith("weight") and v.ndim == 4), None)


def load_pretrained(module: nn.Module, path: str | Path,
                    heads: tuple[str, ...] = ("fc.", "classifier.", "head."),
                    part: str = "") -> list[str]:
    """Load `path` into `module` in place (only its keys under `part`, when given: an
    encoder inside the module); the target keys left as initialised (the classification
    heads named by `heads`). Raises WeightsError naming what does not fit."""
    source = {_strip(k, WRAPPER_PREFIXES): v for k, v in read_state_dict(path).items()}
    target = {k: v for k, v in module.state_dict().items() if k.startswith(part)}
    first_conv = _first_conv(target)
    loaded: dict[str, torch.Tensor] = {}
    missing, mismatched, untouched = [], [], []
    for key, value in target.items():
        if key.startswith(heads):
            untouched.append(key)
            continue
        if key not in source:
            # BatchNorm's step counter is not in every format (torchvision's files have it,
            # timm's do not): start it at zero rather than refuse the file.
            if key.endswith("num_batches_tracked"):
                untouched.append(key)
                continue
            missing.append(key)
            continue
        weight = source[key]
        if key == first_conv and weight.ndim == 4 and weight.shape[1] != value.shape[1] \
                and weight.shape[0] == value.shape[0] and weight.shape[2:] == value.shape[2:]:
            weight = adapt_input_conv(weight, value.shape[1])
        if weight.shape != value.shape:
            mismatched.append(f"{key} {tuple(weight.shape)} (model: {tuple(value.shape)})")
            continue
        loaded[key] = weight.to(value.dtype)
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''})")
        if mismatched:
            parts.append(f"shape mismatch {', '.join(mismatched[:3])}"
                         f"{', ...' if len(mismatched) > 3 else ''}")
        raise WeightsError(f"weights file {path} does not fit {type(module).__name__}: "
                           + "; ".join(parts))
    module.load_state_dict(loaded, strict=False)
    return untouched

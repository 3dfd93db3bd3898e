"""Checkpoints that carry everything export needs: architecture, classes, input, normalisation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineside.train.models import create_model

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    body = {**meta, "format": CHECKPOINT_FORMAT,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": str(torch.__version__), "state_dict": model.state_dict()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    torch.save(body, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode, CPU) and its metadata. Only tensors and plain data are
    unpickled (`weights_only=True`), so a checkpoint cannot run code on load."""
    body = torch.load(path, map_location="cpu", weights_only=True)
    if body.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {body.get('format')!r} is not "
                         f"{CHECKPOINT_FORMAT}")
    model = create_model(body["architecture"], **body["model_params"])
    model.load_state_dict(body.pop("state_dict"))
    return model.eval(), body


def start_from(model: nn.Module, path: str | Path, architecture: str,
               params: dict[str, Any]) -> None:
    """Load a lineside checkpoint's weights into `model` (fine-tuning: a model retrained
    on frames recorded on the line starts from the one serving there). The checkpoint
    must hold the same architecture and classes."""
    body = torch.load(path, map_location="cpu", weights_only=True)
    if body.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"init: {path} is not a lineside checkpoint (format "
                         f"{body.get('format')!r})")
    theirs = {k: v for k, v in body.get("model_params", {}).items() if k != "encoder_weights"}
    ours = {k: v for k, v in params.items() if k != "encoder_weights"}
    if body.get("architecture") != architecture or theirs != ours:
        raise ValueError(f"init: {path} holds {body.get('architecture')} {theirs}, this run "
                         f"trains {architecture} {ours}")
    model.load_state_dict(body["state_dict"])

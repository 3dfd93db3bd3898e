"""A checkpoint as a `Backend`, so training-side evaluation runs the exact runtime path
(tiling, stitching, post-processing) that the deployed bundle runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lineside.edge.backends.base import Backend
from lineside.train.checkpoint import load_checkpoint
from lineside.train.models import DeployedModel


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | Path) -> None:
        net, self.meta = load_checkpoint(checkpoint)
        self.model = DeployedModel(net, self.meta["mean"], self.meta["std"]).eval()

    @torch.no_grad()
    def infer_with_presence(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        output = self.model(torch.from_numpy(np.ascontiguousarray(tiles)))
        if isinstance(output, tuple):
            return output[0].numpy(), output[1].numpy()
        return output.numpy(), None

    def infer(self, tiles: np.ndarray) -> np.ndarray:
        return self.infer_with_presence(tiles)[0]

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "torch": str(torch.__version__)}

"""A checkpoint as a `Backend` and a model, so training-side evaluation runs the exact
runtime path (tiling, stitching, post-processing) that the deployed bundle runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lineside.edge.backends.base import PRESENCE, PROBABILITIES, Backend, Outputs
from lineside.edge.bundle import Bundle, ClassSpec, Manifest
from lineside.edge.pipeline.model import LoadedModel
from lineside.train.checkpoint import load_checkpoint
from lineside.train.models import CLASSIFIERS, DeployedModel


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | Path) -> None:
        net, self.meta = load_checkpoint(checkpoint)
        self.model = DeployedModel(net, self.meta["mean"], self.meta["std"]).eval()
        self.classifier = self.meta["architecture"] in CLASSIFIERS

    @torch.no_grad()
    def infer(self, tiles: np.ndarray, thresholds: np.ndarray | None = None) -> Outputs:
        """Probabilities (thresholds are applied by post-processing, on the host)."""
        output = self.model(torch.from_numpy(np.ascontiguousarray(tiles)))
        if isinstance(output, tuple):
            return {PROBABILITIES: output[0].numpy(), PRESENCE: output[1].numpy()}
        return {PRESENCE if self.classifier else PROBABILITIES: output.numpy()}

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "torch": str(torch.__version__)}


def checkpoint_model(checkpoint: str | Path) -> LoadedModel:
    """The checkpoint as a model the pipeline runs, with the manifest export would write
    for it (classes, tile, channels, frame), so offline tools treat it like a bundle."""
    backend = TorchBackend(checkpoint)
    meta = backend.meta
    manifest = Manifest(
        name=Path(checkpoint).stem, architecture=meta["architecture"],
        classes=[ClassSpec(**c) for c in meta["classes"]],
        tile_height=meta["tile"][0], tile_width=meta["tile"][1],
        in_channels=int(meta["in_channels"]), mean=meta["mean"], std=meta["std"],
        task="classification" if backend.classifier else "segmentation",
        frame_height=meta["frame"][0], frame_width=meta["frame"][1])
    return LoadedModel(Bundle(Path(checkpoint), manifest), backend)

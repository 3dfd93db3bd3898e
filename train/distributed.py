"""Multi-GPU and multi-node training through torchrun (DDP).

`torchrun --nproc-per-node N -m lineside.train.cli --config ...` sets WORLD_SIZE, RANK
and LOCAL_RANK; this module then joins the process group (NCCL on GPUs, gloo on CPUs)
around the ordinary `fit`. Rank 0 writes the checkpoints, the log and the curve.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import distributed as dist

from lineside.train.config import TrainConfig
from lineside.train.trainer import fit


def fit_maybe_distributed(config: TrainConfig) -> dict[str, Any] | None:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return fit(config)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return fit(config)
    finally:
        dist.barrier()  # no rank tears gloo/NCCL down while another still uses it
        dist.destroy_process_group()

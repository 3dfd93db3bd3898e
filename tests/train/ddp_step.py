"""One training step on a fixed global batch, in 1 process or under torchrun (gloo).

Run by tests/test_train.py; writes the step's global loss, the parameters after it and
the validation scores on 7 strips (an odd count: the two ranks' shares differ).
"""

from __future__ import annotations

import json
import os
import sys

import torch
from torch import distributed as dist

from lineside.train.config import Augmentation
from lineside.train.data.severstal_dataset import CropDataset, load_strips
from lineside.train.losses import create_loss
from lineside.train.models import create_model
from lineside.train.trainer import make_loader, train_step, validation_scores
from lineside.train.validation import measure


def main(data: str, out: str) -> None:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = create_model("mini_unet", in_channels=1, classes=4, norm="group")
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    dataset = CropDataset(load_strips(data, limit=8), (64, 128), seed=1, samples_per_epoch=4,
                          augment=Augmentation(hflip=0, vflip=0))
    images, targets = next(iter(make_loader(dataset, batch_size=4)))
    loss = train_step(model, images, targets, create_loss("bce"), optimizer, scaler,
                      0.4, 0.07, 1, "cpu", False, False)
    loss_tensor = torch.tensor([loss])
    if distributed:
        dist.all_reduce(loss_tensor)
        loss_tensor /= dist.get_world_size()
    # Validation: each rank predicts its share of the strips; gathered counts score alike.
    net = model.module if distributed else model
    counts = measure(net, load_strips(data, limit=7), 0.4, 0.07, (256, 256)).gathered()
    untuned, tuned, tuned_score = validation_scores(counts, (1, 2, 3, 4), {})
    if not distributed or dist.get_rank() == 0:
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        with open(out, "w") as handle:
            json.dump({"loss": loss_tensor.item(), "params": params.tolist(),
                       "val_strips": len(counts.index), "val_dice": untuned["dice"],
                       "val_dice_tuned": tuned_score["dice"], "tuned": tuned}, handle)
    if distributed:
        # Every rank reaches here before teardown: a rank leaving while another still
        # talks through gloo aborts ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Measure the training data path on a large set (docs/training.md, "Memory and time").

  python scripts/measure_training.py loader DATA [--workers 2] [--cache DIR] [--strips 1500]
      strips/s of full 256x1600 crops through the trainer's DataLoader
  python scripts/measure_training.py train -- edge-train ARGS...
      run a command, sampling the memory (PSS) of its whole process tree (workers and
      DDP ranks included) every 0.2 s; prints the peak of the sum, and the peak of each
      child's subtree (under torchrun: one per rank, its workers included)
  python scripts/measure_training.py validate CHECKPOINT [KEY=VALUE ...]
      the checkpoint's validation Dice on the validation split its training config
      makes (overrides as edge-train's, e.g. data=...); under torchrun each rank predicts
      its share and the counts are gathered, so 1 and N processes must print the same

Both print one JSON line. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path


def tree_rss_bytes(pid: int) -> int:
    """Memory of `pid` and all its descendants (from /proc): the sum of their PSS, which
    counts a page shared by several processes (workers forked with torch loaded) once
    in all, not once per process as a sum of RSS would."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += next(int(line.split()[1]) * 1024 for line in rollup.splitlines()
                          if line.startswith("Pss:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


class PeakMemory:
    """Samples tree_rss_bytes(pid) on a thread until stopped; `per_child` keeps the peak
    of each direct child's subtree (torchrun's children are its ranks)."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid, self.period_s, self.peak = pid, period_s, 0
        self.per_child: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            for child in children_of(self.pid):
                self.per_child[child] = max(self.per_child.get(child, 0),
                                            tree_rss_bytes(child))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def loader(args: argparse.Namespace) -> dict:
    import os

    from lineside.train.data.severstal_dataset import CropDataset, load_strips
    from lineside.train.trainer import make_loader

    began = time.monotonic()
    strips = load_strips(args.data, cache_dir=args.cache or None)
    indexed_s = time.monotonic() - began
    filled_s = None
    if args.cache and args.fill:  # every strip decoded into the cache once, timed
        began = time.monotonic()
        for i in range(len(strips)):
            strips.decoded(i)
        filled_s = round(time.monotonic() - began, 1)
    memory = PeakMemory(os.getpid())
    dataset = CropDataset(strips, tuple(strips.shape), seed=0, samples_per_epoch=args.strips)
    batches = make_loader(dataset, 8, args.workers)
    began = time.monotonic()
    seen = 0
    for epoch in range(args.epochs):
        dataset.epoch = epoch
        for images, _masks in batches:
            seen += len(images)
    elapsed = time.monotonic() - began
    return {"strips_in_set": len(strips), "index_s": round(indexed_s, 2),
            "workers": args.workers, "cache": bool(args.cache), "cache_fill_s": filled_s,
            "epochs": args.epochs,
            "crops": seen, "strips_per_s": round(seen / elapsed, 1),
            "peak_pss_mb": round(memory.stop() / 2**20)}


def train(args: argparse.Namespace) -> dict:
    began = time.monotonic()
    process = subprocess.Popen(args.command)
    memory = PeakMemory(process.pid)
    code = process.wait()
    peak = memory.stop()
    return {"command": args.command, "exit": code,
            "elapsed_s": round(time.monotonic() - began, 1),
            "peak_pss_mb": round(peak / 2**20),
            "peak_pss_mb_per_child": sorted(round(v / 2**20)
                                            for v in memory.per_child.values())}


def validate(args: argparse.Namespace) -> dict:
    import os

    import torch
    from torch import distributed as dist

    from lineside.train.checkpoint import load_checkpoint
    from lineside.train.config import load_train_config
    from lineside.train.trainer import splits_of, validation_scores
    from lineside.train.validation import measure

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    model, meta = load_checkpoint(args.checkpoint)
    config = load_train_config(None, args.overrides, meta["train_config"])
    _, _, val_set, _ = splits_of(config)
    began = time.monotonic()
    counts = measure(model, val_set, meta["mean"], meta["std"], tuple(config.tile),
                     meta["in_channels"]).gathered()
    untuned, _tuned, tuned_score = validation_scores(counts, val_set.class_ids, {})
    result = {"checkpoint": args.checkpoint, "processes": world,
              "val_strips": len(counts.index), "val_dice_untuned": untuned["dice"],
              "val_dice_tuned": tuned_score["dice"],
              "elapsed_s": round(time.monotonic() - began, 1)}
    if world > 1:
        rank = dist.get_rank()
        dist.barrier()  # no rank leaves while another still talks through gloo
        dist.destroy_process_group()
        if rank:
            return {}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("loader")
    one.add_argument("data")
    one.add_argument("--workers", type=int, default=2)
    one.add_argument("--cache", default="")
    one.add_argument("--fill", action="store_true", help="with --cache: decode every strip "
                     "into it first (timed), so that the measured epoch reads only the cache")
    one.add_argument("--strips", type=int, default=1500, help="crops per epoch")
    one.add_argument("--epochs", type=int, default=1)
    two = sub.add_parser("train")
    two.add_argument("command", nargs=argparse.REMAINDER)
    three = sub.add_parser("validate")
    three.add_argument("checkpoint")
    three.add_argument("overrides", nargs="*", help="KEY=VALUE, as edge-train takes them")
    args = ap.parse_args()
    if args.mode == "train" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    modes = {"loader": loader, "train": train, "validate": validate}
    result = modes[args.mode](args)
    if result:
        print(json.dumps(result))
    return 0 if result.get("exit", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Measure the training data path on a large set (docs/training.md, "Memory and time").

  python scripts/measure_training.py loader DATA [--workers 2] [--cache DIR] [--strips 1500]
      strips/s of full 256x1600 crops through the trainer's DataLoader
  python scripts/measure_training.py train -- edge-train ARGS...
      run a command, sampling the memory (PSS) of its whole process tree (workers and
      DDP ranks included) every 0.2 s; prints the peak of the sum

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


class PeakMemory:
    """Samples tree_rss_bytes(pid) on a thread until stopped."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid, self.period_s, self.peak = pid, period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))

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
    return {"command": args.command, "exit": code,
            "elapsed_s": round(time.monotonic() - began, 1),
            "peak_pss_mb": round(memory.stop() / 2**20)}


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
    args = ap.parse_args()
    if args.mode == "train" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    result = loader(args) if args.mode == "loader" else train(args)
    print(json.dumps(result))
    return 0 if result.get("exit", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Progress of long work: a tqdm bar on a terminal; in a log (a job scheduler, systemd,
`nohup`) a line every `every_s` with the count, the rate and the time left."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger("lineside.train")


def progress(items: Iterable[T], total: int, desc: str, unit: str, scale: int = 1,
             every_s: float = 30.0, enabled: bool = True) -> Iterator[T]:
    """Yield `items`, reporting progress; each item counts `scale` units (a batch of
    crops counts its crops)."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        with tqdm(total=total * scale, desc=desc, unit=unit, leave=False,
                  mininterval=2.0) as bar:
            for item in items:
                yield item
                bar.update(scale)
        return
    began = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += scale
        now = time.monotonic()
        if now - last >= every_s and done < total * scale:
            rate = done / (now - began)
            log.info("%s: %d/%d %s (%.1f %s/s, %.0f s left)", desc, done, total * scale,
                     unit, rate, unit, (total * scale - done) / rate)
            last = now

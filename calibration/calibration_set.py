"""Versioned calibration sets: representative tiles, cut exactly as the runtime cuts them.

A set is a directory of `.npz` shards (uint8 tiles, (N, C, H, W)) and a `calibration.json`
manifest with each shard's sha256, the source frames and how they were chosen. The set's
own sha256 (over its shards) is recorded in every INT8 model and engine built from it, so
a deployed model can always name the data its scales came from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lineside.edge.bundle import sha256_file
from lineside.edge.labels import LabelFormatError, Sample, open_dataset
from lineside.edge.tiling import cut, make_grid

log = logging.getLogger("lineside.calibration")

MANIFEST_NAME = "calibration.json"
SHARD_TILES = 256
SET_FORMAT = 1


class CalibrationSetError(RuntimeError):
    pass


@dataclass
class Shard:
    path: str
    sha256: str
    count: int


@dataclass
class CalibrationManifest:
    tile_height: int
    tile_width: int
    channels: int
    count: int
    strategy: str
    seed: int
    shards: list[Shard] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)  # {"image": ..., "classes": [...]}
    source_root: str = ""
    sha256: str = ""  # over the shards' hashes: the set's identity
    created: str = ""
    format: int = SET_FORMAT


def choose_frames(samples: list[Sample], labelled: bool, strategy: str,
                  seed: int) -> list[Sample]:
    """Frames in calibration order.

    `stratified` alternates between each defect class and defect-free steel, so even a
    small set holds every class (a class absent from calibration gets wrong scales);
    `random` is a seeded shuffle. Without labels both are a seeded shuffle. Labels come
    in any format edge.labels reads.
    """
    rng = np.random.default_rng(seed)
    order = [samples[i] for i in rng.permutation(len(samples))]
    if strategy == "random" or not labelled:
        return order
    if strategy != "stratified":
        raise ValueError(f"strategy {strategy!r} is not stratified or random")
    groups: dict[str, list[Sample]] = {}
    for sample in order:
        classes = sample.classes()
        key = "clean" if not classes else f"class{classes[int(rng.integers(len(classes)))]}"
        groups.setdefault(key, []).append(sample)
    chosen = []
    while any(groups.values()):
        for key in sorted(groups):
            if groups[key]:
                chosen.append(groups[key].pop(0))
    return chosen


def _write_shards(out: Path, tiles: Iterable[np.ndarray], limit: int) -> list[Shard]:
    shards, buffer = [], []

    def flush() -> None:
        if not buffer:
            return
        path = out / f"shard-{len(shards):04d}.npz"
        np.savez(path, tiles=np.stack(buffer))
        shards.append(Shard(path.name, sha256_file(path), len(buffer)))
        buffer.clear()

    for total, tile in enumerate(tiles):
        if total >= limit:
            break
        buffer.append(tile)
        if len(buffer) == SHARD_TILES:
            flush()
    flush()
    return shards


def _set_hash(shards: list[Shard]) -> str:
    return hashlib.sha256("".join(s.sha256 for s in shards).encode()).hexdigest()


def write_set(out: Path, frames: Iterable[tuple[str, list[int], np.ndarray]], count: int,
              tile: tuple[int, int], channels: int, strategy: str, seed: int,
              source_root: str) -> CalibrationManifest:
    """Tile (name, classes, gray frame) triples into a set of at most `count` tiles."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.npz"):
        old.unlink()
    sources: list[dict] = []

    def tiles() -> Iterator[np.ndarray]:
        for name, classes, gray in frames:
            sources.append({"image": name, "classes": classes})
            yield from cut(gray, make_grid(gray.shape, tile), channels)

    shards = _write_shards(out, tiles(), count)
    total = sum(s.count for s in shards)
    if total == 0:
        raise CalibrationSetError("no tiles were collected")
    manifest = CalibrationManifest(tile[0], tile[1], channels, total, strategy, seed, shards,
                                   sources, source_root, _set_hash(shards),
                                   dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    (out / MANIFEST_NAME).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    log.info("calibration set %s: %d tiles from %d frames (sha256 %s...)", out, total,
             len(sources), manifest.sha256[:12])
    return manifest


def build_from_folder(data: Path, out: Path, count: int, strategy: str, seed: int,
                      tile: tuple[int, int], channels: int = 1,
                      exclude: set[str] | None = None) -> CalibrationManifest:
    dataset = open_dataset(data, exclude=exclude)
    ordered = choose_frames(dataset.samples, dataset.labelled, strategy, seed)

    def frames() -> Iterator[tuple[str, list[int], np.ndarray]]:
        for sample in ordered:
            try:
                gray = sample.image()
            except LabelFormatError as exc:
                log.warning("skipping %s", exc)
                continue
            yield sample.name, sample.classes(), gray

    return write_set(out, frames(), count, tile, channels, strategy, seed, str(data))


@dataclass
class CalibrationSet:
    root: Path
    manifest: CalibrationManifest

    @classmethod
    def load(cls, root: str | Path) -> CalibrationSet:
        """Read and verify a set (every shard's sha256) before its tiles are used."""
        root = Path(root)
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise CalibrationSetError(f"{root} is not a calibration set: no {MANIFEST_NAME}")
        body = json.loads(path.read_text())
        if body.get("format") != SET_FORMAT:
            raise CalibrationSetError(f"{path}: format {body.get('format')!r} not supported")
        body["shards"] = [Shard(**s) for s in body["shards"]]
        manifest = CalibrationManifest(**body)
        for shard in manifest.shards:
            if sha256_file(root / shard.path) != shard.sha256:
                raise CalibrationSetError(f"{root / shard.path} fails its sha256 check")
        if _set_hash(manifest.shards) != manifest.sha256:
            raise CalibrationSetError(f"{path}: the set's sha256 does not match its shards")
        return cls(root, manifest)

    def tiles(self) -> Iterator[np.ndarray]:
        for shard in self.manifest.shards:
            with np.load(self.root / shard.path) as data:
                yield from data["tiles"]

    def batches(self, size: int) -> Iterator[np.ndarray]:
        batch = []
        for tile in self.tiles():
            batch.append(tile)
            if len(batch) == size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

"""A labelled folder read strip by strip, split, and served as torch datasets.

Nothing is held in memory but the names and which classes each strip holds (read from the
labels): pixels and masks are decoded when a crop needs them, in the DataLoader's worker
processes, so memory stays bounded whatever the data set size (a Severstal-sized set is
5 GB of pixels). An optional cache on disk keeps decoded strips for later epochs
(`StripCache`). Masks travel as one uint8 plane per image with class k in bit k, which
holds several (overlapping or not) classes in the space of one grayscale image.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lineside.edge.labels import Sample, open_dataset
from lineside.train.config import Augmentation

STATS_STRIPS = 256  # strips that set the normalisation (all of them in smaller sets)


class StripCache:
    """Decoded strips in two flat files (pixels, class planes) and a flag per strip,
    written on first use and read back with one `pread` each: later epochs skip the JPEG/
    PNG and RLE decoding. Processes (DataLoader workers, DDP ranks) share it safely: each
    strip is written whole before its flag, and two writers of a strip write the same
    bytes. Files are opened per call, so a worker never inherits a descriptor."""

    def __init__(self, root: str | Path, key: dict[str, object], count: int,
                 shape: tuple[int, int]) -> None:
        self.root = Path(root)
        self.shape, self.count = shape, count
        self.size = shape[0] * shape[1]
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "cache.json"
        wanted = json.dumps(key, sort_keys=True)
        if not manifest.exists() or manifest.read_text() != wanted:
            # another data set, class list or size: start over
            for name in ("pixels.u8", "planes.u8", "done.u8"):
                (self.root / name).unlink(missing_ok=True)
            with open(self.root / "done.u8", "wb") as handle:
                handle.truncate(count)
            manifest.write_text(wanted)

    def _path(self, name: str) -> str:
        return str(self.root / name)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        fd = os.open(self._path("done.u8"), os.O_RDONLY)
        try:
            if os.pread(fd, 1, index) != b"\x01":
                return None
        finally:
            os.close(fd)
        planes = []
        for name in ("pixels.u8", "planes.u8"):
            fd = os.open(self._path(name), os.O_RDONLY)
            try:
                data = os.pread(fd, self.size, index * self.size)
            finally:
                os.close(fd)
            planes.append(np.frombuffer(data, np.uint8).reshape(self.shape))
        return planes[0], planes[1]

    def put(self, index: int, pixels: np.ndarray, plane: np.ndarray) -> None:
        for name, array in (("pixels.u8", pixels), ("planes.u8", plane)):
            fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, np.ascontiguousarray(array).tobytes(), index * self.size)
            finally:
                os.close(fd)
        fd = os.open(self._path("done.u8"), os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x01", index)
        finally:
            os.close(fd)


@dataclass
class StripSet:
    """The strips of a labelled folder: names, and which classes each holds (from the
    labels); pixels and class planes decoded on demand (`image`, `planes`, `masks`)."""

    samples: list[Sample]
    class_ids: tuple[int, ...]
    shape: tuple[int, int]  # (H, W) of every strip (after `resize`)
    holds: np.ndarray  # (N, K) bool: the classes each strip holds
    resize: tuple[int, int] | None = None
    cache: StripCache | None = None
    positions: list[int] = field(default_factory=list)  # rows in the cache (subsets)

    def __post_init__(self) -> None:
        self.positions = self.positions or list(range(len(self.samples)))

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (H, W) uint8, class planes (H, W) uint8: class k in bit k)."""
        if self.cache is not None and (hit := self.cache.get(self.positions[index])):
            return hit
        sample = self.samples[index]
        gray = sample.image()
        masks = sample.masks(self.class_ids, gray.shape)
        if self.resize:
            height, width = self.resize
            gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
            masks = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
                              for m in masks])
        if gray.shape != self.shape:
            raise ValueError(f"{sample.name} is {gray.shape}, others {self.shape}: set "
                             "`resize` in the training config")
        plane = np.zeros(gray.shape, np.uint8)
        for k in range(len(self.class_ids)):
            plane |= (masks[k] > 0).astype(np.uint8) << k
        if self.cache is not None:
            self.cache.put(self.positions[index], gray, plane)
        return gray, plane

    def image(self, index: int) -> np.ndarray:
        return self.decoded(index)[0]

    def planes(self, index: int) -> np.ndarray:
        return self.decoded(index)[1]

    def masks(self, index: int) -> np.ndarray:
        """(K, H, W) uint8 0/1 masks of one strip."""
        return planes_to_masks(self.planes(index), len(self.class_ids))

    def subset(self, indices: list[int]) -> StripSet:
        return StripSet([self.samples[i] for i in indices], self.class_ids, self.shape,
                        self.holds[indices], self.resize, self.cache,
                        [self.positions[i] for i in indices])

    def presence(self) -> np.ndarray:
        """(N, K) bool: which classes each strip holds."""
        return self.holds

    def pixel_statistics(self) -> tuple[float, float]:
        """(mean, std) of the pixels, in [0, 1], over up to STATS_STRIPS strips spread
        evenly over the set (every strip of a smaller set)."""
        picks = np.unique(np.linspace(0, len(self) - 1, min(len(self), STATS_STRIPS))
                          .round().astype(int))
        total = squares = count = 0.0
        for i in picks:
            pixels = self.image(int(i)).astype(np.float64) / 255.0
            total += pixels.sum()
            squares += np.square(pixels).sum()
            count += pixels.size
        mean = total / count
        return float(mean), float(np.sqrt(max(0.0, squares / count - mean * mean)))


def planes_to_masks(planes: np.ndarray, classes: int) -> np.ndarray:
    return np.stack([(planes >> k) & 1 for k in range(classes)]).astype(np.uint8)


def _same_size(samples: list[Sample], shape: tuple[int, int]) -> None:
    """Refuse a set of differing image sizes before training starts (image headers only,
    nothing decoded)."""
    from PIL import Image  # Pillow comes with matplotlib, a training dependency

    for sample in samples:
        with Image.open(sample.image_path) as image:
            size = (image.height, image.width)
        if size != shape:
            raise ValueError(f"{sample.name} is {size}, others {shape}: set `resize` in the "
                             "training config")


def load_strips(root: str | Path, class_ids: tuple[int, ...] = (1, 2, 3, 4),
                limit: int = 0, resize: tuple[int, int] | None = None,
                label_names: dict[str, int] | None = None,
                cache_dir: str | Path | None = None) -> StripSet:
    """A labelled folder in any format edge.labels reads (Severstal CSV, image+mask
    folders, LabelMe), indexed (nothing decoded but the first image, for its size);
    `resize` [height, width] for images of differing sizes; `cache_dir` keeps decoded
    strips on disk."""
    dataset = open_dataset(root, label_names=label_names, require_labels=True, limit=limit)
    samples = dataset.samples
    shape = tuple(resize) if resize else samples[0].image().shape
    if not resize:
        _same_size(samples, shape)  # type: ignore[arg-type]
    holds = np.array([[c in set(s.classes()) for c in class_ids] for s in samples], bool)
    cache = None
    if cache_dir:
        key = {"root": str(Path(root).resolve()), "class_ids": list(class_ids),
               "shape": list(shape), "names": hashlib.sha256(
                   "\n".join(s.name for s in samples).encode()).hexdigest()}
        cache = StripCache(cache_dir, key, len(samples), shape)  # type: ignore[arg-type]
    return StripSet(samples, tuple(class_ids), shape, holds,  # type: ignore[arg-type]
                    tuple(resize) if resize else None, cache)  # type: ignore[arg-type]


def _strata(strips: StripSet, seed: int) -> list[list[int]]:
    """Strip indices grouped by the set of classes each strip holds, shuffled by seed."""
    rng = np.random.default_rng(seed)
    keys = [tuple(row) for row in strips.presence()]
    groups = []
    for key in sorted(set(keys)):
        members = [i for i, k in enumerate(keys) if k == key]
        rng.shuffle(members)
        groups.append(members)
    return groups


def hold_out(strips: StripSet, test_fraction: float, seed: int) -> tuple[StripSet, StripSet]:
    """(rest, test): a stratified test split that neither training nor tuning ever sees."""
    rest, test = [], []
    for members in _strata(strips, seed + 7919):  # independent of the val split's shuffle
        n_test = round(len(members) * test_fraction)
        test += members[:n_test]
        rest += members[n_test:]
    return strips.subset(sorted(rest)), strips.subset(sorted(test))


def split(strips: StripSet, val_fraction: float, seed: int, folds: int = 0,
          fold: int = 0) -> tuple[StripSet, StripSet]:
    """Deterministic split, stratified by the set of classes each strip holds.

    With `folds` > 1, every stratum is dealt round-robin into `folds` parts and part
    `fold` validates (k-fold cross-validation); otherwise `val_fraction` of each stratum.
    """
    train, val = [], []
    for members in _strata(strips, seed):
        if folds > 1:
            chosen = set(members[fold::folds])
            val += [i for i in members if i in chosen]
            train += [i for i in members if i not in chosen]
            continue
        n_val = round(len(members) * val_fraction)
        val += members[:n_val]
        train += members[n_val:]
    return strips.subset(sorted(train)), strips.subset(sorted(val))


class CropDataset(Dataset):
    """Random crops from long strips, with flips applied identically to image and masks.

    A share of the crops (`defect_share`) is centred on a random defect pixel: thin
    defects cover a tiny fraction of a strip, and uniform crops would rarely show them.
    Which class a defect-centred crop shows is drawn with `class_weights` (empty: as often
    as the strips hold it; equal weights balance rare classes against common ones, e.g.
    Severstal's 5,150 : 801 : 897 : 247 images per class). Each item is drawn from
    (seed, epoch, index) alone, so workers, ranks and resumed runs draw the same crops.
    """

    def __init__(self, strips: StripSet, crop: tuple[int, int], seed: int,
                 samples_per_epoch: int, defect_share: float = 0.5,
                 augment: Augmentation | None = None,
                 class_weights: list[float] | tuple[float, ...] = ()) -> None:
        self.strips, self.crop = strips, crop
        self.seed, self.samples = seed, samples_per_epoch
        self.defect_share = defect_share
        self.augment = augment or Augmentation()
        self.epoch = 0
        holds = strips.presence()
        self.defective = np.flatnonzero(holds.any(axis=1))
        self.by_class = [np.flatnonzero(holds[:, k]) for k in range(holds.shape[1])]
        weights = np.asarray(class_weights or [len(m) for m in self.by_class], np.float64)
        if len(weights) != holds.shape[1] or (weights < 0).any():
            raise ValueError(f"class_weights: one non-negative weight per class "
                             f"({holds.shape[1]}), got {list(class_weights)}")
        weights[[not len(m) for m in self.by_class]] = 0.0  # classes no strip holds
        self.class_odds = weights / weights.sum() if weights.sum() else None

    def __len__(self) -> int:
        return self.samples

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, class planes) of one crop."""
        ch, cw = self.crop
        height, width = self.strips.shape
        if self.class_odds is not None and rng.random() < self.defect_share:
            k = int(rng.choice(len(self.class_odds), p=self.class_odds))
            holders = self.by_class[k]
            i = int(holders[int(rng.integers(len(holders)))])
            pixels, planes = self.strips.decoded(i)
            ys, xs = np.nonzero((planes >> k) & 1)
            if len(ys):  # a label that vanished in a resize: fall back to a plain crop
                j = int(rng.integers(len(ys)))
                y = int(np.clip(ys[j] - rng.integers(ch), 0, height - ch))
                x = int(np.clip(xs[j] - rng.integers(cw), 0, width - cw))
                return pixels[y:y + ch, x:x + cw], planes[y:y + ch, x:x + cw]
        else:
            i = int(rng.integers(len(self.strips)))
            pixels, planes = self.strips.decoded(i)
        y = int(rng.integers(0, height - ch + 1))
        x = int(rng.integers(0, width - cw + 1))
        return pixels[y:y + ch, x:x + cw], planes[y:y + ch, x:x + cw]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, planes = self._crop(rng)
        masks = planes_to_masks(planes, len(self.strips.class_ids))
        image, masks = augment(image, masks, self.augment, rng)
        # uint8 both: a quarter of the bytes through the workers' shared memory; the
        # trainer converts on its device (train_step).
        return (torch.from_numpy(np.ascontiguousarray(image))[None],
                torch.from_numpy(np.ascontiguousarray(masks)))


def augment(image: np.ndarray, masks: np.ndarray, settings: Augmentation,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flips, small rotation/translation (same warp for image and masks, nearest for masks),
    brightness/contrast and sensor noise (image only)."""
    if rng.random() < settings.hflip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    if rng.random() < settings.vflip:
        image, masks = image[::-1], masks[:, ::-1]
    if settings.rotate_deg or settings.translate_px:
        height, width = image.shape
        angle = rng.uniform(-settings.rotate_deg, settings.rotate_deg)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        matrix[:, 2] += rng.uniform(-settings.translate_px, settings.translate_px, 2)
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        masks = np.stack([cv2.warpAffine(np.ascontiguousarray(m), matrix, (width, height),
                                         flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
                          for m in masks])
    if settings.brightness or settings.contrast or settings.noise_std:
        pixels = image.astype(np.float32)
        gain = 1 + rng.uniform(-settings.contrast, settings.contrast)
        offset = rng.uniform(-settings.brightness, settings.brightness) * 255
        pixels = (pixels - 128) * gain + 128 + offset
        if settings.noise_std:
            pixels += rng.normal(0, settings.noise_std, pixels.shape)
        image = np.clip(pixels, 0, 255).astype(np.uint8)
    return image, masks

"""A labelled folder in memory, split, and served as torch datasets.

Masks are kept as one uint8 plane per image with class k in bit k, which holds several
(overlapping or not) classes in the space of one grayscale image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lineside.edge.labels import open_dataset
from lineside.train.config import Augmentation


@dataclass
class StripSet:
    """Images (N, H, W) uint8, class bit-planes (N, H, W) uint8, their names and classes."""

    names: list[str]
    images: np.ndarray
    bits: np.ndarray
    class_ids: tuple[int, ...]

    def masks(self, index: int) -> np.ndarray:
        """(K, H, W) uint8 0/1 masks of one strip."""
        planes = self.bits[index]
        return np.stack([(planes >> k) & 1 for k in range(len(self.class_ids))]).astype(np.uint8)

    def subset(self, indices: list[int]) -> StripSet:
        return StripSet([self.names[i] for i in indices], self.images[indices],
                        self.bits[indices], self.class_ids)

    def presence(self) -> np.ndarray:
        """(N, K) bool: which classes each strip holds."""
        return np.stack([[(self.bits[i] >> k & 1).any() for k in range(len(self.class_ids))]
                         for i in range(len(self.names))])


def load_strips(root: str | Path, class_ids: tuple[int, ...] = (1, 2, 3, 4),
                limit: int = 0, resize: tuple[int, int] | None = None,
                label_names: dict[str, int] | None = None) -> StripSet:
    """A labelled folder in any format edge.labels reads (Severstal CSV, image+mask
    folders, LabelMe), in memory; `resize` [height, width] for images of differing sizes."""
    dataset = open_dataset(root, label_names=label_names, require_labels=True, limit=limit)
    names, images, bits = [], [], []
    for sample in dataset.samples:
        gray = sample.image()
        masks = sample.masks(class_ids, gray.shape)
        if resize:
            height, width = resize
            gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
            masks = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
                              for m in masks])
        if images and gray.shape != images[0].shape:
            raise ValueError(f"{sample.name} is {gray.shape}, others {images[0].shape}: set "
                             "`resize` in the training config")
        plane = np.zeros(gray.shape, np.uint8)
        for k in range(len(class_ids)):
            plane |= (masks[k] > 0).astype(np.uint8) << k
        names.append(sample.name)
        images.append(gray)
        bits.append(plane)
    return StripSet(names, np.stack(images), np.stack(bits), class_ids)


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
    """

    def __init__(self, strips: StripSet, crop: tuple[int, int], seed: int,
                 samples_per_epoch: int, defect_share: float = 0.5,
                 augment: Augmentation | None = None) -> None:
        self.strips, self.crop = strips, crop
        self.seed, self.samples = seed, samples_per_epoch
        self.defect_share = defect_share
        self.augment = augment or Augmentation()
        self.epoch = 0
        self.defective = [i for i in range(len(strips.names)) if strips.bits[i].any()]

    def _window(self, rng: np.random.Generator) -> tuple[int, int, int]:
        ch, cw = self.crop
        height, width = self.strips.images.shape[1:]
        if self.defective and rng.random() < self.defect_share:
            i = self.defective[int(rng.integers(len(self.defective)))]
            ys, xs = np.nonzero(self.strips.bits[i])
            j = int(rng.integers(len(ys)))
            y = int(np.clip(ys[j] - rng.integers(ch), 0, height - ch))
            x = int(np.clip(xs[j] - rng.integers(cw), 0, width - cw))
            return i, y, x
        i = int(rng.integers(len(self.strips.names)))
        return i, int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        i, y, x = self._window(rng)
        ch, cw = self.crop
        image = self.strips.images[i, y:y + ch, x:x + cw]
        masks = self.strips.masks(i)[:, y:y + ch, x:x + cw]
        image, masks = augment(image, masks, self.augment, rng)
        return (torch.from_numpy(np.ascontiguousarray(image))[None],
                torch.from_numpy(np.ascontiguousarray(masks)).float())


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

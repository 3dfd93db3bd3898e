"""edge-synth: a Severstal-layout data set of generated steel strips, deterministic by seed.

Each strip is 256x1600 grayscale steel: a base grey with an illumination gradient, rolling
marks along the rolling direction (horizontal), fine grain and sensor noise. Four defect
classes look different from each other, as Severstal's do:

  1 pits        clusters of small dark round spots
  2 cracks      thin dark near-vertical lines (across the rolling direction)
  3 scratches   long thin bright or dark lines along the rolling direction
  4 patches     large irregular darker regions with their own texture

About 45% of strips are defect-free (Severstal: 47%), and some carry two classes. Masks of
different classes never overlap (also as in Severstal). Every image is generated from
(seed, index) alone, so a larger set starts with the same images as a smaller one.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lineside.edge import rle
from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.labels.severstal import SEVERSTAL_CLASSES, write_labels

HEIGHT, WIDTH = 256, 1600
CLASS_NAMES = {1: "pits", 2: "cracks", 3: "scratches", 4: "patches"}
# Probability that a strip carries each class (drawn independently, then clean strips kept
# at about 45%); class 3 dominates as in Severstal.
CLASS_RATES = {1: 0.14, 2: 0.09, 3: 0.30, 4: 0.12}

log = logging.getLogger("lineside.train.synth")


def image_id(seed: int, index: int) -> str:
    return hashlib.sha1(f"lineside-{seed}-{index}".encode()).hexdigest()[:9]


def steel_background(rng: np.random.Generator) -> np.ndarray:
    """Float32 (H, W) background in grey levels."""
    base = rng.uniform(85, 135)
    x = np.linspace(-1, 1, WIDTH, dtype=np.float32)
    y = np.linspace(-1, 1, HEIGHT, dtype=np.float32)[:, None]
    gradient = rng.uniform(-18, 18) * x + rng.uniform(-10, 10) * y + \
        rng.uniform(-12, 0) * (x ** 2)  # vignetting of the line light
    image = np.full((HEIGHT, WIDTH), base, np.float32) + gradient
    # Rolling marks: row-wise streaks, smooth along the strip, varying across it.
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, 1)).astype(np.float32), (1, 5), 0)
    image += streaks * rng.uniform(2, 6)
    # Grain: anisotropic (stretched along the rolling direction) blurred noise.
    grain = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, WIDTH)).astype(np.float32), (21, 3), 0)
    image += grain * rng.uniform(6, 12)
    return image


def draw_pits(rng, image, mask) -> None:
    cx, cy = rng.uniform(40, WIDTH - 40), rng.uniform(30, HEIGHT - 30)
    for _ in range(rng.integers(3, 12)):
        x = int(np.clip(cx + rng.normal(0, 25), 4, WIDTH - 5))
        y = int(np.clip(cy + rng.normal(0, 18), 4, HEIGHT - 5))
        r = int(rng.integers(2, 6))
        cv2.circle(image, (x, y), r, float(rng.uniform(-70, -40)), -1, cv2.LINE_AA)
        cv2.circle(mask, (x, y), r + 1, 1, -1)


def draw_crack(rng, image, mask) -> None:
    x = rng.uniform(30, WIDTH - 30)
    y0 = rng.uniform(0, HEIGHT * 0.5)
    length = rng.uniform(60, HEIGHT - y0)
    points = []
    for t in np.linspace(0, 1, 8):
        x += rng.normal(0, 3)
        points.append((int(x), int(y0 + t * length)))
    pts = np.array(points, np.int32)
    width = int(rng.integers(1, 3))
    cv2.polylines(image, [pts], False, float(rng.uniform(-75, -50)), width, cv2.LINE_AA)
    cv2.polylines(mask, [pts], False, 1, width + 2)


def draw_scratch(rng, image, mask) -> None:
    length = rng.uniform(250, 1000)
    x0 = rng.uniform(0, WIDTH - length)
    y = rng.uniform(15, HEIGHT - 15)
    slope = rng.normal(0, 0.02)
    pts = np.array([(int(x0 + t * length), int(y + slope * t * length))
                    for t in np.linspace(0, 1, 6)], np.int32)
    width = int(rng.integers(2, 5))
    sign = 1 if rng.random() < 0.5 else -1
    cv2.polylines(image, [pts], False, float(sign * rng.uniform(45, 70)), width, cv2.LINE_AA)
    cv2.polylines(mask, [pts], False, 1, width + 2)


def draw_patch(rng, image, mask) -> None:
    w, h = int(rng.uniform(120, 420)), int(rng.uniform(80, HEIGHT))
    x0, y0 = int(rng.uniform(0, WIDTH - w)), int(rng.uniform(0, HEIGHT - h + 1))
    field = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 12)
    yy, xx = np.mgrid[0:h, 0:w]
    ellipse = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    region = (field * 8 - ellipse * 1.5 + 0.6) > 0
    if region.sum() < 800:
        region = ellipse < 0.5
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (5, 5), 0) * 10
    image[y0:y0 + h, x0:x0 + w][region] += float(rng.uniform(-45, -28)) + texture[region]
    mask[y0:y0 + h, x0:x0 + w][region] = 1


DRAWERS = {1: draw_pits, 2: draw_crack, 3: draw_scratch, 4: draw_patch}


def generate(seed: int, index: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One strip: (H, W) uint8 image and {class_id: (H, W) uint8 mask} of its defects."""
    rng = np.random.default_rng([seed, index])
    image = steel_background(rng)
    chosen = [c for c in SEVERSTAL_CLASSES if rng.random() < CLASS_RATES[c]]
    masks: dict[int, np.ndarray] = {}
    taken = np.zeros((HEIGHT, WIDTH), np.uint8)
    for class_id in chosen:
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        for _ in range(1 if class_id == 4 else int(rng.integers(1, 3))):
            DRAWERS[class_id](rng, image, mask)
        mask[taken > 0] = 0  # classes never overlap; the first drawn keeps the pixels
        if mask.any():
            masks[class_id] = mask
            taken |= mask
    image += rng.normal(0, rng.uniform(2, 5), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), masks


def drifted(image: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """A line's lighting drift (a dimmer lamp, a dirty lens, a new steel grade's sheen):
    every pixel `gain * p + offset`, clipped to 0..255."""
    if gain == 1.0 and offset == 0.0:
        return image
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def write_dataset(out: Path, count: int, seed: int, start: int = 0,
                  jpeg_quality: int = 90, gain: float = 1.0,
                  offset: float = 0.0) -> dict[str, dict[int, str]]:
    images_dir = out / "train_images"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[int, str]] = {}
    began = time.monotonic()
    for n, index in enumerate(range(start, start + count), start=1):
        image, masks = generate(seed, index)
        image = drifted(image, gain, offset)
        name = f"{image_id(seed, index)}.jpg"
        cv2.imwrite(str(images_dir / name), image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        labels[name] = {c: rle.encode(m) for c, m in masks.items()}
        if n % 100 == 0 or n == count:
            rate = n / max(time.monotonic() - began, 1e-9)
            log.info("generated %d/%d strips (%.0f/s)", n, count, rate)
    write_labels(out / "train.csv", labels)
    return labels


EXAMPLES = """\
  edge-synth -o data/synth --count 1000 --seed 7
  edge-synth -o data/line-replay --count 50 --seed 7 --start 1000   # held-out frames
  edge-synth -o data/drifted --count 50 --seed 7 --gain 0.55 --offset 20  # dimmer light
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-synth", "Generate a Severstal-layout data set of steel strips "
                "(train.csv + train_images/*.jpg).", EXAMPLES)
    ap.add_argument("-o", "--out", required=True, help="output folder")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0,
                    help="first image index (disjoint ranges give disjoint sets)")
    ap.add_argument("--gain", type=float, default=1.0, help="lighting drift: each pixel "
                    "becomes gain * pixel + offset (the same strips, as a changed line sees "
                    "them)")
    ap.add_argument("--offset", type=float, default=0.0, help="see --gain")
    args = ap.parse_args(argv)
    setup_logging()
    labels = write_dataset(Path(args.out), args.count, args.seed, args.start,
                           gain=args.gain, offset=args.offset)
    defective = sum(1 for pairs in labels.values() if pairs)
    print(f"wrote {len(labels)} strips to {args.out} ({defective} with defects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

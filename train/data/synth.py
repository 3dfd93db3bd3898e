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

What a real line shows that is not a defect is drawn too, and labelled clean, so that a
model trained here does not take it for one (a model trained on the earlier, cleaner
strips flagged class 4 on 19 of the 21 real Severstal strips in tests/data): the dark
region past the strip's edge (30% of strips, either side, 3-65% of the width), banding,
rolling texture and roll marks down the strip, lubricant smears, striations, bright
scale flecks, and JPEG quality varying from strip to strip. They come from their own
random stream (adding one never moves a defect). Measured with
scripts/real_samples.py: docs/training.md, "Generated data and the real line".
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
    """Float32 (H, W) background in grey levels: a base grey (real strips range from
    dark to mid grey), the line light's gradient and vignetting, banding across the
    strip, rolling texture (streaks down the image, as Severstal's camera sees them,
    varying along their length) and grain."""
    base = rng.uniform(50, 125)
    x = np.linspace(-1, 1, WIDTH, dtype=np.float32)
    y = np.linspace(-1, 1, HEIGHT, dtype=np.float32)[:, None]
    gradient = rng.uniform(-18, 18) * x + rng.uniform(-10, 10) * y + \
        rng.uniform(-12, 0) * (x ** 2)  # vignetting of the line light
    image = np.full((HEIGHT, WIDTH), base, np.float32) + gradient
    columns = np.arange(WIDTH, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):  # banding: the light's stripes across the strip
        period = rng.uniform(80, 700)
        image += rng.uniform(1, 8) * np.sin(2 * np.pi * columns / period + rng.uniform(0, 7))
    # Rolling texture: streaks down the image whose strength drifts along them.
    streaks = rng.normal(0, 1, (HEIGHT // 32, WIDTH)).astype(np.float32)
    streaks = cv2.resize(cv2.GaussianBlur(streaks, (3, 1), 0), (WIDTH, HEIGHT),
                         interpolation=cv2.INTER_CUBIC)
    image += streaks * rng.uniform(3, 16)
    rows = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, 1)).astype(np.float32), (1, 5), 0)
    image += rows * rng.uniform(0.5, 3)
    # Grain: blurred noise, stretched down the image or along it.
    kernel = (3, 21) if rng.random() < 0.6 else (21, 3)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, WIDTH)).astype(np.float32), kernel, 0)
    image += grain * rng.uniform(6, 12)
    return image


# -- what a real line shows that is not a defect (labelled clean) -------------------------
def draw_oil(rng, image) -> None:
    """Lubricant or water marks: soft elongated smears down the strip, mostly darker."""
    w, h = int(rng.uniform(8, 70)), int(rng.uniform(60, HEIGHT))
    x0, y0 = int(rng.uniform(0, WIDTH - w)), int(rng.uniform(0, HEIGHT - h + 1))
    field = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 6)
    yy, xx = np.mgrid[0:h, 0:w]
    ellipse = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    weight = np.clip(field * 4 - ellipse + 0.7, 0, 1)
    weight = cv2.GaussianBlur(weight, (0, 0), rng.uniform(1.5, 5))
    level = rng.uniform(-32, -10) if rng.random() < 0.8 else rng.uniform(8, 20)
    image[y0:y0 + h, x0:x0 + w] += level * weight


def draw_roll_marks(rng, image) -> None:
    """Roll marks: thin straight streaks down the strip, darker or brighter, left by the
    rolls (the texture that a scratch detector must not take for scratches)."""
    marks = np.zeros_like(image)  # drawn apart, then added: OpenCV draws values
    for _ in range(int(rng.integers(1, 8))):
        x = rng.uniform(0, WIDTH)
        y0, y1 = sorted(rng.uniform(0, HEIGHT, 2))
        if rng.random() < 0.6:
            y0, y1 = 0.0, float(HEIGHT)
        drift = rng.normal(0, 4)
        level = float(rng.uniform(-22, -8) if rng.random() < 0.75 else rng.uniform(6, 16))
        cv2.line(marks, (int(x), int(y0)), (int(x + drift), int(y1)), level,
                 int(rng.integers(1, 3)), cv2.LINE_AA)
    image += marks


def draw_rolled_texture(rng, image) -> None:
    """A region of fine texture along the strip (the rolled surface in raking light)."""
    w, h = int(rng.uniform(150, WIDTH)), int(rng.uniform(40, HEIGHT))
    x0, y0 = int(rng.uniform(0, WIDTH - w)), int(rng.uniform(0, HEIGHT - h + 1))
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (15, 1), 0)
    fade = cv2.GaussianBlur(np.ones((h, w), np.float32), (0, 0), 10)
    image[y0:y0 + h, x0:x0 + w] += texture * rng.uniform(8, 22) * fade


def draw_striations(rng, image) -> None:
    """A patch of short dashes along the strip (rolled-in striations, pickling marks):
    line-like like a scratch, but short, and many of them."""
    w, h = int(rng.uniform(100, 700)), int(rng.uniform(30, HEIGHT))
    x0, y0 = int(rng.uniform(0, WIDTH - w)), int(rng.uniform(0, HEIGHT - h + 1))
    marks = np.zeros_like(image)  # drawn apart, then added: OpenCV draws values
    for _ in range(int(rng.integers(30, 400))):
        x, y = int(x0 + rng.uniform(0, w)), int(y0 + rng.uniform(0, h))
        length = int(rng.uniform(4, 40))
        level = float(rng.uniform(-40, -12) if rng.random() < 0.6 else rng.uniform(12, 35))
        cv2.line(marks, (x, y), (x + length, y + int(rng.normal(0, 1))), level,
                 int(rng.integers(1, 3)), cv2.LINE_AA)
    image += marks


def draw_scale(rng, image) -> None:
    """Scale and bright flecks: a cluster of small bright, nearly white blobs (in
    Severstal they sit on defect-free strips as often as not)."""
    cx, cy = rng.uniform(30, WIDTH - 30), rng.uniform(20, HEIGHT - 20)
    spread = rng.uniform(10, 60)
    for _ in range(int(rng.integers(4, 30))):
        x = int(np.clip(cx + rng.normal(0, spread), 2, WIDTH - 3))
        y = int(np.clip(cy + rng.normal(0, spread), 2, HEIGHT - 3))
        axes = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        # OpenCV draws a value, it does not add one: the flecks are that grey.
        cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360,
                    float(rng.uniform(170, 255)), -1, cv2.LINE_AA)


def off_strip(rng) -> np.ndarray | None:
    """Where the camera sees past the strip's edge (common in Severstal): a (H, W) bool
    region at the left or right, of varying width, or None."""
    if rng.random() >= 0.3:
        return None
    width = int(WIDTH * rng.uniform(0.03, 0.65))
    edge = width + np.round(np.cumsum(rng.normal(0, 0.4, HEIGHT))).astype(int)  # not straight
    edge = np.clip(edge, 1, WIDTH - 1)
    region = np.arange(WIDTH)[None, :] < edge[:, None]
    return region if rng.random() < 0.5 else region[:, ::-1]


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
    sign = 1 if rng.random() < 0.35 else -1
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
    nuisance = np.random.default_rng([seed, index, 1])  # its own stream: defects unchanged
    for _ in range(int(nuisance.poisson(1.2)) if nuisance.random() < 0.55 else 0):
        draw_oil(nuisance, image)
    if nuisance.random() < 0.3:
        draw_scale(nuisance, image)
    if nuisance.random() < 0.4:
        draw_roll_marks(nuisance, image)
    if nuisance.random() < 0.35:
        draw_rolled_texture(nuisance, image)
    if nuisance.random() < 0.35:
        draw_striations(nuisance, image)
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
    margin = off_strip(nuisance)
    if margin is not None:  # nothing is seen past the edge, defects included
        image[margin] = nuisance.uniform(0, 14) + nuisance.normal(0, 1.5, int(margin.sum()))
        for class_id in list(masks):
            masks[class_id][margin] = 0
            if not masks[class_id].any():
                del masks[class_id]
    return np.clip(image, 0, 255).astype(np.uint8), masks


def jpeg_quality(seed: int, index: int) -> int:
    """The camera's compression, varying from strip to strip as in Severstal's JPEGs."""
    return int(np.random.default_rng([seed, index, 2]).integers(75, 96))


def drifted(image: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """A line's lighting drift (a dimmer lamp, a dirty lens, a new steel grade's sheen):
    every pixel `gain * p + offset`, clipped to 0..255."""
    if gain == 1.0 and offset == 0.0:
        return image
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def write_dataset(out: Path, count: int, seed: int, start: int = 0,
                  quality: int | None = None, gain: float = 1.0,
                  offset: float = 0.0) -> dict[str, dict[int, str]]:
    images_dir = out / "train_images"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[int, str]] = {}
    began = time.monotonic()
    for n, index in enumerate(range(start, start + count), start=1):
        image, masks = generate(seed, index)
        image = drifted(image, gain, offset)
        name = f"{image_id(seed, index)}.jpg"
        strip_quality = jpeg_quality(seed, index) if quality is None else quality
        cv2.imwrite(str(images_dir / name), image, [cv2.IMWRITE_JPEG_QUALITY, strip_quality])
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

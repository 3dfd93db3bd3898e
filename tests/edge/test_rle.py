"""RLE codec: exact Kaggle convention, round trips, and the real Severstal rows."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lineside.edge import rle
from lineside.edge.labels.severstal import read_labels
from tests.helpers import SAMPLES

SHAPE = (256, 1600)


def test_column_major_one_indexed():
    mask = np.zeros((4, 3), np.uint8)
    mask[1:3, 0] = 1  # pixels 2,3 in column-major 1-indexed numbering
    mask[0, 1] = 1  # pixel 5
    mask[3, 2] = 1  # pixel 12 (last)
    assert rle.encode(mask) == "2 2 5 1 12 1"
    assert np.array_equal(rle.decode("2 2 5 1 12 1", (4, 3)), mask)


def test_empty_and_full():
    assert rle.encode(np.zeros((5, 7), np.uint8)) == ""
    assert rle.decode("", (5, 7)).sum() == 0
    assert rle.encode(np.ones((5, 7), np.uint8)) == "1 35"


@pytest.mark.parametrize("bad", ["1 2 3", "0 5", "5 0", "a b", "10 5 12 3", "30 10"])
def test_malformed_strings_are_errors(bad):
    with pytest.raises(rle.RleError):
        rle.decode(bad, (5, 7))


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)),
              elements=st.integers(0, 1)))
def test_round_trip_random_masks(mask):
    encoded = rle.encode(mask)
    assert np.array_equal(rle.decode(encoded, mask.shape), mask)
    assert rle.area(encoded) == int(mask.sum())


def _sample_image(image_id: str) -> np.ndarray:
    stem = image_id.rsplit(".", 1)[0]
    for path in (SAMPLES / "images" / f"{stem}.jpg", SAMPLES / "images_png" / f"{stem}.png"):
        if path.exists():
            return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    raise FileNotFoundError(image_id)


def test_real_rows_decode_onto_real_images_and_reencode_identically():
    with open(SAMPLES / "train_with_mask_derived.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20
    for row in rows:
        image = _sample_image(row["ImageId"])
        assert image.shape == SHAPE
        mask = rle.decode(row["EncodedPixels"], image.shape)
        assert mask.any()
        assert rle.encode(mask) == row["EncodedPixels"]


def test_real_rows_agree_with_label_pngs():
    labels = read_labels(SAMPLES / "train_with_mask_derived.csv")
    pngs = sorted((SAMPLES / "labels_png").glob("*_P.png"))
    assert len(pngs) == 7
    for png in pngs:
        label_map = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        image_id = png.name.replace("_P.png", ".jpg")
        pairs = labels.get(image_id, {})
        for class_id in (1, 2, 3, 4):
            expected = (label_map == class_id).astype(np.uint8)
            decoded = rle.decode(pairs.get(class_id, ""), SHAPE)
            assert np.array_equal(decoded, expected), (image_id, class_id)


def test_verbatim_kaggle_rows_match_the_label_png():
    # b6a257b28 class 2 is a verbatim Kaggle string with a label PNG beside it.
    labels = read_labels(SAMPLES / "train.csv")
    label_map = cv2.imread(str(SAMPLES / "labels_png" / "b6a257b28_P.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(rle.decode(labels["b6a257b28.jpg"][2], SHAPE), label_map == 2)

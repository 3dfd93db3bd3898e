"""Image+mask folders and LabelMe polygons load into the same masks as Severstal CSV."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lineside.train.data.formats import LabelFormatError, detect_format
from lineside.train.data.severstal_dataset import load_strips


def test_mask_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        image = np.full((64, 96), 100 + i, np.uint8)
        labels = np.zeros((64, 96), np.uint8)
        labels[10:20, 10:30] = 1
        labels[40:50, 60:90] = 3
        cv2.imwrite(str(tmp_path / "images" / f"w{i}.png"), image)
        cv2.imwrite(str(tmp_path / "masks" / f"w{i}.png"), labels)
    assert detect_format(tmp_path) == "mask_folders"
    strips = load_strips(tmp_path, (1, 2, 3))
    masks = strips.masks(0)
    assert masks.shape == (3, 64, 96)
    assert masks[0].sum() == 200 and masks[1].sum() == 0 and masks[2].sum() == 300


def labelme_file(folder, stem, shapes, size=(80, 120)):
    cv2.imwrite(str(folder / f"{stem}.png"), np.full(size, 90, np.uint8))
    (folder / f"{stem}.json").write_text(json.dumps({
        "imagePath": f"{stem}.png", "imageHeight": size[0], "imageWidth": size[1],
        "shapes": shapes}))


def test_labelme_polygons_rectangles_and_resize(tmp_path):
    labelme_file(tmp_path, "a", [
        {"label": "nugget", "shape_type": "polygon",
         "points": [[10, 10], [50, 10], [50, 40], [10, 40]]},
        {"label": "spatter", "shape_type": "rectangle", "points": [[70, 50], [89, 69]]}])
    labelme_file(tmp_path, "b", [], size=(160, 240))
    assert detect_format(tmp_path) == "labelme"
    with pytest.raises(ValueError, match="resize"):
        load_strips(tmp_path, (1, 2))
    strips = load_strips(tmp_path, (1, 2), resize=(80, 120))
    masks = strips.masks(0)
    assert masks[0].sum() == 41 * 31  # label names sorted: nugget=1, spatter=2
    assert masks[1].sum() == 20 * 20
    assert strips.masks(1).sum() == 0 and strips.images.shape == (2, 80, 120)


def test_unknown_label_is_an_error(tmp_path):
    labelme_file(tmp_path, "a", [{"label": "crack", "points": [[1, 1], [5, 1], [5, 5]]}])
    with pytest.raises(LabelFormatError, match="crack"):
        load_strips(tmp_path, (1,), label_names={"nugget": 1})


def test_empty_folder_is_explained(tmp_path):
    with pytest.raises(LabelFormatError, match=r"train\.csv"):
        detect_format(tmp_path)

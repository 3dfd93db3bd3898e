"""Generated data and the Severstal label loader (both layouts)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lineside.edge import rle
from lineside.edge.labels.severstal import LabelFileError, masks_for, read_labels, write_labels
from lineside.train.data.synth import generate, write_dataset
from tests.helpers import SAMPLES


def test_generator_is_deterministic_by_seed_and_index():
    a_image, a_masks = generate(3, 5)
    b_image, b_masks = generate(3, 5)
    assert np.array_equal(a_image, b_image)
    assert a_masks.keys() == b_masks.keys()
    assert all(np.array_equal(a_masks[k], b_masks[k]) for k in a_masks)
    assert not np.array_equal(generate(4, 5)[0], a_image)


def test_generated_strips_look_like_severstal():
    clean, classes, overlaps = 0, set(), 0
    for index in range(80):
        image, masks = generate(0, index)
        assert image.shape == (256, 1600) and image.dtype == np.uint8
        assert 40 < image.mean() < 200 and image.std() > 3  # textured steel, not flat
        clean += not masks
        classes |= set(masks)
        stacked = sum(m.astype(int) for m in masks.values()) if masks else np.zeros(1)
        overlaps += int((np.asarray(stacked) > 1).any())
    assert classes == {1, 2, 3, 4}
    assert 0.25 < clean / 80 < 0.7  # a realistic share of defect-free strips
    assert overlaps == 0


def test_classes_differ_in_shape():
    """Per connected region: scratches run along the strip, cracks across it, patches are
    large and pits small."""
    regions: dict[int, list[tuple[int, int, int]]] = {}
    for index in range(200):
        for class_id, mask in generate(1, index)[1].items():
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for _, _, w, h, area in stats[1:count]:
                regions.setdefault(class_id, []).append((w, h, area))
    mean = {c: np.mean(v, axis=0) for c, v in regions.items()}
    assert mean[3][0] > 5 * mean[3][1]
    assert mean[2][1] > 3 * mean[2][0]
    assert mean[4][2] > 50 * mean[1][2]


def test_written_set_reads_back(tmp_path):
    labels = write_dataset(tmp_path, 6, seed=2)
    assert len(list((tmp_path / "train_images").glob("*.jpg"))) == 6
    read = read_labels(tmp_path / "train.csv")
    assert {k: v for k, v in labels.items() if v} == {k: v for k, v in read.items() if v}


def test_old_and_new_layouts_read_the_same(tmp_path):
    new = read_labels(SAMPLES / "train.csv")
    old = tmp_path / "old.csv"
    with open(old, "w") as handle:
        handle.write("ImageId_ClassId,EncodedPixels\n")
        for image_id in sorted(new):
            for class_id in (1, 2, 3, 4):
                handle.write(f"{image_id}_{class_id},{new[image_id].get(class_id, '')}\n")
    assert read_labels(old) == new
    # And the new layout written back is byte-identical to the Kaggle file's rows.
    out = tmp_path / "new.csv"
    write_labels(out, new)
    assert sorted(out.read_text().splitlines()) == \
        sorted((SAMPLES / "train.csv").read_text().splitlines())


def test_unknown_layout_is_an_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n")
    with pytest.raises(LabelFileError):
        read_labels(path)


def test_masks_for_places_each_class():
    pairs = {2: rle.encode(np.eye(256, 1600, dtype=np.uint8))}
    masks = masks_for(pairs)
    assert masks.shape == (4, 256, 1600)
    assert masks[1].sum() == 256 and masks[[0, 2, 3]].sum() == 0

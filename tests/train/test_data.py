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
    clean, classes, overlaps, edges = 0, set(), 0, 0
    for index in range(80):
        image, masks = generate(0, index)
        assert image.shape == (256, 1600) and image.dtype == np.uint8
        past_edge = (image < 22).mean(axis=0) > 0.97  # columns past the strip's edge
        steel = image[:, ~past_edge]
        assert 40 < steel.mean() < 200 and steel.std() > 3  # textured steel, not flat
        if past_edge.sum() > 40:
            edges += 1
            for mask in masks.values():  # nothing is labelled where nothing is seen
                assert not mask[:, past_edge].any()
        clean += not masks
        classes |= set(masks)
        stacked = sum(m.astype(int) for m in masks.values()) if masks else np.zeros(1)
        overlaps += int((np.asarray(stacked) > 1).any())
    assert classes == {1, 2, 3, 4}
    assert 0.25 < clean / 80 < 0.7  # a realistic share of defect-free strips
    assert overlaps == 0
    assert 0.15 < edges / 80 < 0.45  # strips showing the dark region past the edge


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


def _dataset(tmp_path, count=24):
    write_dataset(tmp_path / "set", count=count, seed=5)
    return tmp_path / "set"


def test_indexing_a_set_decodes_nothing_so_memory_does_not_grow_with_it(tmp_path):
    import tracemalloc

    from lineside.train.data.severstal_dataset import load_strips

    folder = _dataset(tmp_path)
    tracemalloc.start()
    strips = load_strips(folder)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 24 strips in memory would be 24 x 2 x 400 KB; indexed: the first image and labels
    assert peak < 3_000_000, peak
    assert len(strips) == 24 and strips.shape == (256, 1600)
    assert strips.presence().any()


def crops_at(folder, workers: int, epoch: int, cache: str | None = None) -> list:
    """The crops of one epoch, as the trainer iterates them (a loader reused across
    epochs: workers must follow the epoch)."""
    from lineside.train.data.severstal_dataset import CropDataset, load_strips
    from lineside.train.trainer import make_loader

    dataset = CropDataset(load_strips(folder, cache_dir=cache), (128, 256), seed=3,
                          samples_per_epoch=16)
    loader = make_loader(dataset, 4, workers)
    for e in range(epoch + 1):
        dataset.epoch = e
        batches = [t for batch in loader for t in batch]
    return batches


def test_workers_and_the_disk_cache_give_the_same_crops(tmp_path):
    import torch

    from lineside.train.data.severstal_dataset import load_strips

    folder = _dataset(tmp_path)

    def crops(workers: int, cache: str | None) -> list[torch.Tensor]:
        return crops_at(folder, workers, 1, cache)

    reference = crops(0, None)
    assert not all(torch.equal(a, b) for a, b in zip(crops_at(folder, 2, 2), reference,
                                                     strict=True)), "epochs draw alike"
    cache = tmp_path / "cache"
    for workers, use in ((2, str(cache)), (0, str(cache))):  # workers fill it, then hits
        assert all(torch.equal(a, b) for a, b in zip(crops(workers, use), reference,
                                                     strict=True))
    done = np.fromfile(cache / "done.u8", np.uint8)
    assert done.any() and set(np.unique(done)) <= {0, 1}
    # the cache holds exactly what decoding gives
    strips = load_strips(folder, cache_dir=cache)
    fresh = load_strips(folder)
    for i in np.flatnonzero(done)[:3]:
        assert np.array_equal(strips.decoded(int(i))[0], fresh.decoded(int(i))[0])
        assert np.array_equal(strips.decoded(int(i))[1], fresh.decoded(int(i))[1])


def test_class_weights_decide_which_class_a_defect_crop_shows(tmp_path):
    from lineside.train.data.severstal_dataset import CropDataset, load_strips

    strips = load_strips(_dataset(tmp_path, 40))
    holds = strips.presence().sum(axis=0)

    def shown(weights) -> np.ndarray:
        dataset = CropDataset(strips, (64, 64), seed=1, samples_per_epoch=1,
                              defect_share=1.0, class_weights=weights)
        return dataset.class_odds

    natural = shown(())
    assert np.allclose(natural, holds / holds.sum())  # as often as strips hold a class
    equal = shown([1, 1, 1, 1])
    assert np.allclose(equal[holds > 0], 1 / (holds > 0).sum())
    # and the crops follow: every defect-centred crop shows its drawn class
    dataset = CropDataset(strips, (64, 64), seed=1, samples_per_epoch=200, defect_share=1.0,
                          class_weights=[0, 0, 0, 1] if holds[3] else [1, 0, 0, 0])
    k = 3 if holds[3] else 0
    assert all(dataset[i][1][k].any() for i in range(40))
    with pytest.raises(ValueError, match="class_weights"):
        CropDataset(strips, (64, 64), seed=1, samples_per_epoch=1, class_weights=[1, 1])


def test_progress_in_a_log_says_count_rate_and_time_left(caplog):
    import logging

    from lineside.train.progress import progress

    with caplog.at_level(logging.INFO, logger="lineside.train"):
        items = list(progress(range(5), 5, "validation", "strips", scale=2, every_s=0.0))
    assert items == list(range(5))  # every item, in order
    lines = [r.getMessage() for r in caplog.records]
    assert lines and lines[0].startswith("validation: 2/10 strips (") and "s left" in lines[0]

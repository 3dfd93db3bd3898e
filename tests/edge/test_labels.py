"""One reader for every label format: Severstal CSV (both layouts), image+mask folders and
LabelMe polygons give the same samples and masks, and every command reads all of them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lineside.calibration.calibration_set import build_from_folder, choose_frames
from lineside.edge import rle
from lineside.edge.labels import LabelFormatError, detect_format, open_dataset
from lineside.edge.labels.severstal import write_labels
from lineside.tools.evaluation import LabelledFrames
from lineside.train.data.severstal_dataset import load_strips
from tests.helpers import SAMPLES

CLASSES = (1, 2, 3, 4)
# (class id, x0, y0, x1, y1), corners inclusive, never overlapping (label maps cannot).
BOXES = {"a.png": [(1, 10, 10, 60, 40), (3, 200, 5, 400, 20)],
         "b.png": [],
         "c.png": [(4, 600, 100, 900, 250)],
         "d.png": [(2, 30, 30, 35, 200), (1, 1000, 0, 1100, 50)]}


def box_masks(boxes, shape=(256, 1600)) -> np.ndarray:
    masks = np.zeros((len(CLASSES), *shape), np.uint8)
    for class_id, x0, y0, x1, y1 in boxes:
        masks[CLASSES.index(class_id), y0:y1 + 1, x0:x1 + 1] = 1
    return masks


def write_all_formats(root: Path) -> dict[str, Path]:
    """The same four strips and labels in every format the reader knows."""
    rng = np.random.default_rng(3)
    images = {name: rng.integers(40, 200, (256, 1600), dtype=np.uint8) for name in BOXES}
    folders = {name: root / name for name in ("severstal", "severstal-old", "mask_folders",
                                              "labelme")}
    labels = {name: {c: rle.encode(box_masks(boxes)[CLASSES.index(c)])
                     for c, *_ in boxes} for name, boxes in BOXES.items()}
    for layout, folder in (("new", folders["severstal"]), ("old", folders["severstal-old"])):
        (folder / "train_images").mkdir(parents=True)
        write_labels(folder / "train.csv", labels, layout=layout)
        for name, gray in images.items():
            cv2.imwrite(str(folder / "train_images" / name), gray)
    masks_root = folders["mask_folders"]
    (masks_root / "images").mkdir(parents=True)
    (masks_root / "masks").mkdir()
    labelme_root = folders["labelme"]
    labelme_root.mkdir()
    for name, gray in images.items():
        cv2.imwrite(str(masks_root / "images" / name), gray)
        label_map = np.zeros(gray.shape, np.uint8)
        for class_id, x0, y0, x1, y1 in BOXES[name]:
            label_map[y0:y1 + 1, x0:x1 + 1] = class_id
        cv2.imwrite(str(masks_root / "masks" / name), label_map)
        cv2.imwrite(str(labelme_root / name), gray)
        shapes = [{"label": f"class{c}", "shape_type": "rectangle",
                   "points": [[x0, y0], [x1, y1]]} for c, x0, y0, x1, y1 in BOXES[name]]
        (labelme_root / f"{Path(name).stem}.json").write_text(json.dumps(
            {"imagePath": name, "imageHeight": 256, "imageWidth": 1600, "shapes": shapes}))
    return folders


LABELME_NAMES = {f"class{c}": c for c in CLASSES}


def test_every_format_gives_the_same_samples_masks_and_classes(tmp_path):
    folders = write_all_formats(tmp_path)
    assert {k: detect_format(v) for k, v in folders.items()} == {
        "severstal": "severstal", "severstal-old": "severstal",
        "mask_folders": "mask_folders", "labelme": "labelme"}
    for kind, folder in folders.items():
        dataset = open_dataset(folder, label_names=LABELME_NAMES)
        assert dataset.names == sorted(BOXES), kind
        for sample in dataset.samples:
            assert sample.classes() == sorted({c for c, *_ in BOXES[sample.name]}), kind
            np.testing.assert_array_equal(sample.masks(CLASSES, (256, 1600)),
                                          box_masks(BOXES[sample.name]), err_msg=kind)


def test_training_evaluation_and_calibration_read_every_format_alike(tmp_path):
    folders = write_all_formats(tmp_path)
    reference = None
    for kind, folder in folders.items():
        strips = load_strips(folder, CLASSES, label_names=LABELME_NAMES)
        frames = LabelledFrames.from_folder(folder, list(CLASSES), label_names=LABELME_NAMES)
        dataset = open_dataset(folder, label_names=LABELME_NAMES)
        order = [s.name for s in choose_frames(dataset.samples, True, "stratified", 5)]
        summary = (strips.names, [strips.image(i).tobytes() for i in range(len(strips))],
                   [strips.planes(i).tobytes() for i in range(len(strips))],
                   frames.names, [t.tobytes() for t in frames.truths], order)
        reference = reference or summary
        assert summary == reference, f"{kind} reads differently"


def test_calibration_sets_from_every_format_are_identical(tmp_path):
    folders = write_all_formats(tmp_path)
    hashes = {kind: build_from_folder(folder, tmp_path / f"cal-{kind}", 14, "stratified", 1,
                                      (256, 256)).sha256
              for kind, folder in folders.items()}
    assert len(set(hashes.values())) == 1, hashes


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
    assert strips.masks(1).sum() == 0 and strips.shape == (80, 120)
    assert strips.image(1).shape == (80, 120) and len(strips) == 2


def test_unknown_label_is_an_error(tmp_path):
    labelme_file(tmp_path, "a", [{"label": "crack", "points": [[1, 1], [5, 1], [5, 5]]}])
    with pytest.raises(LabelFormatError, match="crack"):
        load_strips(tmp_path, (1,), label_names={"nugget": 1})


def test_an_unlabelled_folder_is_images_only_and_explained_where_labels_are_needed(tmp_path):
    assert detect_format(tmp_path) is None
    with pytest.raises(LabelFormatError, match="no images"):
        open_dataset(tmp_path)
    cv2.imwrite(str(tmp_path / "x.bmp"), np.zeros((8, 8), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = open_dataset(tmp_path)
    assert not dataset.labelled and dataset.names == ["x.bmp"]
    assert not dataset.samples[0].masks(CLASSES, (8, 8)).any()
    with pytest.raises(LabelFormatError, match=r"train\.csv"):
        open_dataset(tmp_path, require_labels=True)


@pytest.mark.parametrize("layout", ["new", "old"])
def test_masks_written_as_a_submission_read_back_as_the_real_kaggle_rows(tmp_path, layout):
    from lineside.edge.labels.severstal import labels_from_masks, read_labels

    real = read_labels(SAMPLES / "train_with_mask_derived.csv")
    clean = ["000789191.jpg", "0a1cade03.jpg"]  # defect-free real strips: no rows
    masks = {image_id: np.stack([rle.decode(pairs.get(c, ""), (256, 1600))
                                 for c in (1, 2, 3, 4)])
             for image_id, pairs in real.items()}
    masks.update({image_id: np.zeros((4, 256, 1600), np.uint8) for image_id in clean})
    path = tmp_path / "submission.csv"
    write_labels(path, labels_from_masks(masks, (1, 2, 3, 4)), layout)
    back = read_labels(path)
    assert {k: v for k, v in back.items() if v} == real  # the verbatim Kaggle strings
    assert all(back.get(image_id, {}) == {} for image_id in clean)
    if layout == "old":
        assert set(back) == set(real) | set(clean)  # every image has its four rows


def test_convert_round_trips_every_format_exactly(tmp_path):
    """CSV -> mask folders -> LabelMe -> old-layout CSV: the same masks at each step, the
    same RLE rows at the end, the images' bytes untouched."""
    from lineside.edge.labels.convert import convert
    from lineside.edge.labels.severstal import read_labels

    source = write_all_formats(tmp_path / "given")["severstal"]
    chain = [("mask_folders", "new"), ("labelme", "new"), ("severstal", "old")]
    current = source
    for target, layout in chain:
        out = tmp_path / f"as-{target}"
        report = convert(open_dataset(current), out, target, CLASSES, layout)
        assert report.exact and report.masks_exact == len(BOXES), report
        dataset = open_dataset(out)
        assert dataset.format == target
        for sample in dataset.samples:
            np.testing.assert_array_equal(sample.masks(CLASSES, (256, 1600)),
                                          box_masks(BOXES[sample.name]), err_msg=target)
            assert sample.image_path.read_bytes() == \
                (source / "train_images" / sample.name).read_bytes()
        current = out
    rows = read_labels(current / "train.csv")
    assert {k: v for k, v in rows.items() if v} == read_labels(source / "train.csv")
    assert rows["b.png"] == {}  # the old layout lists a defect-free image with empty rows
    assert (current / "train.csv").read_text().startswith("ImageId_ClassId,")


def test_convert_refuses_what_a_format_cannot_hold_and_reports_what_it_changed(tmp_path):
    from lineside.edge.labels.convert import convert

    root = tmp_path / "given"
    (root / "train_images").mkdir(parents=True)
    cv2.imwrite(str(root / "train_images" / "ring.png"), np.full((256, 1600), 90, np.uint8))
    cv2.imwrite(str(root / "train_images" / "both.png"), np.full((256, 1600), 90, np.uint8))
    ring = np.zeros((256, 1600), np.uint8)
    ring[20:80, 100:200] = 1
    ring[40:60, 130:170] = 0  # a hole of 20 x 40 pixels
    overlap_a, overlap_b = box_masks([(1, 0, 0, 99, 9)])[0], box_masks([(1, 50, 5, 149, 19)])[0]
    write_labels(root / "train.csv", {"ring.png": {3: rle.encode(ring)},
                                      "both.png": {1: rle.encode(overlap_a),
                                                   2: rle.encode(overlap_b)}})
    with pytest.raises(LabelFormatError, match=r"both\.png: classes \[1, 2\] overlap at 250"):
        convert(open_dataset(root), tmp_path / "masks", "mask_folders", CLASSES)
    report = convert(open_dataset(root), tmp_path / "labelme", "labelme", CLASSES)
    assert report.changed_pixels == {"ring.png": 20 * 40} and report.masks_exact == 1
    with pytest.raises(FileExistsError, match="not empty"):
        convert(open_dataset(root), tmp_path / "labelme", "labelme", CLASSES)

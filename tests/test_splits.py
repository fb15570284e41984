"""Split lists, image labels and stats on a tiny VOCdevkit + SBD built in tmp_path."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from csd.splits import build_splits
from csd.voc import CLASSES, load_labels

# id -> object names in its XML ("person+head" = a person with a <part> named head)
OBJECTS = {
    "2007_000032": ["aeroplane", "aeroplane", "person+head"],
    "2007_000039": ["tvmonitor"],
    "2008_000002": ["dog"],
    "2007_000033": ["aeroplane"],
    "2009_000010": ["cat", "dog"],
    "2010_000005": ["boat"],
    "2011_000001": ["person", "bird"],
    "000123": ["sheep"],  # numeric-looking: must stay "000123", never 123
}
VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002"]
VOC_VAL = ["2007_000033", "2009_000010"]
SBD_TRAIN = ["2010_000005", "2007_000032", "2007_000033", "000123"]  # overlaps VOC train/val
SBD_VAL = ["2011_000001", "2010_000005"]  # overlaps SBD train
VOC_TEST = ["2008_000100"]
TRAIN_AUG = sorted({"2007_000032", "2007_000039", "2008_000002", "2010_000005",
                    "2011_000001", "000123"})
SETTINGS = {"expected_counts": None}


def xml_text(objects):
    body = []
    for entry in objects:
        name, _, part = entry.partition("+")
        part_xml = f"<part><name>{part}</name></part>" if part else ""
        body.append(f"<object><name>{name}</name><difficult>0</difficult>{part_xml}</object>")
    return f"<annotation><filename>x.jpg</filename>{''.join(body)}</annotation>"


def make_dataset(root, test=True):
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    for folder in ("JPEGImages", "SegmentationClass", "Annotations",
                   "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    sbd.mkdir(parents=True)
    for image_id, objects in OBJECTS.items():
        Image.new("RGB", (8, 6), (10, 20, 30)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        (voc / "Annotations" / f"{image_id}.xml").write_text(xml_text(objects))
    for image_id in VOC_TRAIN + VOC_VAL:
        Image.new("P", (8, 6), 0).save(voc / "SegmentationClass" / f"{image_id}.png")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    if test:
        (lists / "test.txt").write_text("\n".join(VOC_TEST) + "\n")
        for image_id in VOC_TEST:  # test ids need a JPEG only (no XML, no PNG)
            Image.new("RGB", (8, 6)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc, sbd


def lines(path):
    return path.read_text().splitlines()


def test_split_arithmetic(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    out = tmp_path / "splits"
    build_splits(voc, sbd, out, SETTINGS)
    assert lines(out / "train.txt") == sorted(VOC_TRAIN)
    assert lines(out / "val.txt") == sorted(VOC_VAL)
    assert lines(out / "test.txt") == VOC_TEST
    aug = lines(out / "train_aug.txt")
    assert aug == TRAIN_AUG
    assert "000123" in aug and "2007_000033" not in aug  # string ids; VOC val removed
    assert set(VOC_TRAIN) <= set(aug) and len(aug) == len(set(aug))


def test_labels_csv(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    out = tmp_path / "splits"
    build_splits(voc, sbd, out, SETTINGS)
    frame = pd.read_csv(out / "labels.csv", dtype={"image_id": str})
    assert list(frame.columns) == ["image_id", *CLASSES]
    # every id of train, val and train_aug, none of test
    assert list(frame["image_id"]) == sorted(set(OBJECTS))
    assert "000123" in (out / "labels.csv").read_text()
    labels = load_labels(out / "labels.csv")
    on = {image_id: {CLASSES[c] for c in np.flatnonzero(vector)}
          for image_id, vector in labels.items()}
    assert on["2007_000032"] == {"aeroplane", "person"}  # part name "head" ignored
    assert on["2009_000010"] == {"cat", "dog"}
    assert on["2011_000001"] == {"bird", "person"}
    assert on["000123"] == {"sheep"}


def test_stats_json(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    out = tmp_path / "splits"
    expected = {"train": 3, "val": 2, "train_aug": 6}
    returned = build_splits(voc, sbd, out, {"expected_counts": expected})
    stats = json.loads((out / "stats.json").read_text())
    assert stats == json.loads(json.dumps(returned))
    assert stats["counts"] == {"train": 3, "val": 2, "train_aug": 6, "test": 1}
    assert stats["sources"] == {"voc_train": 3, "voc_val": 2, "sbd_train": 4, "sbd_val": 2}
    # train_aug: 2 multi-label (000032, 2011_000001) of 6
    assert stats["train_aug"]["multi_label"] == pytest.approx(2 / 6)
    assert stats["train_aug"]["single_label"] == pytest.approx(4 / 6)
    assert stats["train_aug"]["multi_label_images"] == 2
    assert stats["class_images"]["train_aug"]["person"] == 2
    assert stats["class_images"]["val"]["dog"] == 1
    assert stats["class_images"]["train"]["cat"] == 0
    assert stats["count_mismatches"] == {}


def test_count_mismatch_warns_and_is_recorded(tmp_path, caplog):
    voc, sbd = make_dataset(tmp_path / "data")
    out = tmp_path / "splits"
    with caplog.at_level(logging.WARNING):
        build_splits(voc, sbd, out, {"expected_counts": {"train_aug": 10582, "train": 3}})
    assert "train_aug" in caplog.text and "10582" in caplog.text
    stats = json.loads((out / "stats.json").read_text())
    assert stats["count_mismatches"] == {"train_aug": {"expected": 10582, "actual": 6}}


def test_without_sbd_or_test(tmp_path, caplog):
    voc, _ = make_dataset(tmp_path / "data", test=False)
    out = tmp_path / "splits"
    with caplog.at_level(logging.WARNING):
        stats = build_splits(voc, None, out, SETTINGS)
    assert "SBD" in caplog.text
    assert lines(out / "train_aug.txt") == sorted(VOC_TRAIN)
    assert not (out / "test.txt").exists()
    assert "test" not in stats["counts"]
    assert stats["sbd"] is False


def test_test_split_asked_for_but_missing_names_the_list(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data", test=False)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        build_splits(voc, sbd, tmp_path / "splits", dict(SETTINGS, test_split=True))
    assert not (tmp_path / "splits" / "stats.json").exists()


def test_malformed_xml_names_file(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    bad = voc / "Annotations" / "2010_000005.xml"
    bad.write_text("<annotation><object><name>boat</name>")
    with pytest.raises(ValueError, match="2010_000005.xml.*malformed"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)
    assert not (tmp_path / "splits" / "labels.csv").exists()


def test_unknown_class_names_file_and_class(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    (voc / "Annotations" / "2008_000002.xml").write_text(xml_text(["dog", "unicorn"]))
    with pytest.raises(ValueError, match="2008_000002.xml.*'unicorn'"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)


def test_missing_xml_names_file(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    (voc / "Annotations" / "000123.xml").unlink()
    with pytest.raises(ValueError, match="000123.xml"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)


@pytest.mark.parametrize("image_id", ["2011_000001", "2008_000100"])  # SBD-only, test-only
def test_missing_jpeg_names_file(tmp_path, image_id):
    voc, sbd = make_dataset(tmp_path / "data")
    (voc / "JPEGImages" / f"{image_id}.jpg").unlink()
    with pytest.raises(ValueError, match=f"JPEGImages/{image_id}.jpg"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)


def test_missing_segmentation_png_names_file(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    (voc / "SegmentationClass" / "2009_000010.png").unlink()
    with pytest.raises(ValueError, match=r"SegmentationClass/2009_000010.png.*val.txt"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)


def test_missing_sbd_list_names_file(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    (sbd / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="benchmark_RELEASE/dataset/val.txt"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)


def test_unknown_expected_split_names_key(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="expected_counts.*'trainaug'"):
        build_splits(voc, sbd, tmp_path / "splits", {"expected_counts": {"trainaug": 1}})

"""Split lists, image labels and stats on a tiny VOCdevkit + SBD built in tmp_path."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from csd.data.splits import build_splits
from csd.data.voc import CLASSES, load_labels, read_ids

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


def noisy_jpeg(path, size=(64, 48), seed=0):
    """A JPEG whose entropy-coded data is long enough to damage in the middle."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        path, quality=90)
    return path.read_bytes()


def split_files(out):
    return sorted(p.name for p in out.glob("*")) if out.exists() else []


@pytest.mark.parametrize("name", ["train", "val"])
def test_empty_list_names_the_list(tmp_path, name):
    voc, sbd = make_dataset(tmp_path / "data")
    (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n")
    with pytest.raises(ValueError, match=rf"{name}.txt.*no images"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)
    assert split_files(tmp_path / "splits") == []


def test_empty_train_aug_names_the_split(tmp_path):
    voc, _ = make_dataset(tmp_path / "data")
    # every VOC train id is also a val id: nothing is left to train on
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(VOC_VAL) + "\n")
    with pytest.raises(ValueError, match="train_aug.*no images"):
        build_splits(voc, None, tmp_path / "splits", SETTINGS)


def test_empty_val_or_test_only_when_allowed(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "val.txt").write_text("")
    (lists / "test.txt").write_text("")
    with pytest.raises(ValueError, match="test.txt.*no images"):
        build_splits(voc, sbd, tmp_path / "a", dict(SETTINGS, test_split=True,
                                                    allow_empty=["val"]))
    stats = build_splits(voc, sbd, tmp_path / "b", dict(SETTINGS, test_split=True,
                                                        allow_empty=["val", "test"]))
    assert stats["counts"]["val"] == 0 and stats["counts"]["test"] == 0
    # an unused empty test list (toyvoc with n_test 0) is no problem
    stats = build_splits(voc, sbd, tmp_path / "c", dict(SETTINGS, allow_empty=["val"]))
    assert stats["counts"]["test"] == 0


def test_id_with_a_space_names_list_and_line(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    (sbd / "train.txt").write_text("2010_000005\n\n2007 000032\n")
    with pytest.raises(ValueError, match=r"dataset/train.txt, line 3: '2007 000032'"):
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)
    assert split_files(tmp_path / "splits") == []


def test_damaged_images_are_named_one_per_line(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    jpegs, pngs = voc / "JPEGImages", voc / "SegmentationClass"
    good = noisy_jpeg(jpegs / "2010_000005.jpg")
    (jpegs / "2010_000005.jpg").write_bytes(good[: len(good) // 2])  # truncated
    data = noisy_jpeg(jpegs / "2011_000001.jpg", seed=1)
    middle = len(data) // 2  # 64 bytes zeroed inside the entropy-coded data
    (jpegs / "2011_000001.jpg").write_bytes(data[:middle] + bytes(64) + data[middle + 64:])
    (pngs / "2007_000039.png").write_bytes(b"")  # zero-byte ground truth
    Image.new("P", (9, 6), 0).save(pngs / "2007_000033.png")  # its JPEG is 8 x 6
    png = (pngs / "2009_000010.png").read_bytes()
    (pngs / "2009_000010.png").write_bytes(png[: len(png) // 2])  # truncated PNG
    with pytest.raises(ValueError) as err:  # two threads: warnings still find their image
        build_splits(voc, sbd, tmp_path / "splits", dict(SETTINGS, workers=2))
    message = str(err.value)
    lines_ = message.splitlines()
    assert "5 problems" in lines_[0]
    for expected in ["JPEGImages/2010_000005.jpg: ", "JPEGImages/2011_000001.jpg: corrupt",
                     "SegmentationClass/2007_000039.png: ",
                     "SegmentationClass/2007_000033.png: 9 x 6, its image is 8 x 6",
                     "SegmentationClass/2009_000010.png: "]:
        assert sum(expected in line for line in lines_) == 1, (expected, message)
    assert split_files(tmp_path / "splits") == []


def test_many_problems_are_counted_after_the_first_few(tmp_path):
    voc, sbd = make_dataset(tmp_path / "data")
    for image_id in [*OBJECTS, *VOC_TEST]:
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError) as err:
        build_splits(voc, sbd, tmp_path / "splits", SETTINGS)
    lines_ = str(err.value).splitlines()
    assert "9 problems" in lines_[0]  # 8 labelled images + the test image
    assert lines_[-1].strip() == "... and 4 more" and len(lines_) == 1 + 5 + 1


def test_a_stage_refuses_an_empty_split_naming_it(tmp_path):
    # what every stage script reads its ids with: an empty split never reaches a library
    empty = tmp_path / "splits" / "train.txt"
    empty.parent.mkdir()
    empty.write_text("")
    with pytest.raises(ValueError, match=r"splits/train.txt: the split lists no images"):
        read_ids(empty)
    assert read_ids(empty, allow_empty=True) == []
    (tmp_path / "two.txt").write_text("2007_000032\n2007_000033 x\n")
    with pytest.raises(ValueError, match=r"two.txt, line 2: '2007_000033 x' is not one"):
        read_ids(tmp_path / "two.txt")

"""Image lists and image-level labels of PASCAL VOC 2012 (+ SBD for train_aug), built only
from a dataset that every later stage can read: lists, files and images are checked first."""

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from csd.data.imagecheck import check_jpegs, check_label_pngs
from csd.data.voc import CLASSES, parse_ids, write_labels_csv
from csd.runtime.io import save_json, save_text

log = logging.getLogger(__name__)

CLASS_INDEX = {name: index for index, name in enumerate(CLASSES)}
SPLITS = ("train", "val", "train_aug", "test")
MAY_BE_EMPTY = ("val", "test")  # with dataset.allow_empty; nothing trains without the others
SHOWN_PROBLEMS = 5


class DatasetError(ValueError):
    """Every problem found in a dataset, one line each (the first few, then a count)."""

    def __init__(self, problems):
        lines = [f"the dataset has {len(problems)} problem{'s' * (len(problems) != 1)}; "
                 "no splits written:"]
        lines += [f"  {problem}" for problem in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
        super().__init__("\n".join(lines))


def _read_list(path, problems):
    """Ids of one list file, as a set (duplicates dropped, with a warning); its bad lines
    are added to `problems`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist")
    ids, bad_lines = parse_ids(path)
    problems += bad_lines
    unique = set(ids)
    if len(unique) != len(ids):
        log.warning("%s lists %d ids more than once; using each once",
                    path, len(ids) - len(unique))
    return unique


def _missing_files(ids, folder, suffix, list_name):
    """One problem per listed id without its `folder/<id><suffix>`."""
    return [f"{folder / f'{image_id}{suffix}'} is missing (listed in {list_name})"
            for image_id in sorted(ids) if not (folder / f"{image_id}{suffix}").is_file()]


def image_classes(xml_path):
    """Class indices named by the `<object><name>` tags of one VOC annotation XML."""
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise ValueError(f"{xml_path}: annotation XML is missing")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml_path}: malformed XML ({err})") from err
    classes = set()
    # Only direct <object> children: person <part>s carry <name>s (head, hand, foot) too.
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASS_INDEX:
            raise ValueError(f"{xml_path}: unknown class name {name!r}")
        classes.add(CLASS_INDEX[name])
    return classes


def build_splits(voc_root, sbd_root, out_dir, settings):
    """Write train/val/train_aug(/test) lists, labels.csv and stats.json into `out_dir`.

    train_aug = (VOC train | SBD train | SBD val) - VOC val, the usual 10,582 images.
    `sbd_root` None: train_aug is VOC train alone (a warning says so).
    """
    voc_root, out_dir = Path(voc_root), Path(out_dir)
    expected = settings["expected_counts"]
    for name in expected or {}:
        if name not in SPLITS:
            raise ValueError(f"settings expected_counts: unknown split {name!r} "
                             f"(known: {', '.join(SPLITS)})")
    lists = voc_root / "ImageSets" / "Segmentation"
    problems = []
    splits = {name: _read_list(lists / f"{name}.txt", problems) for name in ("train", "val")}
    sources = {"voc_train": len(splits["train"]), "voc_val": len(splits["val"])}
    train_aug = set(splits["train"])
    if sbd_root is None:
        log.warning("no SBD given: train_aug is VOC train alone (%d images, not 10,582)",
                    len(train_aug))
    else:
        for name in ("train", "val"):
            sbd_ids = _read_list(Path(sbd_root) / f"{name}.txt", problems)
            sources[f"sbd_{name}"] = len(sbd_ids)
            train_aug |= sbd_ids
    # VOC val is the evaluation set: no training image may come from it.
    splits["train_aug"] = train_aug - splits["val"]
    if (lists / "test.txt").is_file():
        splits["test"] = _read_list(lists / "test.txt", problems)
    elif settings.get("test_split"):
        raise FileNotFoundError(f"{lists / 'test.txt'} not found, but the configuration asks "
                                "for the test split (dataset.voc.test_split / toyvoc n_test)")

    origin = {name: lists / f"{name}.txt" for name in splits}
    origin["train_aug"] = "train_aug (VOC train + SBD train + SBD val - VOC val)"
    allowed = set(settings.get("allow_empty") or ())
    needed = ["train", "val", "train_aug"] + ["test"] * bool(settings.get("test_split"))
    for name in needed:
        if not splits[name] and name not in allowed:
            hint = " (dataset.allow_empty allows that)" if name in MAY_BE_EMPTY else ""
            problems.append(f"{origin[name]}: the split lists no images{hint}")
    jpeg_dir, png_dir = voc_root / "JPEGImages", voc_root / "SegmentationClass"
    seen = set()  # train is in train_aug too: name each missing image once
    for name, ids in splits.items():
        problems += _missing_files(ids - seen, jpeg_dir, ".jpg", origin[name])
        seen |= ids
    for name in ("train", "val"):  # the ground truth of seed/mask/segmentation mIoU
        problems += _missing_files(splits[name], png_dir, ".png", origin[name])

    labelled = splits["train"] | splits["val"] | splits["train_aug"]
    labels = {}
    for image_id in sorted(labelled):
        try:
            labels[image_id] = image_classes(voc_root / "Annotations" / f"{image_id}.xml")
        except ValueError as err:
            problems.append(str(err))
    problems += _image_problems(splits, jpeg_dir, png_dir, settings.get("workers", 1))
    if problems:
        raise DatasetError(problems)
    unlabelled = sorted(i for i, classes in labels.items() if not classes)
    if unlabelled:
        log.warning("%d images have no <object> in their XML, e.g. %s",
                    len(unlabelled), unlabelled[0])

    counts = {name: len(ids) for name, ids in splits.items()}
    mismatches = {}
    for name, count in (expected or {}).items():
        if counts.get(name) != count:
            mismatches[name] = {"expected": count, "actual": counts.get(name)}
            log.warning("split %s has %s images, expected %d (fine for a subset, "
                        "wrong for full VOC 2012)", name, counts.get(name), count)

    aug_sizes = [len(labels[i]) for i in splits["train_aug"]]
    n_aug = max(len(aug_sizes), 1)
    stats = {
        "counts": counts,
        "sources": sources,
        "sbd": sbd_root is not None,
        "train_aug": {
            "single_label": sum(s == 1 for s in aug_sizes) / n_aug,
            "multi_label": sum(s > 1 for s in aug_sizes) / n_aug,
            "single_label_images": sum(s == 1 for s in aug_sizes),
            "multi_label_images": sum(s > 1 for s in aug_sizes),
            "no_label_images": sum(s == 0 for s in aug_sizes),
        },
        "class_images": {
            name: {c: sum(CLASS_INDEX[c] in labels[i] for i in splits[name]) for c in CLASSES}
            for name in ("train", "val", "train_aug")
        },
        "expected_counts": expected,
        "count_mismatches": mismatches,
    }

    for name, ids in splits.items():
        save_text(out_dir / f"{name}.txt", "".join(f"{i}\n" for i in sorted(ids)))
    write_labels_csv(out_dir / "labels.csv", labels)
    save_json(out_dir / "stats.json", stats)
    return stats


def _image_problems(splits, jpeg_dir, png_dir, workers):
    """Decode every listed JPEG and every train/val ground-truth PNG (which must have its
    image's size); the missing ones are already reported."""
    ids = sorted(set().union(*splits.values()))
    jpegs = [jpeg_dir / f"{i}.jpg" for i in ids if (jpeg_dir / f"{i}.jpg").is_file()]
    bad_jpegs, sizes = check_jpegs(jpegs, workers)
    truth = sorted(splits["train"] | splits["val"])
    expected = {png_dir / f"{i}.png": sizes.get(jpeg_dir / f"{i}.jpg") for i in truth
                if (png_dir / f"{i}.png").is_file()}
    bad_pngs = check_label_pngs(expected, workers)
    return list(bad_jpegs.values()) + list(bad_pngs.values())

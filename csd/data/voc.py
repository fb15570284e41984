"""PASCAL VOC conventions and the one dataset class used for real and synthetic data."""

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from csd.runtime.io import atomic_path

CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_CLASSES = len(CLASSES)  # foreground classes; label maps add 0 = background
IGNORE = 255


def palette():
    """The VOC colour map as a flat list of 768 ints (index -> RGB), 255 = void colour."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal.flatten().tolist()


def parse_ids(path):
    """(ids, problems) of a split list: one id per non-blank line, as strings (VOC ids like
    2007_000032 are not numbers). A line that is not a single word, or an id that could
    leave the dataset tree (ids become file names), is a problem naming the file and line."""
    ids, problems = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) > 1 or "/" in words[0] or "\\" in words[0] or words[0] in (".", ".."):
            problems.append(f"{path}, line {number}: {line.strip()!r} is not one image id")
        else:
            ids.append(words[0])
    return ids, problems


def read_ids(path, allow_empty=False):
    """Image ids of a split list. A bad line, or an empty list unless `allow_empty` (a val or
    test split the configuration allows to be empty), is an error naming the list: a stage
    never runs on nothing."""
    ids, problems = parse_ids(path)
    if problems:
        raise ValueError("\n".join(problems))
    if not ids and not allow_empty:
        raise ValueError(f"{path}: the split lists no images")
    return ids


def write_labels_csv(path, labels):
    """labels: {image_id: iterable of class indices} -> wide 0/1 CSV, one column per class."""
    from csd.runtime.io import atomic_path

    ids = sorted(labels)
    table = np.zeros((len(ids), NUM_CLASSES), dtype=np.int64)
    for row, image_id in enumerate(ids):
        table[row, sorted(labels[image_id])] = 1
    frame = pd.DataFrame(table, columns=CLASSES)
    frame.insert(0, "image_id", ids)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def load_labels(path):
    """Wide label CSV -> {image_id: float32 multi-hot vector of length 20}."""
    frame = pd.read_csv(path, dtype={"image_id": str})
    missing = [c for c in ("image_id",) + CLASSES if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: label CSV lacks columns {missing}")
    values = frame[list(CLASSES)].to_numpy(dtype=np.float32)
    return dict(zip(frame["image_id"], values))


def load_image(path):
    return np.array(Image.open(path).convert("RGB"))  # writable: torch.from_numpy needs it


def load_label_png(path):
    """A palette PNG -> uint8 index map (0 bg, 1..20 classes, 255 void)."""
    return np.asarray(Image.open(path))


class VOCDataset:
    """Images of a VOCdevkit tree (`.../VOC2012`), with image labels and/or label maps.

    `mask_dir` defaults to the tree's SegmentationClass; pass a pseudo-mask directory to
    train a segmenter on pseudo masks. `transform(sample) -> sample` sees a dict with
    `id`, `image` (HxWx3 uint8), and `label` (20 floats) / `mask` (HxW uint8) when given.
    A map-style dataset for torch's DataLoader, without torch's base class, so the jobs that
    only read VOC files (evaluations, splits) never import torch.
    """

    def __init__(self, voc_root, ids, labels=None, with_mask=False, mask_dir=None,
                 transform=None):
        self.root = Path(voc_root)
        self.ids = list(ids)
        self.labels = labels
        self.mask_dir = Path(mask_dir) if mask_dir else self.root / "SegmentationClass"
        self.with_mask = with_mask or mask_dir is not None
        self.transform = transform

    def __len__(self):
        return len(self.ids)

    def image_path(self, image_id):
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id):
        return self.mask_dir / f"{image_id}.png"

    def require_masks(self, what):
        """Fail before training, naming the directory and some ids, if label maps are missing."""
        missing = [i for i in self.ids if not self.mask_path(i).exists()]
        if missing:
            raise FileNotFoundError(f"{self.mask_dir}: no {what} for {len(missing)} ids, "
                                    f"e.g. {missing[:3]}")

    def __getitem__(self, index):
        image_id = self.ids[index]
        sample = {"id": image_id, "image": load_image(self.image_path(image_id))}
        if self.labels is not None:
            sample["label"] = self.labels[image_id]
        if self.with_mask:
            sample["mask"] = load_label_png(self.mask_path(image_id))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


# The layout the VOC evaluation server takes for test-set predictions.
ARCHIVE_DIR = "results/VOC2012/Segmentation/comp6_test_cls"


def pack_test_archive(pred_dir, ids, archive_path):
    """Pack pred_dir/<id>.png as ARCHIVE_DIR/<id>.png into a tar.gz (the VOC server's
    layout); returns the member names."""
    pred_dir = Path(pred_dir)
    paths = [pred_dir / f"{i}.png" for i in map(str, ids)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} predictions missing, e.g. {missing[:3]}")
    names = [f"{ARCHIVE_DIR}/{p.name}" for p in paths]
    with atomic_path(archive_path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for path, name in zip(paths, names):
            tar.add(path, arcname=name)
    return names


def load_labels_for(labels_csv, ids):
    """The image labels of labels_csv; a KeyError names the ids it lacks."""
    labels = load_labels(labels_csv)
    missing = [i for i in ids if i not in labels]
    if missing:
        raise KeyError(f"{labels_csv}: no labels for {len(missing)} image ids, "
                       f"e.g. {missing[:3]}")
    return labels

"""CSD's sampling: the (target, source) pairs and the pasting.

The source domain is the single-label images, grouped by class; the target domain is any
train image (or, as an ablation, only the multi-label ones). Per sample: the main image x;
a target T with its background mask (round-0 pseudo label 0) and a source S of a class c_s
drawn from the co-occurrence statistics of T's classes, with M_s = (pseudo label ==
c_s + 1). X_fg = M_s*S + (1-M_s)*T (labels y_T or c_s) and X_bg = M_bg*S + (1-M_bg)*T with
M_bg = (1-M_s)*bg(T) (labels y_T) paste at the same pixel position, so the CAM cells of S
and of the pasted image line up.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from csd.data.voc import NUM_CLASSES, VOCDataset
from csd.runtime.config import choice

VOC_TRAIN_AUG = 10582  # the images the author's co-occurrence counts (and temperature) come from


def cooccurrence(label_vectors):
    """Co-occurrence counts N [20, 20], initialised to 1: N[c, c] += 1 for each
    single-label image of class c, N[i, j] += 1 (i != j) for each image holding i and j."""
    counts = np.ones((NUM_CLASSES, NUM_CLASSES))
    for vector in label_vectors:
        classes = np.flatnonzero(np.asarray(vector) > 0)
        if len(classes) == 1:
            counts[classes[0], classes[0]] += 1
        else:
            counts[np.ix_(classes, classes)] += 1 - np.eye(len(classes))
    return counts


def count_temperature(temperature, units, n_images):
    """The co-occurrence temperature in counts of this dataset's N.

    "count": as given (the author's: 10, on VOC train_aug's 10,582 images, where pairs count
    in the hundreds and P is nearly one-hot; the same 10 on a few hundred images makes P
    nearly uniform). "per_image": given for VOC train_aug's size and scaled to this
    dataset's, temperature * n_images / 10582, so that N / temperature is the same share of
    the images on any dataset and equal label statistics give equal draws."""
    if choice(units, "csd.temperature_units", ("per_image", "count")) == "count":
        return float(temperature)
    return temperature * n_images / VOC_TRAIN_AUG


def transition(counts, temperature):
    """P = row-softmax(N / temperature), temperature in counts."""
    logits = counts / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def source_probs(transition_p, target_label, available):
    """p(c_s) ~ sum over the target's classes k of P[k, c_s], over classes with a source."""
    classes = np.flatnonzero(np.asarray(target_label) > 0)
    p = transition_p[classes].sum(axis=0) * np.asarray(available, dtype=float)
    if p.sum() <= 0:
        raise ValueError("no source class available for a target with classes "
                         f"{classes.tolist()}")
    return p / p.sum()


class PastePairs(Dataset):
    """The main sample plus a (target, source) pair for CSD, drawn with torch's RNG (so the
    checkpointed RNG state and the per-epoch generators make the draws reproducible).

    Yields the main sample's `image`, `label`, and `target_image`, `target_label`,
    `target_bg` (float, 1 = pseudo background), `source_image`, `source_fg` (float,
    1 = pseudo label c_s + 1), `source_class`, and what the draw was for the history:
    `source_cooccurs` (1 when some other class of T shares a training image with c_s) and
    `source_in_target` (1 when T holds c_s already). Target and source get independent
    augmentations of the same crop size; pasting keeps pixel positions.
    """

    def __init__(self, voc_root, ids, labels, mask_dir, transform, target="all",
                 temperature=10.0, temperature_units="per_image"):
        choice(target, "csd.target", ("all", "multi_label"))
        self.main = VOCDataset(voc_root, ids, labels=labels, transform=transform)
        self.pairs = VOCDataset(voc_root, ids, labels=labels, mask_dir=mask_dir,
                                transform=transform)
        self.ids = self.main.ids
        label_matrix = np.stack([labels[i] for i in self.ids])
        n_labels = (label_matrix > 0).sum(axis=1)
        self.sources = [np.flatnonzero((n_labels == 1) & (label_matrix[:, c] > 0))
                        for c in range(NUM_CLASSES)]
        self.available = np.array([len(s) > 0 for s in self.sources])
        if not self.available.any():
            raise ValueError("CSD needs single-label images (the source domain); the "
                             "training list has none")
        self.targets = (np.flatnonzero(n_labels > 1) if target == "multi_label"
                        else np.arange(len(self.ids)))
        if len(self.targets) == 0:
            raise ValueError("settings 'csd.target: multi_label' but the training list has "
                             "no multi-label image")
        self.counts = cooccurrence(label_matrix)
        self.temperature = count_temperature(temperature, temperature_units, len(self.ids))
        self.transition = transition(self.counts, self.temperature)
        self.pairs.require_masks("round-0 pseudo mask")

    def __len__(self):
        return len(self.ids)

    @staticmethod
    def _draw(n, p=None):
        if p is None:
            return int(torch.randint(n, ()).item())
        return int(torch.multinomial(torch.as_tensor(p, dtype=torch.float64), 1).item())

    def __getitem__(self, index):
        sample = self.main[index]
        target = self.pairs[int(self.targets[self._draw(len(self.targets))])]
        probs = source_probs(self.transition, target["label"], self.available)
        source_class = self._draw(NUM_CLASSES, probs)
        pool = self.sources[source_class]
        source = self.pairs[int(pool[self._draw(len(pool))])]
        classes = np.flatnonzero(np.asarray(target["label"]) > 0)
        others = classes[classes != source_class]
        return {
            "image": sample["image"], "label": sample["label"],
            "target_image": target["image"], "target_label": target["label"],
            "target_bg": (target["mask"] == 0).float(),
            "source_image": source["image"],
            "source_fg": (source["mask"] == source_class + 1).float(),
            "source_class": source_class,
            "source_cooccurs": float((self.counts[others, source_class] > 1).any()),
            "source_in_target": float(source_class in classes),
        }


def paste(source, target, mask):
    """mask*source + (1-mask)*target, mask [B, H, W] in {0, 1}."""
    mask = mask[:, None]
    return mask * source + (1 - mask) * target


def pasted_labels(batch):
    """Labels of X_fg (T's and c_s) and of X_bg (T's)."""
    y_t = batch["target_label"]
    return torch.maximum(y_t, F.one_hot(batch["source_class"], NUM_CLASSES).to(y_t.dtype)), y_t

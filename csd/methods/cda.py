"""CDA (context decoupling augmentation), the copy-paste baseline CSD is compared with.

Instances come from single-class images whose round-0 pseudo mask covers `area_range` of
the image; a training image gets an instance of a class it does not hold, rotated by up to
`rotation` degrees, scaled so that its longer side is a `size_range` fraction of the crop,
at a random position. The first `paste_fraction` of each batch is pasted; only the
classification loss is used (the pasted class joins the image's labels).
"""

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from csd.cam.train_cam import CAM_CLASSIFIER
from csd.data.transforms import MEAN, STD
from csd.data.voc import NUM_CLASSES, VOCDataset, load_image, load_label_png
from csd.runtime.config import section


def instance_pool(ids, labels, mask_dir, area_range):
    """[(image_id, class)] of single-class images whose pseudo mask of that class covers a
    fraction of the image within area_range (CDA: 10-70%)."""
    pool = []
    for image_id in ids:
        classes = np.flatnonzero(labels[image_id] > 0)
        if len(classes) != 1:
            continue
        mask = load_label_png(f"{mask_dir}/{image_id}.png")
        area = float((mask == classes[0] + 1).mean())
        if area > 0 and area_range[0] <= area <= area_range[1]:
            pool.append((image_id, int(classes[0])))
    return pool


def uniform(lo, hi):
    return lo + (hi - lo) * torch.rand(()).item()


def make_instance(image, mask, cls, crop, settings):
    """Cut the class's pixels out of a uint8 image, rotate and scale them, place them on a
    crop x crop canvas. Returns (normalised image [3, crop, crop], mask [crop, crop])."""
    ys, xs = np.nonzero(mask == cls + 1)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    piece = torch.from_numpy(np.ascontiguousarray(image[top:bottom, left:right])).permute(2, 0, 1)
    keep = torch.from_numpy((mask[top:bottom, left:right] == cls + 1)
                            .astype(np.uint8))[None]
    angle = uniform(-settings["rotation"], settings["rotation"])
    piece = TF.rotate(piece, angle, interpolation=v2.InterpolationMode.BILINEAR, expand=True)
    keep = TF.rotate(keep, angle, interpolation=v2.InterpolationMode.NEAREST, expand=True)
    side = uniform(*settings["size_range"]) * crop
    factor = side / max(piece.shape[1:])
    size = [max(1, round(piece.shape[1] * factor)), max(1, round(piece.shape[2] * factor))]
    piece = TF.resize(piece, size, antialias=True)
    keep = TF.resize(keep, size, interpolation=v2.InterpolationMode.NEAREST)
    size = [min(s, crop) for s in size]
    piece, keep = piece[:, :size[0], :size[1]], keep[:, :size[0], :size[1]]
    y0 = int(torch.randint(crop - size[0] + 1, ()).item())
    x0 = int(torch.randint(crop - size[1] + 1, ()).item())
    canvas = torch.zeros(3, crop, crop)
    canvas_mask = torch.zeros(crop, crop)
    keep = keep[0].float()
    canvas[:, y0:y0 + size[0], x0:x0 + size[1]] = TF.normalize(piece.float() / 255, MEAN,
                                                               STD) * keep
    canvas_mask[y0:y0 + size[0], x0:x0 + size[1]] = keep
    return canvas, canvas_mask


class WithInstances(Dataset):
    """The training sample plus an instance of a class it does not hold (`paste_image`,
    `paste_mask`, `paste_class`), drawn with torch's RNG."""

    def __init__(self, voc_root, ids, labels, mask_dir, transform, crop, settings):
        self.base = VOCDataset(voc_root, ids, labels=labels, transform=transform)
        # The same tree with the round-0 masks: paths of instances (no per-sample mask load).
        self.instances = VOCDataset(voc_root, ids, mask_dir=mask_dir)
        self.instances.require_masks("round-0 pseudo mask")
        self.ids = self.base.ids
        self.crop, self.settings = crop, settings
        pool = instance_pool(self.ids, labels, mask_dir, settings["area_range"])
        self.by_class = [[i for i, c in pool if c == cls] for cls in range(NUM_CLASSES)]
        print(f"CDA instance pool: {len(pool)} instances, per class "
              f"{[len(b) for b in self.by_class]}", file=sys.stderr)
        if not pool:  # rough round-0 masks (a smoke-test config): train, but say so loudly
            print(f"WARNING: CDA: no single-class pseudo mask in {mask_dir} covers "
                  f"{settings['area_range']} of its image; nothing will be pasted",
                  file=sys.stderr)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        sample = self.base[index]
        absent = [c for c in range(NUM_CLASSES)
                  if self.by_class[c] and sample["label"][c] == 0]
        if not absent:  # the image holds every class that has instances: paste nothing
            sample.update(paste_image=torch.zeros(3, self.crop, self.crop),
                          paste_mask=torch.zeros(self.crop, self.crop), paste_class=-1)
            return sample
        cls = absent[int(torch.randint(len(absent), ()).item())]
        choices = self.by_class[cls]
        image_id = choices[int(torch.randint(len(choices), ()).item())]
        image = load_image(self.instances.image_path(image_id))
        mask = load_label_png(self.instances.mask_path(image_id))
        paste_image, paste_mask = make_instance(image, mask, cls, self.crop, self.settings)
        sample.update(paste_image=paste_image, paste_mask=paste_mask, paste_class=cls)
        return sample


def paste_batch(batch, fraction):
    """Paste the instances into the first `fraction` of the batch; returns (images, labels)."""
    images, labels = batch["image"].clone(), batch["label"].clone()
    count = math.floor(len(images) * fraction + 0.5)
    for i in range(count):
        cls = int(batch["paste_class"][i])
        if cls < 0:
            continue
        mask = batch["paste_mask"][i][None]
        images[i] = mask * batch["paste_image"][i] + (1 - mask) * images[i]
        labels[i, cls] = 1.0
    return images, labels


def train_cam_cda(voc_root, ids, labels_csv, round0_mask_dir, model_out, history_out,
                  settings, device="cpu", precision="fp32", classifier=CAM_CLASSIFIER):
    """train_cam with CDA's copy-paste (settings = train_cam's plus a `cda` section);
    `classifier` (csd.methods.classifier.Classifier): a ResNet CAMNet's, whose forward
    gives the logits."""
    ids, device, labels, transform = classifier.setup(settings, ids, labels_csv, device, "cda")
    cda = settings["cda"]
    section(cda, "cda")
    dataset = WithInstances(voc_root, ids, labels, Path(round0_mask_dir), transform,
                            settings["crop"], cda)
    model = classifier.build(settings).to(device)
    criterion = nn.MultiLabelSoftMarginLoss()

    def step(model, batch, epoch):
        images, targets = paste_batch(batch, cda["paste_fraction"])
        return criterion(model(images.to(device)).float(), targets.to(device)), {}

    return classifier.fit(model, dataset, step, settings, model_out, history_out, device,
                          precision=precision)

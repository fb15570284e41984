"""Training augmentations on sample dicts, built on torchvision.transforms.v2.

v2 applies one set of random parameters to every tv_tensor in a call, so an image and its
label map (or CSD's source and target images) always get the same resize, flip and crop.
"""

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from csd.data.voc import IGNORE, VOCDataset

# ImageNet normalisation, which every backbone (and its pretrained weights) expects.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def pil_nearest_index(n_in, n_out):
    """The source pixel of each of n_out pixels in PIL's nearest resize of a side of n_in:
    floor of the centre's position (i + 1/2) * n_in / n_out, accumulated step by step in
    double precision as Pillow does (so on an exact tie it may read the pixel before)."""
    steps = np.full(n_out, n_in / n_out)
    steps[0] /= 2
    return torch.from_numpy(np.floor(np.cumsum(steps)).astype(np.int64)).clamp_(max=n_in - 1)


class RandomResize(v2.Transform):
    """Resize by a random factor: mode "long" draws the long side in [lo, hi] pixels (IRN's
    train_cam), mode "scale" draws a scale factor in [lo, hi] (IRN's train_irn, DeepLab).

    As IRN (PIL): images bicubic, with PIL's antialiasing when shrinking (torchvision's uint8
    kernel is within 2 grey levels of PIL); label maps nearest, reading PIL's pixel.
    """

    def __init__(self, lo, hi, mode):
        super().__init__()
        if mode not in ("long", "scale"):
            raise ValueError(f"RandomResize mode must be 'long' or 'scale', got {mode!r}")
        self.lo, self.hi, self.mode = lo, hi, mode

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        draw = self.lo + (self.hi - self.lo) * torch.rand(()).item()
        factor = draw / max(h, w) if self.mode == "long" else draw
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.Mask):  # label maps stay integral
            (h, w), (out_h, out_w) = inpt.shape[-2:], params["size"]
            rows = pil_nearest_index(h, out_h).to(inpt.device)
            cols = pil_nearest_index(w, out_w).to(inpt.device)
            return tv_tensors.wrap(inpt.index_select(-2, rows).index_select(-1, cols),
                                   like=inpt)
        return self._call_kernel(F.resize, inpt, params["size"],
                                 interpolation=v2.InterpolationMode.BICUBIC, antialias=True)


def to_tv(sample):
    """numpy HWC image / HW mask -> tv_tensors, so v2 transforms know what each one is."""
    out = dict(sample)
    for key, value in sample.items():
        if key.endswith("image"):
            out[key] = tv_tensors.Image(torch.from_numpy(np.array(value))
                                        .permute(2, 0, 1))
        elif key.endswith("mask"):
            out[key] = tv_tensors.Mask(torch.from_numpy(np.array(value)))
    return out


def normalize_and_crop(crop):
    """Normalise to ImageNet statistics, then crop; padding is 0 (= the mean) for images and
    IGNORE for masks, as in IRN."""
    steps = [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
             v2.Normalize(MEAN, STD)]
    if crop:
        steps.append(v2.RandomCrop(crop, pad_if_needed=True,
                                   fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}))
    return steps


def train_transform(resize_mode, resize_range, crop, flip=True):
    """resize_mode "long"/"scale" with resize_range [lo, hi], horizontal flip, normalise, crop."""
    steps = [to_tv, RandomResize(resize_range[0], resize_range[1], resize_mode)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += normalize_and_crop(crop)
    steps.append(_plain)
    return v2.Compose(steps)


def mask_training_set(voc_root, ids, mask_dir, scale_range, crop, flip, what):
    """(image, label map mask_dir/<id>.png) pairs, rescaled by a factor in scale_range,
    flipped and cropped (masks padded with IGNORE): IRN's and DeepLab's training data.
    Missing maps stop it with an error calling them `what`."""
    dataset = VOCDataset(voc_root, ids, mask_dir=mask_dir,
                         transform=train_transform("scale", scale_range, crop, flip=flip))
    dataset.require_masks(what)
    return dataset


def eval_transform():
    """Normalisation only (inference runs its own scales and flips)."""
    return v2.Compose([to_tv] + normalize_and_crop(None) + [_plain])


def _plain(sample):
    """tv_tensors -> plain tensors; masks as int64 for the losses."""
    out = dict(sample)
    for key, value in sample.items():
        if isinstance(value, tv_tensors.Mask):
            out[key] = value.as_subclass(torch.Tensor).long()
        elif isinstance(value, tv_tensors.Image):
            out[key] = value.as_subclass(torch.Tensor)
    return out


def rescale(image, scale):
    """IRN's pil_rescale: bicubic resize of a uint8 HxWx3 image to round(H*s) x round(W*s)."""
    h, w = image.shape[:2]
    size = (int(np.round(h * scale)), int(np.round(w * scale)))
    if size == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))

"""IRN stage `make_cam`: multi-scale, flip-averaged CAM seeds for the labelled classes.

One `<out_dir>/<id>.npz` per image with
  keys     int64 [K]              the image's labelled classes (0..19), ascending
  cam      float32 [K, h4, w4]    at stride 4: h4 = ceil(H/4), w4 = ceil(W/4)
  high_res float32 [K, H, W]      at full image size
each CAM divided by its own maximum (+1e-5, as IRN), so its peak is ~1.
Resizing follows IRN: each scale is a PIL bicubic rescale to round(H*s) x round(W*s); the
network's stride-16 CAM is resized bilinearly to the stride-4 size, and for `high_res` to
(ceil(H/16)*16, ceil(W/16)*16) and then cropped to H x W at the top left.
"""

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from csd.cam.train_cam import load_cam_net
from csd.data.transforms import eval_transform, rescale
from csd.data.voc import VOCDataset, load_labels_for
from csd.runtime.config import section
from csd.runtime.io import pending, save_npz
from csd.runtime.precision import autocast, inference_model

EPS = 1e-5  # IRN's guard against dividing a silent CAM by zero


@torch.inference_mode()
def multiscale_cam(model, image, keys, scales, flip, device="cpu", precision="fp32"):
    """Sum over scales (and flips) of the CAMs of classes `keys` of a uint8 HxWx3 image,
    the network under autocast at the resolved `precision`, the rest in float32.

    Returns (cam [K, ceil(H/4), ceil(W/4)], high_res [K, H, W]) as float32 tensors on the
    CPU, not normalised.
    """
    h, w = image.shape[:2]
    strided = (math.ceil(h / 4), math.ceil(w / 4))
    strided_up = (math.ceil(h / 16) * 16, math.ceil(w / 16) * 16)
    keys = torch.as_tensor(keys, dtype=torch.long, device=device)
    normalize = eval_transform()
    cam = torch.zeros((len(keys),) + strided, device=device)
    high_res = torch.zeros((len(keys), h, w), device=device)
    for scale in scales:
        x = normalize({"image": rescale(image, scale)})["image"].unsqueeze(0).to(device)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with autocast(precision, device):
            maps = model.cam(x)[:, keys].float()
        # One map per scale: the image's CAM plus its flip's CAM flipped back (IRN).
        maps = (maps[0] + maps[1].flip(-1) if flip else maps[0]).unsqueeze(0)
        cam += F.interpolate(maps, strided, mode="bilinear", align_corners=False)[0]
        high_res += F.interpolate(maps, strided_up, mode="bilinear",
                                  align_corners=False)[0, :, :h, :w]
    return cam.cpu(), high_res.cpu()


def normalize_max(maps):
    """Divide each class map by its own maximum (+EPS)."""
    return maps / (maps.amax(dim=(1, 2), keepdim=True) + EPS)


def make_cams(voc_root, ids, labels_csv, model_path, out_dir, settings, device="cpu",
              load=load_cam_net, precision="fp32"):
    """Write `<out_dir>/<id>.npz` for every id (ids already written are skipped).
    load(model_path, device) -> a model whose `cam(x)` gives [B, 20, h, w] maps (CAMNet, or
    csd.methods.mct.train_mct.load_mct's MCTformer); it runs at `precision`
    (csd.runtime.precision)."""
    section(settings, "make_cam")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = pending("make_cam", ids, [out_dir], ".npz")
    if not todo:
        return 0
    labels = load_labels_for(labels_csv, todo)
    dataset = VOCDataset(voc_root, todo, labels=labels)
    model, precision = inference_model("make_cam", load(model_path, device), precision,
                                       device)
    for index in tqdm(range(len(dataset)), file=sys.stderr, dynamic_ncols=True,
                      desc="make_cam"):
        sample = dataset[index]
        keys = np.flatnonzero(sample["label"] > 0).astype(np.int64)
        cam, high_res = multiscale_cam(model, sample["image"], keys, settings["scales"],
                                       settings["flip"], device, precision)
        save_npz(out_dir / f"{sample['id']}.npz", keys=keys,
                 cam=normalize_max(cam).numpy().astype(np.float32),
                 high_res=normalize_max(high_res).numpy().astype(np.float32))
    return len(todo)

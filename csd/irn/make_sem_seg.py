"""IRN stage `make_sem_seg_labels`: CAMs propagated by a random walk on IRN's boundaries.

Per image: the trained edge branch gives a boundary map at stride 4 (image and its flip,
IRN: sigmoid of the mean logit; by default, as IRN, on the image zero-padded to the training
crop, so that GroupNorm statistics and borders are those of training); the stride-4 CAMs
spread along affinities read from it (csd.irn.random_walk), and the result, upsampled, with a
constant background plane, becomes the pseudo mask. The caller shards the id list;
existing PNGs are skipped (resume).
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from csd.cam.backbone import normalize
from csd.data.voc import load_image, palette
from csd.irn.edge_net import load_irn
from csd.irn.random_walk import propagate, sem_seg_from_rw
from csd.runtime.config import section
from csd.runtime.io import pending, save_png
from csd.runtime.precision import autocast, inference_model
from csd.runtime.store import load_cam_pack


@torch.inference_mode()
def edge_map(model, image, device, pad_to=None, precision="fp32"):
    """HxWx3 uint8 -> boundary probabilities [ceil(H/4), ceil(W/4)] (image + flip, IRN).

    pad_to: IRN's inference padding. The normalised image and its flip are zero-padded
    (0 = the mean colour, the fill of training crops) on the bottom and right to pad_to x
    pad_to, and the logits are cut back to the image's grid before the flip is undone. A side
    already longer than pad_to is left as it is (IRN's negative padding would crop it and
    lose the CAMs' alignment; VOC images never exceed its 512 crop). None: no padding.
    The network runs under autocast at the resolved `precision`; the sigmoid in float32.
    """
    x = normalize(image.copy()).to(device)  # a writable copy: PIL arrays are read-only
    h, w = x.shape[-2:]
    x = torch.cat([x, x.flip(-1)])
    if pad_to:
        x = F.pad(x, (0, max(pad_to - w, 0), 0, max(pad_to - h, 0)))
    with autocast(precision, device):
        logits = model(x)[:, 0, :(h + 3) // 4, :(w + 3) // 4].float()
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)


def sem_seg_one(model, image, cam_pack, settings, device, precision="fp32"):
    """One image -> uint8 label map (0 background, keys + 1); the random walk in float32."""
    edge = edge_map(model, image, device, settings["crop"] if settings["pad_to_crop"] else None,
                    precision)
    cams = torch.as_tensor(np.asarray(cam_pack["cam"], dtype=np.float32), device=device)
    keys = np.asarray(cam_pack["keys"], dtype=np.int64)
    if cams.ndim != 3 or cams.shape[0] != len(keys) or cams.shape[1:] != edge.shape:
        raise ValueError(f"stride-4 CAMs {tuple(cams.shape)} with {len(keys)} keys do not "
                         f"fit the edge map {tuple(edge.shape)} of image {image.shape[:2]}")
    rw = propagate(cams, edge, settings["radius"], settings["beta"], settings["exp_times"])
    return sem_seg_from_rw(rw, keys, image.shape[:2], settings["bg_threshold"])


def make_sem_seg(voc_root, ids, cam_dirs, irn_model, out_dir, settings, device="cpu",
                 precision="fp32"):
    """Write out_dir/<id>.png (palette PNG) for each id; existing PNGs are skipped. The
    edge network runs at `precision` (csd.runtime.precision).

    Returns the number of PNGs written.
    """
    section(settings, "make_sem_seg")
    if settings["pad_to_crop"] and "crop" not in settings:
        raise KeyError("settings 'make_sem_seg' lacks keys ['crop'] (train_irn's, which "
                       "pad_to_crop pads to)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = pending("make_sem_seg", ids, [out_dir])
    if not todo:
        return 0
    device = torch.device(device)
    model, precision = inference_model("make_sem_seg", load_irn(irn_model, device), precision,
                                       device)
    for image_id in tqdm(todo, desc="make_sem_seg", unit="img", file=sys.stderr,
                         dynamic_ncols=True):
        image = load_image(Path(voc_root) / "JPEGImages" / f"{image_id}.jpg")
        cam_pack = load_cam_pack(cam_dirs, image_id, fields=("keys", "cam"))
        try:
            mask = sem_seg_one(model, image, cam_pack, settings, device, precision)
        except ValueError as err:
            raise ValueError(f"{image_id}: {err}") from None
        save_png(out_dir / f"{image_id}.png", mask, palette())
    return len(todo)

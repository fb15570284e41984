"""DeepLab stage `infer_seg`: multi-scale + flip inference, dense CRF, label PNGs (the test
split's archive for the VOC evaluation server: csd.data.voc.pack_test_archive).

Per image, each scale (and its flip, flipped back) gives softmax probabilities at full
size; the passes are fused by their per-pixel, per-class maximum and renormalised to sum
to 1 (the CRF reads them as probabilities). The caller shards the id list; images whose
two PNGs (raw and CRF) exist are skipped (resume).
"""

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from csd.cam.backbone import normalize
from csd.data.transforms import rescale
from csd.data.voc import VOCDataset, load_image, palette
from csd.runtime.config import section
from csd.runtime.io import pending, save_png
from csd.runtime.precision import autocast, inference_model
from csd.seg.crf import crf_inference
from csd.seg.deeplab import load_deeplab, predict_logits


@torch.inference_mode()
def segment(model, image, settings, device="cpu", precision="fp32"):
    """uint8 HxWx3 image -> fused class probabilities, float32 numpy [21, H, W] (the
    network under autocast at the resolved `precision`, the softmax in float32)."""
    if not settings["scales"]:
        raise ValueError("settings 'infer_seg.scales' is empty")
    size = image.shape[:2]
    fused = None
    for scale in settings["scales"]:
        x = normalize(np.array(rescale(image, scale))).to(device)  # copy: PIL's is read-only
        if settings["flip"]:
            x = torch.cat([x, x.flip(-1)])
        with autocast(precision, device):
            logits = predict_logits(model, x, size).float()
        probs = torch.softmax(logits, dim=1)
        if settings["flip"]:
            probs = torch.stack([probs[0], probs[1].flip(-1)])
        probs = probs.amax(dim=0)
        fused = probs if fused is None else torch.maximum(fused, probs)
    fused = fused / fused.sum(dim=0, keepdim=True)
    return fused.cpu().numpy().astype(np.float32)


def crf_refine(image, probs, crf_settings):
    """Dense CRF on fused probabilities [21, H, W] -> refined probabilities [21, H, W]."""
    section(crf_settings, "infer_seg.crf")
    return crf_inference(image, probs, crf_settings)


def infer_deeplab(voc_root, ids, model_path, out_dir, out_crf_dir, settings, device="cpu",
                  precision="fp32"):
    """Write palette PNGs (labels 0..20) out_dir/<id>.png (raw) and out_crf_dir/<id>.png
    (after the CRF) for each id, the network at `precision` (csd.runtime.precision); returns the
    number of images processed."""
    section(settings, "infer_seg")
    out_dir, out_crf_dir = Path(out_dir), Path(out_crf_dir)
    for directory in (out_dir, out_crf_dir):
        directory.mkdir(parents=True, exist_ok=True)  # an empty shard still has its outputs
    todo = pending("infer_seg", ids, [out_dir, out_crf_dir])
    if not todo:
        return 0
    device = torch.device(device)
    model, precision = inference_model("infer_seg", load_deeplab(model_path, device), precision,
                                       device)
    images = VOCDataset(voc_root, todo)
    for image_id in tqdm(todo, desc="infer_seg", unit="img", file=sys.stderr,
                         dynamic_ncols=True):
        image = load_image(images.image_path(image_id))
        probs = segment(model, image, settings, device, precision)
        save_png(out_dir / f"{image_id}.png", probs.argmax(axis=0), palette())
        refined = crf_refine(image, probs, settings["crf"])
        save_png(out_crf_dir / f"{image_id}.png", refined.argmax(axis=0), palette())
    return len(todo)

"""IRN's cam_to_ir_label: confident foreground / background labels from CAMs via dense CRF.

Each image gets a label PNG: 1..20 = confident class, 0 = confident background,
255 = unsure (between the two CAM thresholds). IRN trains its inter-pixel relations on it.
"""

from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from csd.data.voc import IGNORE, load_image, palette
from csd.runtime.io import pending, save_png
from csd.runtime.store import load_cam_pack
from csd.seg.crf import crf_inference_label


def _confident_labels(image, cams, labels, threshold, crf_settings):
    """argmax over [background plane = threshold, cams], CRF-refined, as VOC labels."""
    planes = np.concatenate([np.full((1,) + cams.shape[1:], threshold, cams.dtype), cams])
    seeds = np.argmax(planes, axis=0)
    return labels[crf_inference_label(image, seeds, len(labels), crf_settings)]


def cam_to_ir_label(image, cam_pack, settings):
    """One image: HxWx3 uint8 + {"keys", "high_res"} -> uint8 HxW IR label map."""
    cams = np.asarray(cam_pack["high_res"], dtype=np.float32)
    keys = np.asarray(cam_pack["keys"], dtype=np.int64)
    if cams.ndim != 3 or cams.shape[0] != len(keys) or cams.shape[1:] != image.shape[:2]:
        raise ValueError(f"high_res CAMs {cams.shape} with {len(keys)} keys do not fit "
                         f"image {image.shape}")
    labels = np.concatenate([[0], keys + 1])  # plane index -> VOC label (0 = background)
    fg = _confident_labels(image, cams, labels, settings["conf_fg_thres"], settings["crf"])
    bg = _confident_labels(image, cams, labels, settings["conf_bg_thres"], settings["crf"])
    conf = fg.copy()
    conf[fg == 0] = IGNORE
    conf[(fg == 0) & (bg == 0)] = 0  # background even under the low threshold
    return conf.astype(np.uint8)


def _make_one(image_id, voc_root, cam_dirs, out_dir, settings):
    cam_pack = load_cam_pack(cam_dirs, image_id, fields=("keys", "high_res"))
    image = load_image(Path(voc_root) / "JPEGImages" / f"{image_id}.jpg")
    try:
        conf = cam_to_ir_label(image, cam_pack, settings)
    except ValueError as err:
        raise ValueError(f"{image_id}: {err}") from None
    save_png(Path(out_dir) / f"{image_id}.png", conf, palette())
    return image_id


def make_ir_labels(voc_root, ids, cam_dirs, out_dir, settings):
    """Write out_dir/<id>.png for each id; ids whose PNG exists are skipped (resume).

    Returns the number of PNGs written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = pending("cam_to_ir_label", ids, [out_dir])
    work = partial(_make_one, voc_root=str(voc_root), cam_dirs=[str(d) for d in cam_dirs],
                   out_dir=str(out_dir), settings=settings)
    workers = settings["workers"]
    if workers < 1:
        raise ValueError(f"settings['workers'] must be >= 1, got {workers}")
    bar = dict(total=len(todo), desc="ir labels", unit="img")
    if workers == 1 or len(todo) <= 1:
        for image_id in tqdm(todo, **bar):
            work(image_id)
    else:
        with Pool(min(workers, len(todo))) as pool:
            # chunksize 1: CRF time varies with image size, keep the workers balanced.
            for _ in tqdm(pool.imap_unordered(work, todo, chunksize=1), **bar):
                pass
    return len(todo)

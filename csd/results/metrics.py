"""Seed and mask mIoU over the 21 VOC classes (background + 20), void (255) ignored."""

from pathlib import Path

import numpy as np
from tqdm import tqdm

from csd.data.voc import CLASSES, IGNORE, NUM_CLASSES, load_label_png
from csd.runtime.io import save_json
from csd.runtime.store import find_in_dirs, load_cam_pack

N_LABELS = NUM_CLASSES + 1  # background + classes
LABEL_NAMES = ("background",) + CLASSES


def confusion_matrix(gt, pred, n_labels=N_LABELS):
    """[n, n] counts, rows = ground truth, columns = prediction.

    Pixels void (255) in either map are ignored: void in the ground truth is VOC's boundary
    band; void in a prediction is a pseudo mask's "unsure" (its share is reported apart).
    """
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels, prediction {pred.size}")
    valid = (gt != IGNORE) & (pred != IGNORE)
    gt = gt[valid].astype(np.int64)
    pred = pred[valid].astype(np.int64)
    for name, arr in (("ground truth", gt), ("prediction", pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_labels):
            raise ValueError(f"{name} has label {arr.max()} outside 0..{n_labels - 1} and 255")
    return np.bincount(gt * n_labels + pred, minlength=n_labels * n_labels).reshape(
        n_labels, n_labels)


def _percent(x):
    # JSON has no NaN: a class absent from both maps has no IoU.
    return None if np.isnan(x) else float(100.0 * x)


def scores(confusion):
    """{"miou", "iou": {name: IoU}, "pixel_acc", "mean_acc"} in percent.

    Classes absent from both ground truth and prediction (0/0) are left out of the means,
    as in chainercv's eval that IRN uses.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    gt_total = confusion.sum(axis=1)
    pred_total = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt_total + pred_total - tp)
        acc = tp / gt_total
        pixel_acc = tp.sum() / confusion.sum()
    names = LABEL_NAMES if len(tp) == N_LABELS else tuple(str(i) for i in range(len(tp)))
    nanmean = lambda v: np.nan if np.all(np.isnan(v)) else np.nanmean(v)
    return {
        "miou": _percent(nanmean(iou)),
        "iou": {name: _percent(v) for name, v in zip(names, iou)},
        "pixel_acc": _percent(pixel_acc),
        "mean_acc": _percent(nanmean(acc)),
    }


def _load_gt(voc_root, image_id):
    path = Path(voc_root) / "SegmentationClass" / f"{image_id}.png"
    if not path.exists():
        raise FileNotFoundError(f"ground truth {path} not found")
    return path, load_label_png(path)


def seed_foreground(cams, keys):
    """(best CAM score, its label 1..20) per pixel of CAMs [K, H, W] for classes `keys`; the
    seed is that label where the score beats the background threshold, else 0."""
    keys = np.asarray(keys, np.int64)
    if len(keys) == 0:
        return np.full(cams.shape[1:], -np.inf, np.float32), np.zeros(cams.shape[1:], np.int64)
    return cams.max(axis=0), keys[cams.argmax(axis=0)] + 1


def seed_labels(cams, keys, threshold):
    """The seed label map: argmax over [threshold, CAMs] (ties go to the background)."""
    fg_score, fg_label = seed_foreground(cams, keys)
    return np.where(fg_score > np.float32(threshold), fg_label, 0)


def eval_seeds(voc_root, ids, cam_dirs, out_json, settings):
    """Seed mIoU: argmax over [background plane = threshold, high_res CAMs] vs ground truth.

    Every threshold of the curve is scored in the same pass over the images.
    """
    threshold = float(settings["bg_threshold"])
    thresholds = sorted({threshold, *map(float, settings["curve_thresholds"])})
    confusions = {t: np.zeros((N_LABELS, N_LABELS), np.int64) for t in thresholds}
    for image_id in tqdm(ids, desc="eval seeds", unit="img"):
        gt_path, gt = _load_gt(voc_root, image_id)
        pack = load_cam_pack(cam_dirs, image_id, fields=("keys", "high_res"))
        cams, keys = pack["high_res"], np.asarray(pack["keys"], np.int64)
        if cams.shape[1:] != gt.shape or cams.shape[0] != len(keys):
            raise ValueError(f"{image_id}: high_res CAMs {cams.shape} with {len(keys)} keys do "
                             f"not fit ground truth {gt_path} of shape {gt.shape}")
        fg_score, fg_label = seed_foreground(cams, keys)
        valid = gt != IGNORE
        gt_valid = gt[valid].astype(np.int64)
        if gt_valid.size and gt_valid.max() >= N_LABELS:
            raise ValueError(f"ground truth {gt_path} has label {gt_valid.max()} outside "
                             f"0..{N_LABELS - 1} and 255")
        fg_score, fg_label = fg_score[valid], fg_label[valid]
        for t in thresholds:
            pred = np.where(fg_score > np.float32(t), fg_label, 0)
            confusions[t] += np.bincount(gt_valid * N_LABELS + pred,
                                         minlength=N_LABELS * N_LABELS).reshape(N_LABELS, N_LABELS)
    curve = [{"threshold": t, "miou": scores(confusions[t])["miou"]} for t in thresholds]
    scored = [c for c in curve if c["miou"] is not None]
    best = max(scored, key=lambda c: c["miou"]) if scored else {"threshold": None, "miou": None}
    result = {
        **scores(confusions[threshold]),
        "n_images": len(ids),
        "threshold": threshold,
        "best_threshold": best["threshold"],
        "best_miou": best["miou"],
        "curve": curve,
    }
    save_json(out_json, result)
    return result


def eval_masks(voc_root, ids, mask_dirs, out_json, settings=None):
    """Mask mIoU of label PNGs (pseudo masks, IR labels) vs ground truth.

    Reads no settings; "pred_void_pct" is the share of labelled ground-truth pixels that
    the masks leave void (255), which the mIoU does not count.
    """
    confusion = np.zeros((N_LABELS, N_LABELS), np.int64)
    void, labelled = 0, 0
    for image_id in tqdm(ids, desc="eval masks", unit="img"):
        gt_path, gt = _load_gt(voc_root, image_id)
        pred_path = find_in_dirs(mask_dirs, f"{image_id}.png")
        pred = load_label_png(pred_path)
        if pred.shape != gt.shape:
            raise ValueError(f"mask {pred_path} has shape {pred.shape}, ground truth {gt_path} "
                             f"has {gt.shape}")
        try:
            confusion += confusion_matrix(gt, pred)
        except ValueError as err:
            raise ValueError(f"{pred_path} vs {gt_path}: {err}") from None
        known = gt != IGNORE
        labelled += int(known.sum())
        void += int((known & (pred == IGNORE)).sum())
    result = {
        **scores(confusion),
        "n_images": len(ids),
        "pred_void_pct": 100.0 * void / labelled if labelled else None,
    }
    save_json(out_json, result)
    return result

"""Figures for `snakemake --report`: per-class IoU bars, training curves of every training
stage, and overlays (image, seed, mask, prediction, ground truth) for a few train images."""

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from csd.data.voc import (CLASSES, IGNORE, VOCDataset, load_image,  # noqa: E402
                          load_label_png, palette)
from csd.results.metrics import seed_labels  # noqa: E402
from csd.runtime.io import atomic_path, load_json  # noqa: E402
from csd.runtime.store import find_in_dirs, load_cam_pack  # noqa: E402
from csd.seg.deeplab import load_deeplab  # noqa: E402
from csd.seg.infer_seg import segment  # noqa: E402

KINDS = ("seed", "mask", "val", "val_crf")


def save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def per_class_bars(per_class_csv, out_png):
    """One panel per evaluation (seed, mask, val, val_crf): IoU per class, a bar per method
    (mean over seeds)."""
    frame = pd.read_csv(per_class_csv)
    kinds = [k for k in KINDS if k in set(frame["kind"])]
    if not kinds:
        raise ValueError(f"{per_class_csv}: no per-class IoU of kinds {KINDS}")
    fig, axes = plt.subplots(len(kinds), 1, figsize=(14, 3.2 * len(kinds)), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        rows = frame[frame["kind"] == kind]
        table = rows.groupby(["class", "method"], sort=False)["iou"].mean().unstack("method")
        table.plot.bar(ax=ax, width=0.8)
        ax.set_ylabel(f"{kind} IoU (%)")
        ax.set_xlabel("")
        ax.legend(fontsize="small", ncol=len(table.columns))
    save_figure(fig, out_png)


# History columns of CSD's classifier (csd.methods.csd.train.csd_step), drawn in two extra panels.
CSD_TERMS = ("cls", "fg", "bg", "grad_cls", "grad_fg", "grad_bg")
CSD_SHARES = ("fg_images", "bg_images", "draw_cooccurs", "draw_in_target")


def training_curves(histories, out_png):
    """histories: [{"method", "seed", "stage", "path"}] (the stages' history JSONs). One row
    per stage: loss per epoch, lr per epoch, a line per method and seed; for a stage whose
    history has CSD's columns, also each loss term with its gradient norm on the features
    (dashed; log scale: whether L_fg and L_bg are of the classification loss's size) and the
    shares of images with valid cells and of co-occurring source draws. Returns {stage: the
    CSD columns drawn}."""
    stages = list(dict.fromkeys(h["stage"] for h in histories))
    if not stages:
        raise ValueError("no training history to plot")
    runs = [(h, load_json(h["path"])) for h in histories]
    drawn = {stage: set() for stage in stages}
    fig, axes = plt.subplots(len(stages), 4, figsize=(22, 3 * len(stages)), squeeze=False)
    for (loss_ax, lr_ax, term_ax, share_ax), stage in zip(axes, stages):
        used = {ax: False for ax in (term_ax, share_ax)}
        for h, epochs in ((h, e) for h, e in runs if h["stage"] == stage):
            x = [e["epoch"] for e in epochs]
            label = f"{h['method']} seed {h['seed']}"
            loss_ax.plot(x, [e["loss"] for e in epochs], label=label)
            lr_ax.plot(x, [e["lr"] for e in epochs], label=label)
            for ax, keys in ((term_ax, CSD_TERMS), (share_ax, CSD_SHARES)):
                for key in keys:
                    if all(key in e for e in epochs):
                        style = "--" if key.startswith("grad_") else "-"
                        ax.plot(x, [e[key] for e in epochs], style, label=f"{label}: {key}")
                        used[ax] = True
                        drawn[stage].add(key)
        loss_ax.set_title(f"{stage}: loss")
        lr_ax.set_title(f"{stage}: lr")
        for ax in (loss_ax, lr_ax, term_ax, share_ax):
            ax.set_xlabel("epoch")
        loss_ax.legend(fontsize="small")
        titles = {term_ax: "CSD terms (dashed: grad norm)", share_ax: "CSD shares"}
        for ax, has_lines in used.items():
            if has_lines:
                ax.set_title(f"{stage}: {titles[ax]}")
                ax.legend(fontsize="x-small")
            else:
                ax.axis("off")
        if used[term_ax]:
            term_ax.set_yscale("symlog", linthresh=1e-3)
    save_figure(fig, out_png)
    return drawn


def colorize(labels):
    """Label map (0..20, 255) -> RGB with the VOC palette."""
    colors = np.asarray(palette(), np.uint8).reshape(-1, 3)
    return colors[labels.astype(np.int64)]


def overlays(voc_root, ids, cam_dirs, mask_dirs, seg_model, out_png, settings,
             device="cpu"):
    """A row per image of `ids`: image, seed (background threshold
    settings["bg_threshold"]), pseudo mask, DeepLab prediction (settings["infer_seg"]),
    ground truth."""
    model = load_deeplab(seg_model, torch.device(device))
    images = VOCDataset(voc_root, ids)
    columns = ("image", "seed", "mask", "prediction", "ground truth")
    fig, axes = plt.subplots(len(ids), len(columns), figsize=(2.4 * len(columns), 2.4 * len(ids)),
                             squeeze=False)
    for row, image_id in zip(axes, ids):
        image = load_image(images.image_path(image_id))
        pack = load_cam_pack(cam_dirs, image_id, fields=("keys", "high_res"))
        seed = seed_labels(pack["high_res"], pack["keys"], settings["bg_threshold"])
        mask = load_label_png(find_in_dirs(mask_dirs, f"{image_id}.png"))
        prediction = segment(model, image, settings["infer_seg"], device).argmax(axis=0)
        truth = load_label_png(images.mask_path(image_id))
        panels = (image, colorize(seed), colorize(mask), colorize(prediction), colorize(truth))
        for ax, title, panel in zip(row, columns, panels):
            ax.imshow(panel)
            ax.set_title(title if ax is not row[0] else f"{title} {image_id}", fontsize=8)
            ax.axis("off")
        present = sorted(set(np.unique(truth)) - {0, IGNORE})
        row[-1].set_xlabel(", ".join(CLASSES[c - 1] for c in present), fontsize=7)
    save_figure(fig, out_png)

"""CSD's losses, the author's forms (zaiquanyang/PSD_WSSS, engine.py train_one_epoch):
L_fg, the pasted object keeps the CAM it has in S; L_bg, the pasted background stays
background as in S. Per cell, then weighted by pixel purity and reduced; each departure
from the author's code is a setting of the `csd` section (docs/methods/csd.md).
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from csd.data.voc import NUM_CLASSES
from csd.methods.csd.sampling import pasted_labels
from csd.runtime.config import choice

MIN_RANGE = 0.1  # smallest peak that cam_scores divides by
AUTHOR_EPS = 1e-4  # the author's min-max denominator: (a - min) / (max - min + 1e-4)


def cells_inside(mask, size):
    """[B, H, W] pixel mask -> [B, h, w] bool: feature cells lying fully inside the mask."""
    return (1 - F.adaptive_max_pool2d(1 - mask[:, None], size))[:, 0] > 0.5


def cam_scores(maps, units):
    """Non-negative class scores of raw class maps in `units`: "logit", the ReLU'd maps as
    they are (ResNet: the classifier's logits; MCTformer: class attention x patch CAM, the
    author's); "peak", each ReLU'd map over its own spatial peak (in [0, 1], the seeds'
    scale), the peak held constant: a gradient through 1/peak would let a loss shrink or
    sharpen whole maps instead of the scores at the pasted cells."""
    cam = F.relu(maps)
    if choice(units, "csd.cam_units", ("logit", "peak")) == "peak":
        return cam / cam.amax(dim=(2, 3), keepdim=True).detach().clamp_min(MIN_RANGE)
    return cam


def minmax(x, dims, floor=0.0):
    """(x - min) / max(max - min + 1e-4, floor) over `dims`: the author's normalisation
    (floor 0), over the channels (dims 1) or over the cells (dims (2, 3)). Its slope is
    1 / (range + 1e-4): 10^4 at a cell whose classes all score alike, a gradient that a
    linear score (ResNet CAMs) passes on to the backbone; `floor` bounds it by 1 / floor
    and changes nothing where the range is at least `floor`."""
    low = x.amin(dim=dims, keepdim=True)
    high = x.amax(dim=dims, keepdim=True)
    return (x - low) / (high - low + AUTHOR_EPS).clamp_min(floor)


def kl_term(log_p, log_q):
    """One term p * (log p - log q) of KL(p || q), from log-probabilities: the author keeps a
    single class's term, which only raises q there (it is not a divergence: it can be < 0)."""
    return log_p.exp() * (log_p - log_q)


def with_background(scores, background):
    """[B, 20, h, w] scores -> [B, 21, h, w] with a constant background score last."""
    return torch.cat([scores, torch.full_like(scores[:, :1], background)], dim=1)


def cell_losses(teacher_maps, maps_fg, maps_bg, batch, settings):
    """Per-cell (L_fg, L_bg) and the teacher's gate of L_fg, the author's forms, on the class
    scores in `cam_units`.

    L_fg: channel min-max of the scores (its range floored at `range_floor`, teacher and
    student alike); teacher softmax(cmm * fg_temperature), student log_softmax(cmm); only
    c_s's term of the KL. Only where the teacher's spatially min-max
    normalised map of c_s is above `confidence`.
    L_bg: the scores of all 20 classes plus a constant background score `bg_score`; teacher
    softmax(scores) unscaled, student log_softmax(bg_scale * scores); only the background's
    term of the KL; no gate."""
    units = settings["cam_units"]
    teacher, student_fg, student_bg = (cam_scores(m, units)
                                       for m in (teacher_maps, maps_fg, maps_bg))
    source_class = batch["source_class"]
    rows = torch.arange(len(source_class), device=source_class.device)
    floor = settings["range_floor"]
    log_p = F.log_softmax(minmax(teacher, 1, floor) * settings["fg_temperature"], dim=1)
    log_q = F.log_softmax(minmax(student_fg, 1, floor), dim=1)
    loss_fg = kl_term(log_p[rows, source_class], log_q[rows, source_class])
    background = settings["bg_score"]
    log_p = F.log_softmax(with_background(teacher, background), dim=1)
    log_q = F.log_softmax(with_background(student_bg, background) * settings["bg_scale"], dim=1)
    loss_bg = kl_term(log_p[:, -1], log_q[:, -1])
    fg_gate = minmax(teacher, (2, 3))[rows, source_class] > settings["confidence"]
    return loss_fg, loss_bg, fg_gate


# ---- cells, purity, reduction --------------------------------------------------------

def purity(maps, labels, settings):
    """Pixel purity [B, h, w] of a pasted image's cells, from its own CAM without gradient
    (the author's Pixel_Purity, window 1): the spatially min-max normalised scores of its
    labelled classes plus a constant background channel `purity_bg`, normalised to sum 1 per
    cell; entropy / log 21, 1 = most ambiguous."""
    cam = minmax(cam_scores(maps.detach(), settings["cam_units"]), (2, 3))
    cam = with_background(cam * labels[:, :, None, None], settings["purity_bg"])
    dist = cam / cam.sum(dim=1, keepdim=True)
    return -(dist * (dist + 1e-6).log()).sum(dim=1) / math.log(NUM_CLASSES + 1)


def image_weights(valid, cell_purity=None, scale=1.0):
    """Cell weights [B, h, w] that sum to 1 over each image's valid cells (all 0 for an
    image without one): softmax(scale * purity) over them (ambiguous cells weigh more), or
    uniform without purity."""
    logits = torch.zeros(valid.shape, device=valid.device) if cell_purity is None else (
        cell_purity.float() * scale)
    logits = logits.masked_fill(~valid, float("-inf")).flatten(1)
    return torch.softmax(logits, dim=1).nan_to_num(0.0).view_as(valid)


class Cells(NamedTuple):
    """One decoupling loss per cell, the cells it counts on, and their weights."""

    loss: torch.Tensor  # [B, h, w]
    valid: torch.Tensor  # [B, h, w] bool
    weight: torch.Tensor  # [B, h, w]: 0 off the valid cells, summing to at most 1 per image


def reduce_cells(cells, reduction):
    """One loss from per-cell losses. "image" (the author's): the weighted sum over each
    image's cells, summed over the batch and divided by the batch size (an image without
    valid cells counts 0). "pooled": the mean over all valid cells of the batch (with purity,
    each image's weights scaled to mean 1 over its cells), so images with many cells count
    more and a batch with few valid cells weighs them as much as a full one."""
    loss, valid, weight = cells
    if choice(reduction, "csd.reduction", ("image", "pooled")) == "image":
        return (loss * weight).sum() / len(loss)
    # each image's weights over its valid cells scaled to mean 1
    total = weight.flatten(1).sum(dim=1).clamp_min(1e-12)[:, None, None]
    counts = valid.flatten(1).sum(dim=1).to(weight.dtype)[:, None, None]
    return (loss * weight / total * counts).sum() / valid.sum().clamp_min(1)


def csd_cells(teacher_maps, maps_fg, maps_bg, batch, settings):
    """(fg, bg) Cells from raw class maps: the teacher's of S, the student's of X_fg and X_bg.

    L_fg counts on the cells fully inside the pasted object, L_bg on those fully inside the
    pasted background, L_fg where the teacher's gate lets it. As the author's, the weights
    are spread over every cell of the region (by the purity of the pasted image's own CAM
    with `purity`, else uniformly), and the gate then zeroes the cells it shuts: a lone
    confident cell among n weighs 1/n, not 1."""
    loss_fg, loss_bg, fg_gate = cell_losses(teacher_maps, maps_fg, maps_bg, batch, settings)
    size = teacher_maps.shape[2:]
    fg_mask = batch["source_fg"]
    fg_region = cells_inside(fg_mask, size)
    bg_region = cells_inside((1 - fg_mask) * batch["target_bg"], size)
    cells = []
    for loss, region, gate, maps, labels in (
            (loss_fg, fg_region, fg_gate, maps_fg, pasted_labels(batch)[0]),
            (loss_bg, bg_region, None, maps_bg, batch["target_label"])):
        cell_purity = purity(maps, labels, settings) if settings["purity"] else None
        weight = image_weights(region, cell_purity, settings["purity_scale"])
        valid = region if gate is None else region & gate
        cells.append(Cells(loss, valid, weight * valid))
    return tuple(cells)


def csd_losses(teacher_maps, maps_fg, maps_bg, batch, settings):
    """(L_fg, L_bg) from raw class maps: the teacher's of S, the student's of X_fg and X_bg,
    reduced as `reduction`."""
    return tuple(reduce_cells(cells, settings["reduction"])
                 for cells in csd_cells(teacher_maps, maps_fg, maps_bg, batch, settings))

"""CSD, cross-domain semantic decoupling: the classifier retrained with pasted objects.

Round 1 of CSD retrains the classifier with round-0 pseudo masks (the base method's). The
source domain is the single-label images, grouped by class; the target domain is any train
image (or, as an ablation, only the multi-label ones). Per sample:
  - the main image x, usual augmentation, classification loss;
  - a target T with its background mask (pseudo label 0) and a source S of a class c_s drawn
    from the co-occurrence statistics of T's classes, with M_s = (pseudo label == c_s + 1);
  - X_fg = M_s*S + (1-M_s)*T (labels y_T or c_s): the pasted object must get the CAM it gets
    in S (L_fg); X_bg = M_bg*S + (1-M_bg)*T with M_bg = (1-M_s)*bg(T) (labels y_T): the
    pasted background must stay background as in S (L_bg). Both paste at the same pixel
    position, so the CAM cells of S and of the pasted image line up.
The teacher is the same network in eval mode without gradient (or, as an ablation, an EMA
copy). Inference is unchanged: the trained model is an ordinary CAMNet.

L_fg and L_bg follow the author's code (zaiquanyang/PSD_WSSS, engine.py train_one_epoch);
each departure from it is a setting of the `csd` section (docs/methods/csd.md).
"""

import math
import sys
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from csd.precision import float32, full_precision
from csd.train_cam import CAM_CLASSIFIER
from csd.training import require
from csd.voc import NUM_CLASSES, VOCDataset

CSD_KEYS = ("target", "temperature", "temperature_units", "teacher", "ema_decay",
            "cam_units", "fg_temperature", "confidence", "bg_score", "bg_scale", "reduction", "purity", "purity_bg", "purity_scale",
            "lambda_fg", "lambda_bg", "warmup_epochs", "pasted_cls", "classifier_grad",
            "range_floor")
EPS = 1e-5
MIN_RANGE = 0.1  # smallest peak that cam_scores divides by
AUTHOR_EPS = 1e-4  # the author's min-max denominator: (a - min) / (max - min + 1e-4)
VOC_TRAIN_AUG = 10582  # the images the author's co-occurrence counts (and temperature) come from


def choice(value, key, options):
    """A settings value that must be one of `options`; the error names the key."""
    if value not in options:
        raise ValueError(f"settings 'csd.{key}' must be {' or '.join(options)}, got {value!r}")
    return value


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
    if choice(units, "temperature_units", ("per_image", "count")) == "count":
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
        choice(target, "target", ("all", "multi_label"))
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


def cells_inside(mask, size):
    """[B, H, W] pixel mask -> [B, h, w] bool: feature cells lying fully inside the mask."""
    return (1 - F.adaptive_max_pool2d(1 - mask[:, None], size))[:, 0] > 0.5


# ---- the author's loss forms -----------------------------------------------------------

def cam_scores(maps, units):
    """Non-negative class scores of raw class maps in `units`: "logit", the ReLU'd maps as
    they are (ResNet: the classifier's logits; MCTformer: class attention x patch CAM, the
    author's); "peak", each ReLU'd map over its own spatial peak (in [0, 1], the seeds'
    scale), the peak held constant: a gradient through 1/peak would let a loss shrink or
    sharpen whole maps instead of the scores at the pasted cells."""
    cam = F.relu(maps)
    if choice(units, "cam_units", ("logit", "peak")) == "peak":
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


# ---- shared: cells, purity, reduction -------------------------------------------------

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
    if choice(reduction, "reduction", ("image", "pooled")) == "image":
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


def feature_gradient_norms(features, terms):
    """{"grad_<term>": L2 norm of d(term) / d(features)} for each loss term (without its
    lambda), on the backbone's output for the whole batch (ResNet: the last-stage feature
    map; MCTformer: its class tokens, patch tokens and attention maps together): whether
    the decoupling losses are of the classification loss's size. Each is a backward pass
    through the heads only (the graph is kept for the training step), so it runs every
    step."""
    tensors = [features] if torch.is_tensor(features) else [  # csd.mct.Tokens' fields
        t for t in vars(features).values() if torch.is_tensor(t)]
    tensors = [t for t in tensors if t.requires_grad]
    norms = {}
    for name, term in terms.items():
        total = torch.zeros(())
        if tensors and term.requires_grad:
            for grad in torch.autograd.grad(term, tensors, retain_graph=True,
                                            allow_unused=True):
                if grad is not None:
                    total = total + grad.detach().float().pow(2).sum().cpu()
        norms[f"grad_{name}"] = total.sqrt()
    return norms


class Teacher:
    """The network that gives the source image's CAM, without gradient: the student itself
    (CSD's choice) or an exponential moving average of it (ablation).

    With trainable BatchNorm (training from scratch) the student's teacher pass runs in the
    student's own batch (its features of S, detached), so the teacher normalises with the
    same batch statistics as the student and identical inputs give identical maps. Without
    batch statistics (frozen BatchNorm, the published setting; MCTformer's LayerNorm) it is
    a pass of its own in eval mode without gradient, the spec's teacher: the in-batch pass
    would add S to the student's backward (a quarter more images in it for nothing).
    The EMA copy runs separately in eval mode (its averaged running statistics).
    """

    def __init__(self, model, kind, ema_decay):
        choice(kind, "teacher", ("same", "ema"))
        self.model = model
        self.ema = None
        if kind == "ema":
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay),
                                     use_buffers=True)
            self.ema.requires_grad_(False)

    @property
    def in_batch(self):
        """Whether the teacher needs S in the student's forward pass: the student's own
        teacher, when its normalisation uses batch statistics."""
        return self.ema is None and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
            for m in self.model.modules())

    def update(self):
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def network(self):
        return self.model if self.ema is None else self.ema.module

    @torch.no_grad()
    def features(self, images):
        """The features of `images` from a pass of the student or the EMA copy in eval mode
        (the in-batch teacher takes the student's own instead)."""
        net = self.network()
        mode = net.training
        net.eval()
        try:
            return net.features(images)
        finally:
            net.train(mode)

    @torch.no_grad()
    def maps(self, features):
        """Raw (pre-ReLU) class maps from the teacher's features."""
        return self.network().decoupling_maps(features)

    def extras(self):
        return {"ema_teacher": self.ema} if self.ema is not None else {}


def csd_step(model, teacher, batch, epoch, settings, criterion, device):
    """One CSD batch -> (loss, parts): the classification loss, the two decoupling losses,
    and what the history shows of them: each term's gradient norm on the features, the share
    of images with valid fg / bg cells, and what the source draws were."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    x, y = batch["image"], batch["label"]
    source, target = batch["source_image"], batch["target_image"]
    fg_mask = batch["source_fg"]
    x_fg = paste(source, target, fg_mask)
    x_bg = paste(source, target, (1 - fg_mask) * batch["target_bg"])
    y_fg, y_bg = pasted_labels(batch)
    decouple = epoch >= settings["warmup_epochs"]
    n = len(x)

    in_batch = decouple and teacher.in_batch
    inputs = [x, x_fg, x_bg] + ([source] if in_batch else [])
    features = model.features(torch.cat(inputs))  # under the stage's autocast, if any
    logits = model.logits_from_features(features[:3 * n]).float()
    teacher.update()
    if settings["pasted_cls"]:
        loss_cls = criterion(logits, torch.cat([y, y_fg, y_bg]))
    else:
        loss_cls = criterion(logits[:n], y)
    draws = {"draw_cooccurs": batch["source_cooccurs"].float().mean(),
             "draw_in_target": batch["source_in_target"].float().mean()}
    if not decouple:
        return loss_cls, {"cls": loss_cls, **draws}

    teacher_features = features[3 * n:] if in_batch else teacher.features(source)
    # The class maps and CSD's losses in float32: a channel min-max over ranges near 1e-4
    # means nothing at bfloat16's 8-bit mantissa.
    with full_precision(device):
        teacher_maps = teacher.maps(float32(teacher_features))
        maps = model.decoupling_maps(float32(features[n:3 * n]),
                                     classifier_grad=settings["classifier_grad"])
        fg, bg = csd_cells(teacher_maps, maps[:n], maps[n:], batch, settings)
    terms = {"cls": loss_cls, "fg": reduce_cells(fg, settings["reduction"]),
             "bg": reduce_cells(bg, settings["reduction"])}
    loss = loss_cls + settings["lambda_fg"] * terms["fg"] + settings["lambda_bg"] * terms["bg"]
    cells = {"fg_images": fg.valid.flatten(1).any(dim=1).float().mean(),
             "bg_images": bg.valid.flatten(1).any(dim=1).float().mean()}
    return loss, {**terms, **feature_gradient_norms(features, terms), **cells, **draws}


def train_cam_csd(voc_root, ids, labels_csv, round0_mask_dir, model_out, history_out,
                  settings, device="cpu", classifier=CAM_CLASSIFIER, precision="fp32"):
    """train_cam with CSD (settings = the classifier's plus a `csd` section); writes the same
    files as the classifier's own training, the history with csd_step's parts per epoch.
    `classifier` (csd.train_cam.Classifier): the ResNet CAMNet, or csd.train_mct's
    MCTformer; the model gives features / logits_from_features / decoupling_maps /
    classification_loss."""
    ids, device, labels, transform = classifier.setup(settings, ids, labels_csv, device, "csd")
    csd = settings["csd"]
    require(csd, CSD_KEYS, "csd")
    dataset = PastePairs(voc_root, ids, labels, round0_mask_dir, transform,
                         target=csd["target"], temperature=csd["temperature"],
                         temperature_units=csd["temperature_units"])
    print(f"CSD: co-occurrence temperature {dataset.temperature:.4g} counts over "
          f"{len(dataset)} images (temperature {csd['temperature']}, "
          f"{csd['temperature_units']})", file=sys.stderr)
    model = classifier.build(settings).to(device)
    teacher = Teacher(model, csd["teacher"], csd["ema_decay"])
    criterion = model.classification_loss

    def step(model, batch, epoch):
        return csd_step(model, teacher, batch, epoch, csd, criterion, device)

    return classifier.fit(model, dataset, step, settings, model_out, history_out, device,
                          extras=teacher.extras(), precision=precision)

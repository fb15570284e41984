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
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from csd.train_cam import CAM_CLASSIFIER
from csd.training import require
from csd.voc import NUM_CLASSES, VOCDataset

CSD_KEYS = ("target", "temperature", "teacher", "ema_decay", "confidence", "bg_logit",
            "bg_units", "scale", "purity", "purity_bg", "lambda_fg", "lambda_bg",
            "warmup_epochs", "pasted_cls", "classifier_grad")
EPS = 1e-5
MIN_RANGE = 0.1  # smallest CAM range that min-max normalisation divides by


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


def transition(counts, temperature):
    """P = row-softmax(N / temperature)."""
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
    1 = pseudo label c_s + 1), `source_class`. Target and source get independent
    augmentations of the same crop size; pasting keeps pixel positions.
    """

    def __init__(self, voc_root, ids, labels, mask_dir, transform, target="all",
                 temperature=10.0):
        if target not in ("all", "multi_label"):
            raise ValueError(f"settings 'csd.target' must be all or multi_label, got {target!r}")
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
        self.transition = transition(cooccurrence(label_matrix), temperature)
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
        return {
            "image": sample["image"], "label": sample["label"],
            "target_image": target["image"], "target_label": target["label"],
            "target_bg": (target["mask"] == 0).float(),
            "source_image": source["image"],
            "source_fg": (source["mask"] == source_class + 1).float(),
            "source_class": source_class,
        }


def paste(source, target, mask):
    """mask*source + (1-mask)*target, mask [B, H, W] in {0, 1}."""
    mask = mask[:, None]
    return mask * source + (1 - mask) * target


def cells_inside(mask, size):
    """[B, H, W] pixel mask -> [B, h, w] bool: feature cells lying fully inside the mask."""
    return (1 - F.adaptive_max_pool2d(1 - mask[:, None], size))[:, 0] > 0.5


def channel_probs(maps, scale):
    """Per-cell class distribution [B, 20, h, w] of raw (pre-ReLU) class maps: min-max over
    the 20 channels at each cell, then softmax(scale * .) over channels. Only the classes'
    order at a cell matters, so pushing the pasted class up there cannot work through the
    map's peak elsewhere; raw maps keep a gradient where the ReLU'd CAM is 0."""
    low = maps.amin(dim=1, keepdim=True)
    high = maps.amax(dim=1, keepdim=True)
    # A cell where all classes are equal would divide by ~0 and blow up the gradient.
    norm = (maps - low) / (high - low).clamp_min(MIN_RANGE)
    return torch.softmax(norm * scale, dim=1)


def seed_scores(maps, hold_peak=False):
    """Seed-style scores of raw class maps: ReLU, divided by each map's spatial max (as
    make_cam's seeds). Without a gradient (the teacher's confidence, purity) as is; as a
    training target with `hold_peak`, the max held constant, since a gradient through 1/max
    lets a loss shrink or sharpen whole maps instead of the scores at the pasted cells."""
    cam = F.relu(maps)
    peak = cam.amax(dim=(2, 3), keepdim=True)
    return cam / (peak.detach() if hold_peak else peak).clamp_min(MIN_RANGE)


def label_probs(scores, labels, bg_logit, scale):
    """Per-cell distribution [B, 21, h, w] (0 = background): softmax(scale * [bg_logit,
    scores]) over the background and the classes in `labels` [B, 20] (others get 0)."""
    logits = torch.cat([torch.full_like(scores[:, :1], bg_logit), scores], dim=1) * scale
    keep = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1) > 0
    logits = logits.masked_fill(~keep[:, :, None, None], float("-inf"))
    return torch.softmax(logits, dim=1)


def background_probs(maps, labels, bg_logit, scale, units="logit"):
    """Per-cell background probability [B, h, w] from the ReLU'd class maps: a cell is
    background when no labelled class scores above `bg_logit`. units "logit": the raw
    scores; "peak": the seeds' scores with each map's peak held constant."""
    if units == "peak":
        scores = seed_scores(maps, hold_peak=True)
    elif units == "logit":
        scores = F.relu(maps)
    else:
        raise ValueError(f"settings 'csd.bg_units' must be logit or peak, got {units!r}")
    return label_probs(scores, labels, bg_logit, scale)[:, 0]


def bernoulli_kl(p, q):
    """KL(Bernoulli(p) || Bernoulli(q)), elementwise; p is the teacher's probability."""
    p = p.clamp(EPS, 1 - EPS)
    q = q.clamp(EPS, 1 - EPS)
    return p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())


def purity_weights(teacher_maps, source_labels, valid, settings):
    """Pixel purity: the entropy of the teacher's seed distribution (background logit
    `purity_bg`), softmax over each image's valid cells, scaled to mean 1: ambiguous cells
    weigh more."""
    probs = label_probs(seed_scores(teacher_maps), source_labels, settings["purity_bg"],
                        settings["scale"])
    entropy = -(probs * probs.clamp_min(EPS).log()).sum(dim=1)
    logits = entropy.masked_fill(~valid, float("-inf")).flatten(1)
    counts = valid.flatten(1).sum(dim=1, keepdim=True)
    weights = torch.softmax(logits, dim=1).nan_to_num(0.0) * counts
    return weights.view_as(entropy)


def decoupling_loss(teacher_p, student_p, valid, weights=None):
    """Mean of KL(teacher || student) over the `valid` cells; 0 (still part of the graph)
    when none is valid."""
    kl = bernoulli_kl(teacher_p, student_p)
    w = valid.float() if weights is None else valid.float() * weights
    return (kl * w).sum() / valid.sum().clamp_min(1)


def csd_losses(teacher_maps, maps_fg, maps_bg, batch, settings):
    """(L_fg, L_bg) from raw class maps: the teacher's of S, the student's of X_fg and X_bg.

    L_fg: on cells inside the pasted object where S's seed for c_s is above `confidence`,
    X_fg must give c_s the share of the cell (channel min-max, softmax) it has in S.
    L_bg: on cells inside the pasted background where S is background (c_s's map below
    `bg_logit`, in `bg_units`) with probability above `confidence`, X_bg must be background
    for T's classes as S is for c_s.
    """
    source_class = batch["source_class"]
    source_labels = F.one_hot(source_class, NUM_CLASSES).float()
    rows = torch.arange(len(source_class), device=source_class.device)
    scale, confidence = settings["scale"], settings["confidence"]
    teacher_seed = seed_scores(teacher_maps)[rows, source_class]
    teacher_c = channel_probs(teacher_maps, scale)[rows, source_class]
    student_c = channel_probs(maps_fg, scale)[rows, source_class]
    bg_logit, units = settings["bg_logit"], settings["bg_units"]
    teacher_bg = background_probs(teacher_maps, source_labels, bg_logit, scale, units)
    student_bg = background_probs(maps_bg, batch["target_label"], bg_logit, scale, units)

    size = teacher_maps.shape[2:]
    fg_mask = batch["source_fg"]
    fg_valid = cells_inside(fg_mask, size) & (teacher_seed > confidence)
    bg_valid = cells_inside((1 - fg_mask) * batch["target_bg"], size) & (teacher_bg > confidence)
    fg_weights = bg_weights = None
    if settings["purity"]:
        fg_weights = purity_weights(teacher_maps, source_labels, fg_valid, settings)
        bg_weights = purity_weights(teacher_maps, source_labels, bg_valid, settings)
    return (decoupling_loss(teacher_c, student_c, fg_valid, fg_weights),
            decoupling_loss(teacher_bg, student_bg, bg_valid, bg_weights))


class Teacher:
    """The network that gives the source image's CAM, without gradient: the student itself
    (CSD's choice) or an exponential moving average of it (ablation).

    The student's teacher pass runs in the student's own batch (its features of S,
    detached): with frozen BatchNorm (the published setting) that equals an eval-mode pass,
    and with trainable BatchNorm (training from scratch) the teacher then normalises with
    the same batch statistics as the student, so identical inputs give identical maps.
    The EMA copy runs separately in eval mode (its averaged running statistics).
    """

    def __init__(self, model, kind, ema_decay):
        if kind not in ("same", "ema"):
            raise ValueError(f"settings 'csd.teacher' must be same or ema, got {kind!r}")
        self.model = model
        self.ema = None
        if kind == "ema":
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay),
                                     use_buffers=True)
            self.ema.requires_grad_(False)

    @property
    def in_batch(self):
        """Whether the teacher needs S in the student's forward pass."""
        return self.ema is None

    def update(self):
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @torch.no_grad()
    def maps(self, images, features=None):
        """Raw (pre-ReLU) class maps of `images`: from the student's `features` of them
        (in-batch teacher), or from the EMA copy in eval mode."""
        if self.in_batch:
            return self.model.cam_from_features(features, relu=False)
        net = self.ema.module
        net.eval()
        return net.cam_from_features(net.features(images), relu=False)

    def extras(self):
        return {"ema_teacher": self.ema} if self.ema is not None else {}


def csd_step(model, teacher, batch, epoch, settings, criterion, device):
    """One CSD batch -> (loss, parts): classification, then the two decoupling losses."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    x, y = batch["image"], batch["label"]
    source, target = batch["source_image"], batch["target_image"]
    fg_mask = batch["source_fg"]
    x_fg = paste(source, target, fg_mask)
    x_bg = paste(source, target, (1 - fg_mask) * batch["target_bg"])
    y_fg = torch.maximum(batch["target_label"],
                         F.one_hot(batch["source_class"], NUM_CLASSES).float())
    decouple = epoch >= settings["warmup_epochs"]
    n = len(x)

    inputs = [x, x_fg, x_bg] + ([source] if decouple and teacher.in_batch else [])
    features = model.features(torch.cat(inputs))
    logits = model.logits_from_features(features[:3 * n])
    teacher.update()
    if settings["pasted_cls"]:
        loss_cls = criterion(logits, torch.cat([y, y_fg, batch["target_label"]]))
    else:
        loss_cls = criterion(logits[:n], y)
    if not decouple:
        return loss_cls, {"cls": loss_cls}

    teacher_maps = teacher.maps(source, features[3 * n:])
    maps = model.cam_from_features(features[n:3 * n], relu=False,
                                   classifier_grad=settings["classifier_grad"])
    loss_fg, loss_bg = csd_losses(teacher_maps, maps[:n], maps[n:], batch, settings)
    loss = loss_cls + settings["lambda_fg"] * loss_fg + settings["lambda_bg"] * loss_bg
    return loss, {"cls": loss_cls, "fg": loss_fg, "bg": loss_bg}


def train_cam_csd(voc_root, ids, labels_csv, round0_mask_dir, model_out, history_out,
                  settings, device="cpu", classifier=CAM_CLASSIFIER):
    """train_cam with CSD (settings = the classifier's plus a `csd` section); writes the same
    files as the classifier's own training, the history with cls/fg/bg loss parts.
    `classifier` (csd.train_cam.Classifier): the ResNet CAMNet, or csd.train_mct's
    MCTformer; the model gives features / logits_from_features / cam_from_features /
    classification_loss."""
    ids, device, labels, transform = classifier.setup(settings, ids, labels_csv, device, "csd")
    csd = settings["csd"]
    require(csd, CSD_KEYS, "csd")
    dataset = PastePairs(voc_root, ids, labels, round0_mask_dir, transform,
                         target=csd["target"], temperature=csd["temperature"])
    model = classifier.build(settings).to(device)
    teacher = Teacher(model, csd["teacher"], csd["ema_decay"])
    criterion = model.classification_loss

    def step(model, batch, epoch):
        return csd_step(model, teacher, batch, epoch, csd, criterion, device)

    return classifier.fit(model, dataset, step, settings, model_out, history_out, device,
                          extras=teacher.extras())

"""CSD, cross-domain semantic decoupling: round 1 retrains the classifier with pasted objects.

Round 1 trains on the base method's round-0 pseudo masks: each batch adds X_fg and X_bg
(csd.methods.csd.sampling) to the classification of x, and L_fg / L_bg
(csd.methods.csd.losses) compare the student's CAMs of the pasted images with the
teacher's CAM of S. The teacher is the same network in eval mode without gradient (or, as
an ablation, an EMA copy). Inference is unchanged: the trained model is an ordinary
classifier of its kind.
"""

import sys

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from csd.cam.train_cam import CAM_CLASSIFIER
from csd.methods.csd.losses import csd_cells, reduce_cells
from csd.methods.csd.sampling import PastePairs, paste, pasted_labels
from csd.runtime.config import choice, section
from csd.runtime.precision import float32, full_precision


def feature_gradient_norms(features, terms):
    """{"grad_<term>": L2 norm of d(term) / d(features)} for each loss term (without its
    lambda), on the backbone's output for the whole batch (ResNet: the last-stage feature
    map; MCTformer: its class tokens, patch tokens and attention maps together): whether
    the decoupling losses are of the classification loss's size. Each is a backward pass
    through the heads only (the graph is kept for the training step), so it runs every
    step."""
    # features: a tensor, or csd.methods.mct.mctformer.Tokens (its tensor fields)
    tensors = [features] if torch.is_tensor(features) else [
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
        choice(kind, "csd.teacher", ("same", "ema"))
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
    `classifier` (csd.methods.classifier.Classifier): the ResNet CAMNet's, or MCTformer's
    (csd.methods.mct.train_mct); the model gives features / logits_from_features / decoupling_maps /
    classification_loss."""
    ids, device, labels, transform = classifier.setup(settings, ids, labels_csv, device, "csd")
    csd = settings["csd"]
    section(csd, "csd")
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

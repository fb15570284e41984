"""MCTformer stage `train_cam` (methods mct, mct_csd): train the MCTformer-V2 classifier.

DeiT's recipe as MCTformer uses it: AdamW at lr * batch_size / lr_batch, no weight decay on
biases, norms, tokens and position embeddings, cosine schedule per iteration with a linear
warm-up (timm.scheduler), drop path, RandAugment + random erasing (timm's transforms) after a
random resized crop, mixed precision (the `precision` setting, csd.runtime.precision). The epoch
loop, checkpoint/resume and history are csd.runtime.training.fit's, as for the ResNet classifier.

CSD (mct_csd) pastes between aligned crops of images and their pseudo masks, which timm's
image-only pipeline cannot keep aligned: its pairs get the ResNet path's resize/flip/crop
(`resize_long`, `flip`, `crop`) instead of the random resized crop and RandAugment.
"""

from functools import partial

import torch
from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import LEVEL_TO_ARG, RandAugment

from csd.data.transforms import MEAN, STD, train_transform
from csd.data.voc import VOCDataset, load_labels_for
from csd.methods.classifier import Classifier
from csd.methods.mct.mctformer import build_mct
from csd.runtime.config import section
from csd.runtime.training import fit_adamw, seed_everything


class TimmImageTransform:
    """A sample dict's uint8 `image` through a timm (PIL) transform; labels untouched."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, sample):
        out = dict(sample)
        out["image"] = self.transform(Image.fromarray(sample["image"]))
        return out


def _posterize_at_least_one_bit(level, hparams):
    return (max(1, LEVEL_TO_ARG["PosterizeIncreasing"](level, hparams)[0]),)


def mct_transform(settings):
    """Random resized crop (scale range `scale`), flip, RandAugment (`auto_augment`, timm's
    string, e.g. rand-m9-mstd0.5-inc1; null: none), normalise, random erasing (`re_prob`).

    timm's increasing Posterize keeps 0 bits at the top magnitude (reached with the
    magnitude noise), which Pillow >= 11 rejects; it keeps at least 1 bit here."""
    transform = create_transform(
        input_size=settings["crop"], is_training=True, scale=tuple(settings["scale"]),
        hflip=0.5 if settings["flip"] else 0.0, auto_augment=settings["auto_augment"],
        interpolation="bicubic", re_prob=settings["re_prob"], re_mode="pixel", re_count=1,
        mean=MEAN, std=STD)
    for step in transform.transforms:
        for op in step.ops if isinstance(step, RandAugment) else []:
            if op.name == "PosterizeIncreasing":
                op.level_fn = _posterize_at_least_one_bit
    return TimmImageTransform(transform)


def setup_mct(settings, ids, labels_csv, device, regime=None):
    """As csd.cam.train_cam.setup, for train_mct settings (CSD: the aligned crop pipeline)."""
    section(settings, "train_mct", nested=(regime,) if regime else ())
    ids = [str(i) for i in ids]
    seed_everything(settings["seed"])
    labels = load_labels_for(labels_csv, ids)
    if regime:
        transform = train_transform("long", settings["resize_long"], settings["crop"],
                                    flip=settings["flip"])
    else:
        transform = mct_transform(settings)
    return ids, torch.device(device), labels, transform


def build(settings):
    return build_mct(settings["model"], settings["crop"], cam_layers=settings["cam_layers"])


def effective_lr(settings):
    return settings["lr"] * settings["batch_size"] / settings["lr_batch"]


def fit_mct(model, dataset, step, settings, model_out, history_out, device, extras=None,
            precision="fp32"):
    """csd.runtime.training.fit_adamw at lr * batch_size / lr_batch (DeiT's scaling)."""
    return fit_adamw("train_mct", model, dataset, step, effective_lr(settings), settings,
                     model_out, history_out, torch.device(device), extras=extras,
                     precision=precision)


def loader(settings):
    """load_mct with make_cam's (make_cam_mct's) choice of attention layers and refinement."""
    return partial(load_mct, cam_layers=settings["cam_layers"], refine=settings["refine"])


MCT_CLASSIFIER = Classifier(setup=setup_mct, build=build, fit=fit_mct, loader=loader)


def train_mct(voc_root, ids, labels_csv, model_out, history_out, settings, device="cpu",
              precision="fp32"):
    """Train MCTformer-V2 on `ids`; writes {"model", "settings"} and the history as train_cam
    (records with the loss of each head: cls = class tokens, patch = patch CAM)."""
    ids, device, labels, transform = setup_mct(settings, ids, labels_csv, device)
    dataset = VOCDataset(voc_root, ids, labels=labels, transform=transform)
    model = build(settings).to(device)

    def step(model, batch, epoch):
        images = batch["image"].to(device, non_blocking=True)
        targets = batch["label"].to(device, non_blocking=True).float()
        logits = model(images).float()
        losses = [model.classification_loss(logits[:, i:i + 1], targets) for i in range(2)]
        return losses[0] + losses[1], {"cls": losses[0], "patch": losses[1]}

    return fit_mct(model, dataset, step, settings, model_out, history_out, device,
                   precision=precision)


def load_mct(model_path, device="cpu", cam_layers=3, refine=True):
    """Rebuild the MCTformer saved by train_mct (eval mode), without fetching any weights;
    `cam_layers` and `refine` choose how `cam()` builds the seeds."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "model" not in state.get(
            "settings", {}):
        raise ValueError(f"{model_path}: not a train_mct model file (needs 'model' and "
                         "'settings' with a 'model' section)")
    settings = state["settings"]
    model = build_mct(settings["model"], settings["crop"], cam_layers=cam_layers,
                      refine=refine, pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval()

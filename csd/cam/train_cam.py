"""IRN stage `train_cam`: train the multi-label classifier (CAMNet) on image-level labels.

Resume: a checkpoint (`<model_out>.ckpt`) holds model, optimizer, RNG states and history
after every epoch. Each epoch's shuffle (and the DataLoader workers' seeds) comes from a
fresh generator seeded by (seed, epoch), so nothing but the checkpoint is needed to
continue: a killed run restarted with the same settings ends with the same weights as an
uninterrupted one (exactly on CPU). Results depend on `num_workers` (with workers, the
augmentation draws from per-worker RNGs instead of the main process's).
"""


import torch
import torch.nn as nn

from csd.cam.cam_net import CAMNet
from csd.data.transforms import train_transform
from csd.data.voc import VOCDataset, load_labels_for
from csd.methods.classifier import Classifier
from csd.runtime.config import section
from csd.runtime.training import fit, seed_everything


def make_optimizer(model, settings):
    """SGD, backbone at lr, classifier at lr * classifier_lr_mult.

    IRN's PolyOptimizer calls SGD(params, lr, weight_decay): the weight decay lands in
    SGD's momentum slot, so the published runs used momentum 1e-4 (and weight decay 1e-4
    from the param groups). `momentum` in the config reproduces that by default.
    """
    backbone, classifier = model.param_groups()
    lr = settings["lr"]
    return torch.optim.SGD(
        [{"params": backbone, "lr": lr},
         {"params": classifier, "lr": lr * settings["classifier_lr_mult"]}],
        lr=lr, momentum=settings["momentum"], weight_decay=settings["weight_decay"])


def base_lrs(settings):
    return [settings["lr"], settings["lr"] * settings["classifier_lr_mult"]]


def setup(settings, ids, labels_csv, device, regime=None):
    """What every classifier training starts with (plain, or a pasting `regime`, "csd" or
    "cda", whose settings section must be there): checked settings, seeded RNGs, the image
    labels and the augmentation. Returns (ids, device, labels, transform)."""
    section(settings, "train_cam", nested=(regime,) if regime else ())
    ids = [str(i) for i in ids]
    seed_everything(settings["seed"])
    labels = load_labels_for(labels_csv, ids)
    transform = train_transform("long", settings["resize_long"], settings["crop"],
                                flip=settings["flip"])
    return ids, torch.device(device), labels, transform


def fit_classifier(model, dataset, step, settings, model_out, history_out, device,
                   extras=None, precision="fp32"):
    """The shared epoch loop (csd.runtime.training.fit) with the classifier's optimizer and lrs."""
    return fit("train_cam", model, make_optimizer(model, settings), dataset, step,
               base_lrs(settings), settings, model_out, history_out, device, extras=extras,
               precision=precision)


CAM_CLASSIFIER = Classifier(setup=setup, build=lambda settings: CAMNet(settings["backbone"]),
                            fit=fit_classifier, loader=lambda settings: load_cam_net)


def train_cam(voc_root, ids, labels_csv, model_out, history_out, settings, device="cpu",
              precision="fp32"):
    """Train CAMNet on `ids` at `precision` (csd.runtime.precision); write {"model", "settings",
    "precision"} to model_out, history JSON to history_out (one {"epoch", "loss", "lr",
    "precision", "threads"} record per epoch)."""
    ids, device, labels, transform = setup(settings, ids, labels_csv, device)
    dataset = VOCDataset(voc_root, ids, labels=labels, transform=transform)
    model = CAMNet(settings["backbone"]).to(device)
    return fit_classifier(model, dataset, classification_step(device), settings, model_out,
                          history_out, device, precision=precision)


def classification_step(device):
    """train_cam's step: the multilabel soft-margin loss of a batch's image labels, on
    float32 logits."""
    criterion = nn.MultiLabelSoftMarginLoss()

    def step(model, batch, epoch):
        images = batch["image"].to(device, non_blocking=True)
        targets = batch["label"].to(device, non_blocking=True)
        return criterion(model(images).float(), targets), {}

    return step


def load_cam_net(model_path, device="cpu"):
    """Rebuild the CAMNet saved by train_cam (in eval mode), without fetching any weights."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "settings" not in state:
        raise ValueError(f"{model_path}: not a train_cam model file (needs 'model', 'settings')")
    backbone = dict(state["settings"]["backbone"], pretrained=None)
    model = CAMNet(backbone)
    model.load_state_dict(state["model"])
    return model.to(device).eval()

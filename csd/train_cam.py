"""IRN stage `train_cam`: train the multi-label classifier (CAMNet) on image-level labels.

Resume: a checkpoint (`<model_out>.ckpt`) holds model, optimizer, RNG states and history
after every epoch. Each epoch's shuffle (and the DataLoader workers' seeds) comes from a
fresh generator seeded by (seed, epoch), so nothing but the checkpoint is needed to
continue: a killed run restarted with the same settings ends with the same weights as an
uninterrupted one (exactly on CPU). Results depend on `num_workers` (with workers, the
augmentation draws from per-worker RNGs instead of the main process's).
"""

import hashlib
import json
import sys

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from csd.cam_net import CAMNet
from csd.io import load_json, save_json, save_torch
from csd.training import Checkpoint, poly_lr, seed_everything, set_lr
from csd.transforms import train_transform
from csd.voc import VOCDataset, load_labels

TRAIN_KEYS = ("seed", "backbone", "batch_size", "epochs", "lr", "classifier_lr_mult",
              "weight_decay", "momentum", "poly_power", "resize_long", "crop", "flip",
              "num_workers")


def require(settings, keys, section):
    missing = [k for k in keys if k not in settings]
    if missing:
        raise KeyError(f"settings '{section}' lacks keys {missing}")


def load_labels_for(labels_csv, ids):
    labels = load_labels(labels_csv)
    missing = [i for i in ids if i not in labels]
    if missing:
        raise KeyError(f"{labels_csv}: no labels for {len(missing)} image ids, "
                       f"e.g. {missing[:3]}")
    return labels


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


def epoch_generator(seed, epoch):
    """A generator for one epoch's shuffle and worker seeds, a pure function of (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def epoch_loader(dataset, settings, epoch, device):
    return DataLoader(dataset, batch_size=settings["batch_size"], shuffle=True, drop_last=True,
                      num_workers=settings["num_workers"],
                      generator=epoch_generator(settings["seed"], epoch),
                      pin_memory=torch.device(device).type == "cuda")


def open_checkpoint(model_out, settings, ids):
    """csd.training.Checkpoint for model_out, valid only for these settings and images.

    A checkpoint left by a killed run with other settings or another image list (say, the
    user changed lr and Snakemake reran the job) must not be resumed: a stamp next to it
    records both, and a mismatch discards the checkpoint.
    """
    checkpoint = Checkpoint(model_out)
    stamp = checkpoint.path.with_name(checkpoint.path.name + ".settings.json")
    # compared as the stamp reads back (tuples become lists)
    current = json.loads(json.dumps({
        "settings": settings,
        "ids_sha1": hashlib.sha1("\n".join(ids).encode()).hexdigest()}))
    if checkpoint.path.exists() and (not stamp.exists() or load_json(stamp) != current):
        print(f"train_cam: discarding {checkpoint.path} (written for other settings or "
              f"images)", file=sys.stderr)
        checkpoint.remove()
    save_json(stamp, current)
    return checkpoint, stamp


def train_cam(voc_root, ids, labels_csv, model_out, history_out, settings, device="cpu"):
    """Train CAMNet on `ids`; write {"model", "settings"} to model_out, history JSON to
    history_out (one {"epoch", "loss", "lr"} record per epoch)."""
    require(settings, TRAIN_KEYS, "train_cam")
    ids = [str(i) for i in ids]
    device = torch.device(device)
    seed_everything(settings["seed"])
    labels = load_labels_for(labels_csv, ids)
    transform = train_transform("long", settings["resize_long"], settings["crop"],
                                flip=settings["flip"])
    dataset = VOCDataset(voc_root, ids, labels=labels, transform=transform)
    steps_per_epoch = len(dataset) // settings["batch_size"]
    if steps_per_epoch == 0:
        raise ValueError(f"train_cam: {len(dataset)} images are fewer than batch_size "
                         f"{settings['batch_size']} (drop_last would leave no batch)")
    total_steps = steps_per_epoch * settings["epochs"]

    model = CAMNet(settings["backbone"]).to(device)
    optimizer = make_optimizer(model, settings)
    criterion = nn.MultiLabelSoftMarginLoss()
    checkpoint, stamp = open_checkpoint(model_out, settings, ids)
    start, history = checkpoint.resume(model, optimizer)
    if start:
        print(f"train_cam: resuming after epoch {start} from {checkpoint.path}", file=sys.stderr)

    model.train()
    for epoch in range(start, settings["epochs"]):
        loader = epoch_loader(dataset, settings, epoch, device)
        losses = []
        bar = tqdm(loader, total=steps_per_epoch, file=sys.stderr, dynamic_ncols=True,
                   desc=f"train_cam epoch {epoch + 1}/{settings['epochs']}")
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            lrs = [poly_lr(lr, step, total_steps, settings["poly_power"])
                   for lr in base_lrs(settings)]
            set_lr(optimizer, lrs)
            images = batch["image"].to(device, non_blocking=True)
            targets = batch["label"].to(device, non_blocking=True)
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lrs[0]:.2e}")
        bar.close()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lrs[0]})
        print(f"train_cam epoch {epoch + 1}: loss {history[-1]['loss']:.4f}", file=sys.stderr)
        checkpoint.save(epoch, model, optimizer, history)

    save_torch(model_out, {"model": model.state_dict(), "settings": settings})
    save_json(history_out, history)
    checkpoint.remove()
    stamp.unlink(missing_ok=True)
    return history


def load_cam_net(model_path, device="cpu"):
    """Rebuild the CAMNet saved by train_cam (in eval mode), without fetching any weights."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "settings" not in state:
        raise ValueError(f"{model_path}: not a train_cam model file (needs 'model', 'settings')")
    backbone = dict(state["settings"]["backbone"], pretrained=None)
    model = CAMNet(backbone)
    model.load_state_dict(state["model"])
    return model.to(device).eval()

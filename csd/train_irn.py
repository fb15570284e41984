"""IRN stage `train_irn`: learn class boundaries from the IR labels (edge branch only).

The backbone is frozen (ImageNet weights as in IRN, or the trained CAM classifier's with
`init_from_cam`); only the edge branch learns, from pixel-pair affinities within `radius`
on the stride-4 grid of each crop (csd.irn). Resume works as in train_cam: a checkpoint
after every epoch, each epoch's shuffle drawn from a generator seeded by (seed, epoch).
"""

import sys

import numpy as np
import torch
from tqdm import tqdm

from csd.io import save_json, save_torch
from csd.irn import affinity_loss, build_irn, downsample_label, edge_to_affinity, pair_labels
from csd.train_cam import epoch_loader, require
from csd.training import Checkpoint, poly_lr, seed_everything, set_lr
from csd.transforms import train_transform
from csd.voc import VOCDataset

TRAIN_KEYS = ("seed", "backbone", "init_from_cam", "batch_size", "epochs", "lr",
              "weight_decay", "momentum", "poly_power", "scale_range", "crop", "flip",
              "radius", "num_workers")
LOSS_PARTS = ("bg_pos", "fg_pos", "neg")


def irn_step(model, images, masks, radius):
    """One batch: crops [B,3,H,W], IR labels [B,H,W] -> (total loss, parts)."""
    edge = torch.sigmoid(model(images)).squeeze(1)
    aff = edge_to_affinity(edge, radius)
    bg_pos, fg_pos, neg = pair_labels(downsample_label(masks), radius)
    return affinity_loss(aff, bg_pos, fg_pos, neg)


def train_irn(voc_root, ids, ir_label_dir, model_out, history_out, settings, cam_model=None,
              device="cpu"):
    """Train the edge branch on `ids` with IR labels `ir_label_dir/<id>.png`.

    Writes {"model": state_dict, "settings": settings} to model_out and the history JSON
    (one {"epoch", "loss", "lr", "bg_pos", "fg_pos", "neg"} record per epoch).
    """
    require(settings, TRAIN_KEYS, "train_irn")
    require(settings["backbone"], ("depth", "pretrained", "strides"), "train_irn.backbone")
    device = torch.device(device)
    seed_everything(settings["seed"])
    transform = train_transform("scale", settings["scale_range"], settings["crop"],
                                flip=settings["flip"])
    dataset = VOCDataset(voc_root, ids, mask_dir=ir_label_dir, transform=transform)
    missing = [i for i in dataset.ids if not dataset.mask_path(i).exists()]
    if missing:
        raise FileNotFoundError(f"{ir_label_dir}: no IR label PNG for {len(missing)} ids, "
                                f"e.g. {missing[:3]}")
    steps_per_epoch = len(dataset) // settings["batch_size"]
    if steps_per_epoch == 0:
        raise ValueError(f"train_irn: {len(dataset)} images are fewer than batch_size "
                         f"{settings['batch_size']} (drop_last would leave no batch)")
    total_steps = steps_per_epoch * settings["epochs"]

    model = build_irn(settings, cam_model).to(device)
    # IRN's PolyOptimizer: SGD(params, lr, weight_decay) puts wd into momentum (see train_cam)
    optimizer = torch.optim.SGD(model.edge_parameters(), lr=settings["lr"],
                                momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])
    checkpoint = Checkpoint(model_out)
    start, history = checkpoint.resume(model, optimizer)
    if start:
        print(f"train_irn: resuming after epoch {start} from {checkpoint.path}", file=sys.stderr)

    model.train()
    for epoch in range(start, settings["epochs"]):
        loader = epoch_loader(dataset, settings, epoch, device)
        sums = dict.fromkeys(("loss",) + LOSS_PARTS, 0.0)
        bar = tqdm(loader, total=steps_per_epoch, file=sys.stderr, dynamic_ncols=True,
                   desc=f"train_irn epoch {epoch + 1}/{settings['epochs']}")
        for i, batch in enumerate(bar):
            lr = poly_lr(settings["lr"], epoch * steps_per_epoch + i, total_steps,
                         settings["poly_power"])
            set_lr(optimizer, [lr])
            images = batch["image"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True)
            loss, parts = irn_step(model, images, masks, settings["radius"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += loss.item()
            for key in LOSS_PARTS:
                sums[key] += parts[key].item()
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        bar.close()
        record = {"epoch": epoch + 1, "loss": sums["loss"] / steps_per_epoch, "lr": lr}
        record.update({k: sums[k] / steps_per_epoch for k in LOSS_PARTS})
        history.append(record)
        print(f"train_irn epoch {epoch + 1}: loss {record['loss']:.4f} "
              + " ".join(f"{k} {record[k]:.4f}" for k in LOSS_PARTS), file=sys.stderr)
        if not np.isfinite(record["loss"]):
            raise FloatingPointError(f"train_irn: loss is {record['loss']} in epoch {epoch + 1}")
        checkpoint.save(epoch, model, optimizer, history)

    save_torch(model_out, {"model": model.state_dict(), "settings": settings})
    save_json(history_out, history)
    checkpoint.remove()
    return history

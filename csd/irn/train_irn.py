"""IRN stage `train_irn`: learn class boundaries from the IR labels (edge branch only).

The backbone is frozen (ImageNet weights as in IRN); only the edge branch learns, from
pixel-pair affinities within `radius` on the stride-4 grid of each crop (csd.irn.edge_net).
Resume works as in train_cam: a checkpoint after every epoch, each epoch's shuffle drawn
from a generator seeded by (seed, epoch).
"""

import torch

from csd.data.transforms import mask_training_set
from csd.irn.edge_net import (
    affinity_loss,
    build_irn,
    downsample_label,
    edge_to_affinity,
    pair_labels,
)
from csd.runtime.config import section
from csd.runtime.training import fit, seed_everything


def irn_step(model, images, masks, radius):
    """One batch: crops [B,3,H,W], IR labels [B,H,W] -> (total loss, parts)."""
    edge = torch.sigmoid(model(images).float()).squeeze(1)  # the affinities in float32
    aff = edge_to_affinity(edge, radius)
    bg_pos, fg_pos, neg = pair_labels(downsample_label(masks), radius)
    return affinity_loss(aff, bg_pos, fg_pos, neg)


def train_irn(voc_root, ids, ir_label_dir, model_out, history_out, settings, device="cpu",
              precision="fp32"):
    """Train the edge branch on `ids` with IR labels `ir_label_dir/<id>.png`.

    Writes {"model": state_dict, "settings": settings} to model_out and the history JSON
    (one {"epoch", "loss", "lr", "bg_pos", "fg_pos", "neg"} record per epoch).
    """
    section(settings, "train_irn")
    device = torch.device(device)
    seed_everything(settings["seed"])
    dataset = mask_training_set(voc_root, ids, ir_label_dir, settings["scale_range"],
                                settings["crop"], settings["flip"], "IR label PNG")
    model = build_irn(settings).to(device)
    # IRN's PolyOptimizer: SGD(params, lr, weight_decay) puts wd into momentum (see train_cam)
    optimizer = torch.optim.SGD(model.edge_parameters(), lr=settings["lr"],
                                momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])

    def step(model, batch, epoch):
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        return irn_step(model, images, masks, settings["radius"])

    return fit("train_irn", model, optimizer, dataset, step, [settings["lr"]], settings,
               model_out, history_out, device, precision=precision)

"""Stages `pretrain_backbone` and `pretrain_vit`: procedural pretraining, the synthetic
benchmark's ImageNet.

No ImageNet weights can be had where the synthetic benchmark runs, and a ResNet trained
from scratch on a few hundred images gives CAMs nothing like VOC's. Formula-driven
pretraining is the established substitute (FractalDB, Kataoka et al. ACCV 2020; "Learning
to See by Looking at Noise", Baradad et al. NeurIPS 2021): here a classification set drawn
from the toyvoc world with its own generator seed, so it never holds a benchmark image, but
the same world statistics (ImageNet has context ties too). Each image is labelled with its
object classes and its background context (10 more families to tell apart), and a
torchvision ResNet learns them all as one multi-label problem, at its usual output stride
32 (the fine-tuning stages change strides as IRN does with ImageNet weights).

The output is a plain torchvision state_dict without `fc.`, which `backbone.pretrained:
<path>` loads like any ImageNet file.

`pretrain_vit` does the same for MCTformer's ViT (DeiT-S's ImageNet weights on VOC): a timm
VisionTransformer with one class token learns the same targets from its class token with
DeiT's optimiser (AdamW, warm-up + cosine), and its state_dict without `head.` is a DeiT
file that `train_mct.model.pretrained: <path>` loads (the class token copied into the 20).
"""

import sys
from functools import partial
from multiprocessing import Pool

import cv2
import numpy as np
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import Dataset
from tqdm import tqdm

from csd.cam.backbone import load_resnet
from csd.data.transforms import train_transform
from csd.data.voc import CLASSES
from csd.runtime.config import section
from csd.runtime.io import save_torch
from csd.runtime.training import fit, fit_adamw, seed_everything
from csd.toyvoc.render import jpeg_bytes, render_image
from csd.toyvoc.world import CONTEXTS, check_settings, plan_image

NUM_TARGETS = len(CLASSES) + len(CONTEXTS)


def render_one(world, index):
    """One image of the set (a pure function of the world and the index): the uint8 image,
    JPEG-coded like toyvoc's files, and its classes and context as a target vector."""
    plan = plan_image(world, index)
    image, _, _, kept = render_image(world, plan)
    data = np.frombuffer(jpeg_bytes(image, world["jpeg_quality"]), np.uint8)
    target = np.zeros(NUM_TARGETS, np.float32)
    for inst in kept:
        target[inst["cls"]] = 1
    target[len(CLASSES) + plan["context"]] = 1
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), target


def render_set(world, n_images, workers=1):
    """(uint8 images, float targets [n, 20 classes + 10 contexts]) drawn from `world`
    (toyvoc settings without the split sizes; its `seed` is the generator seed), in
    `workers` processes (the same set with any number)."""
    world = dict(world, n_train=n_images, n_val=1, n_test=0, n_sbd_train=0, n_sbd_val=0,
                 sbd_overlap=0)
    check_settings(world)
    render = partial(render_one, world)
    bar = partial(tqdm, total=n_images, desc="pretrain: rendering", file=sys.stderr,
                  dynamic_ncols=True, mininterval=10)
    if workers <= 1:
        rendered = list(bar(map(render, range(n_images))))
    else:
        with Pool(workers) as pool:
            rendered = list(bar(pool.imap(render, range(n_images), chunksize=64)))
    images = [image for image, _ in rendered]
    targets = np.stack([target for _, target in rendered]) if rendered else np.zeros(
        (0, NUM_TARGETS), np.float32)
    return images, targets


class RenderedSet(Dataset):
    def __init__(self, images, targets, transform):
        self.images, self.targets, self.transform = images, targets, transform
        self.ids = range(len(images))  # the checkpoint's identity of the training set

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        sample = self.transform({"image": self.images[index]})
        return {"image": sample["image"], "label": torch.from_numpy(self.targets[index])}


def pretraining_set(settings, stage, benchmark_seed=None):
    """The rendered, augmented training set of a pretraining stage (its `world`, `n_images`,
    `resize_long`, `crop`, `flip`). benchmark_seed: the generator seed of the benchmark the
    weights are for; the same seed would render the benchmark's own images, so it is refused."""
    world = settings["world"]
    if benchmark_seed is not None and world["seed"] == benchmark_seed:
        raise ValueError(f"{stage}.world.seed ({world['seed']}) equals "
                         "dataset.toyvoc.seed: pretraining would see the benchmark's images")
    # The job holds torch's threads: rendering (one CPU core per ~100 images/s) uses them too.
    images, targets = render_set(world, settings["n_images"], workers=torch.get_num_threads())
    return RenderedSet(images, targets, train_transform(
        "long", settings["resize_long"], settings["crop"], flip=settings["flip"]))


def multilabel_step(device):
    criterion = nn.MultiLabelSoftMarginLoss()

    def step(model, batch, epoch):
        logits = model(batch["image"].to(device, non_blocking=True))
        return criterion(logits.float(), batch["label"].to(device, non_blocking=True)), {}

    return step


def save_without(out, net, prefix):
    """The trained network's state_dict without its classifier (`prefix`), on the CPU."""
    save_torch(out, {k: v.cpu().contiguous() for k, v in net.state_dict().items()
                     if not k.startswith(prefix)})


def pretrain_backbone(backbone_out, model_out, history_out, settings, benchmark_seed=None,
                      device="cpu", precision="fp32"):
    """Render the pretraining set, train a ResNet on it (checkpointed, resumable), and write
    the backbone's torchvision state_dict (no `fc.`) to backbone_out; the whole classifier
    ({"model", "settings"}) goes to model_out, the per-epoch history to history_out."""
    section(settings, "pretrain_backbone")
    seed_everything(settings["seed"])
    dataset = pretraining_set(settings, "pretrain_backbone", benchmark_seed)
    device = torch.device(device)
    net = load_resnet(settings["depth"], None, strides=(1, 2, 2, 2))
    net.fc = nn.Linear(net.fc.in_features, NUM_TARGETS)
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=settings["lr"],
                                momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])
    history = fit("pretrain_backbone", net, optimizer, dataset, multilabel_step(device),
                  [settings["lr"]], settings, model_out, history_out, device,
                  precision=precision)
    save_without(backbone_out, net, "fc.")
    return history


def build_vit(model_settings, img_size, num_classes=NUM_TARGETS):
    """A DeiT-style timm ViT (one class token, its logits read from it) of a
    `pretrain_vit.model` section."""
    return VisionTransformer(
        img_size=img_size, patch_size=model_settings["patch_size"],
        embed_dim=model_settings["embed_dim"], depth=model_settings["depth"],
        num_heads=model_settings["num_heads"], mlp_ratio=4.0, qkv_bias=True,
        num_classes=num_classes, global_pool="token", class_token=True,
        drop_path_rate=model_settings["drop_path"])


def pretrain_vit(vit_out, model_out, history_out, settings, benchmark_seed=None, device="cpu",
                 precision="fp32"):
    """As pretrain_backbone, for a ViT: trained with AdamW and warm-up + cosine
    (csd.runtime.training.fit_adamw); vit_out gets its state_dict without `head.` (a DeiT
    file for train_mct.model.pretrained)."""
    section(settings, "pretrain_vit")
    seed_everything(settings["seed"])
    dataset = pretraining_set(settings, "pretrain_vit", benchmark_seed)
    device = torch.device(device)
    net = build_vit(settings["model"], settings["crop"]).to(device)
    history = fit_adamw("pretrain_vit", net, dataset, multilabel_step(device), settings["lr"],
                        settings, model_out, history_out, device, precision=precision)
    save_without(vit_out, net, "head.")
    return history

"""DeepLab stage `train_seg`: train the segmenter on (image, pseudo mask) pairs.

The recipe counts iterations (20k); the shared loop (csd.runtime.training.fit) counts epochs, and
its checkpoint, resume and history are per epoch. So `iterations` is turned into whole
epochs, round(iterations / steps per epoch) (at least 1), and the poly schedule spans
exactly those epochs: the run is within half an epoch of `iterations` (20k iterations on
10582 images at batch 10 become 19 epochs, 20102 iterations). The derived `epochs` is
stored with the settings in the model file.
"""

import torch
import torch.nn as nn

from csd.data.transforms import mask_training_set
from csd.data.voc import IGNORE
from csd.runtime.config import section
from csd.runtime.training import fit, seed_everything
from csd.seg.deeplab import build_deeplab, param_groups, predict_logits


def epochs_for(iterations, n_images, batch_size):
    steps = n_images // batch_size  # fit drops the last partial batch
    return max(1, round(iterations / max(1, steps)))


def train_deeplab(voc_root, ids, mask_dir, model_out, history_out, settings, device="cpu",
                  precision="fp32"):
    """Train on `ids` with masks `mask_dir/<id>.png` (255 = ignored).

    Writes {"model", "settings"} (settings with the derived `epochs`) to model_out and the
    history JSON (one {"epoch", "lr", "loss"} record per epoch) to history_out.
    """
    section(settings, "train_seg")
    if "epochs" in settings:
        raise ValueError("settings 'train_seg' counts 'iterations'; drop its 'epochs' key")
    ids = [str(i) for i in ids]
    device = torch.device(device)
    seed_everything(settings["seed"])
    dataset = mask_training_set(voc_root, ids, mask_dir, settings["scales"], settings["crop"],
                                settings["flip"], "pseudo mask PNG")
    settings = dict(settings, epochs=epochs_for(settings["iterations"], len(ids),
                                                settings["batch_size"]))
    weights = settings["backbone"]["pretrained"]
    if settings["backbone"]["freeze_bn"] and weights in (None, "none"):
        raise ValueError("settings 'train_seg.backbone.freeze_bn' is true but the backbone "
                         "starts from no weights (pretrained null): "
                         "BatchNorm would keep random statistics; set freeze_bn false")
    model = build_deeplab(settings, weights).to(device)
    groups, base_lrs = param_groups(model, settings["lr"])
    optimizer = torch.optim.SGD(groups, lr=settings["lr"], momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)

    def step(model, batch, epoch):
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        # Logits upsampled to the labels (not labels downsampled to stride 8): no label is
        # lost to nearest-neighbour subsampling.
        return criterion(predict_logits(model, images).float(), masks), {}

    return fit("train_seg", model, optimizer, dataset, step, base_lrs, settings, model_out,
               history_out, device, precision=precision)

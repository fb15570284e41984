"""The segmenter trained on pseudo masks: DeepLab-v2 (ResNet + ASPP) or torchvision's DeepLab-v3.

Both return logits at output stride 8 from `forward` (v3 without torchvision's upsampling),
so training and inference treat them alike; `predict_logits` upsamples to a given size.
Each model has a `backbone` and a `head` module: `param_groups` gives the head the
recipe's larger learning rates.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from csd.cam.backbone import load_resnet, set_stride_one
from csd.data.voc import NUM_CLASSES
from csd.runtime.config import section

N_OUT = NUM_CLASSES + 1  # background + 20 classes
ARCHS = ("deeplab_v2", "deeplab_v3")
V3_DEPTHS = (50, 101)  # torchvision builds DeepLab-v3 on these only
HEAD_WEIGHT_MULT, HEAD_BIAS_MULT = 10, 20  # DeepLab-v2's lr_mult for the classifier


class DeepLabV2(nn.Module):
    """ResNet at output stride 8 (layer3/layer4 dilated 2/4) + ASPP: the sum of one dilated
    3x3 conv per rate straight to the class logits (DeepLab-v2's fc8 branches).

    BatchNorm is frozen entirely (running statistics and affine), as DeepLab-v2 trains with
    batches of 10 that would give poor batch statistics. That needs pretrained statistics:
    from scratch (freeze_bn=False) BatchNorm trains as usual, else activations explode.
    """

    def __init__(self, depth=101, pretrained="imagenet", rates=(6, 12, 18, 24), freeze_bn=True):
        super().__init__()
        self.freeze_bn = freeze_bn
        net = load_resnet(depth, pretrained)
        for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
            set_stride_one(layer, dilation=dilation)
        self.backbone = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1,
                                      net.layer2, net.layer3, net.layer4)
        channels = net.fc.in_features
        self.head = nn.ModuleList(
            nn.Conv2d(channels, N_OUT, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.head:  # DeepLab-v2's fc8 init
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d) and freeze_bn:
                for p in m.parameters():
                    p.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        for m in self.modules() if self.freeze_bn else ():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x):
        feats = self.backbone(x)
        return sum(conv(feats) for conv in self.head)


class DeepLabV3(nn.Module):
    """torchvision's deeplabv3_resnet{50,101} (ASPP with image pooling, trainable BN),
    returning the classifier's stride-8 logits instead of torchvision's upsampled ones."""

    def __init__(self, depth=101, pretrained="imagenet"):
        super().__init__()
        if depth not in V3_DEPTHS:
            raise ValueError(f"deeplab_v3 needs backbone depth in {V3_DEPTHS}, got {depth}")
        build = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")
        net = build(weights=None, weights_backbone=None, num_classes=N_OUT, aux_loss=False)
        if pretrained not in (None, "none"):
            # Through load_resnet: the same ImageNet weights torchvision would fetch, and
            # local weight files work too. fc is the only ResNet part v3 has no use for.
            state = {k: v for k, v in load_resnet(depth, pretrained).state_dict().items()
                     if not k.startswith("fc.")}
            net.backbone.load_state_dict(state, strict=True)
        self.backbone, self.head = net.backbone, net.classifier

    def forward(self, x):
        return self.head(self.backbone(x)["out"])


def build_deeplab(settings, pretrained=None):
    """The model named by settings["arch"]; `pretrained` overrides settings' backbone one
    (None keeps it; rebuilding a trained model passes "none")."""
    section(settings["backbone"], "train_seg.backbone")
    arch = settings["arch"]
    depth = settings["backbone"]["depth"]
    pretrained = settings["backbone"]["pretrained"] if pretrained is None else pretrained
    if arch == "deeplab_v2":
        return DeepLabV2(depth, pretrained, tuple(settings["aspp_rates"]),
                         freeze_bn=settings["backbone"]["freeze_bn"])
    if arch == "deeplab_v3":
        return DeepLabV3(depth, pretrained)
    raise ValueError(f"settings key 'arch' must be one of {ARCHS}, got {arch!r}")


def load_deeplab(model_path, device="cpu"):
    """Rebuild the model saved by train_deeplab (eval mode), without fetching any weights."""
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "model" not in saved or "settings" not in saved:
        raise ValueError(f"{model_path}: not a train_deeplab output ({{'model', 'settings'}})")
    model = build_deeplab(saved["settings"], pretrained="none")
    model.load_state_dict(saved["model"], strict=True)
    return model.to(device).eval()


def param_groups(model, lr):
    """(SGD param groups, their base lrs): trainable backbone params at lr, head weights at
    10x, head biases at 20x (DeepLab-v2's recipe). Weight decay is SGD's, on every group."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [(n, p) for n, p in model.head.named_parameters() if p.requires_grad]
    weights = [p for n, p in head if not n.endswith("bias")]
    biases = [p for n, p in head if n.endswith("bias")]
    base_lrs = [lr, lr * HEAD_WEIGHT_MULT, lr * HEAD_BIAS_MULT]
    groups = [{"params": params, "lr": group_lr}
              for params, group_lr in zip((backbone, weights, biases), base_lrs)]
    return groups, base_lrs


def predict_logits(model, images, size=None):
    """Logits upsampled bilinearly to `size` (default: the input's H x W)."""
    size = tuple(images.shape[-2:]) if size is None else tuple(size)
    return F.interpolate(model(images), size, mode="bilinear", align_corners=False)

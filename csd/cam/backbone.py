"""IRN's ResNet backbone: torchvision ResNet with output stride 16 and frozen BatchNorm."""

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from csd.data.transforms import MEAN, STD

WEIGHTS = {  # torchvision weights-API names for `pretrained: imagenet`
    18: "ResNet18_Weights.IMAGENET1K_V1",
    34: "ResNet34_Weights.IMAGENET1K_V1",
    50: "ResNet50_Weights.IMAGENET1K_V1",
    101: "ResNet101_Weights.IMAGENET1K_V1",
}


def load_resnet(depth, pretrained, strides=(2, 2, 2, 1), dilate_last=False):
    """A torchvision ResNet of `depth` with `strides` for layer1..layer4 (stem stride 4 fixed).

    pretrained: "imagenet" (torchvision weights API; needs the weight cache or internet),
    a path to a local state_dict file (offline clusters), a state_dict in torchvision's
    naming (e.g. `classifier_backbone`), or None / "none".
    dilate_last: replace the layer4 stride by dilation (DeepLab style) instead of dropping it.
    """
    if depth not in WEIGHTS:
        raise ValueError(f"backbone depth must be one of {sorted(WEIGHTS)}, got {depth}")
    build = getattr(torchvision.models, f"resnet{depth}")
    weights = WEIGHTS[depth] if pretrained == "imagenet" else None
    net = build(weights=weights)
    if isinstance(pretrained, dict):
        load_weights(net, pretrained, f"resnet{depth}", "the given state_dict")
    elif pretrained not in (None, "none", "imagenet"):
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_weights(net, state.get("state_dict", state), f"resnet{depth}", path)
    layers = [net.layer1, net.layer2, net.layer3, net.layer4]
    for layer, stride in zip(layers, strides):
        if stride == 1:
            set_stride_one(layer, dilation=2 if dilate_last and layer is net.layer4 else 1)
    return net


def load_weights(net, state, name, source):
    """Load a ResNet state_dict; only `fc.` may be missing (classifiers drop it)."""
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f"{source}: weights do not fit {name}: {err}") from None
    bad = [k for k in missing if not k.startswith("fc.")]
    if bad:
        raise ValueError(f"{source}: weights do not fit {name} (missing {bad[:5]}...)")


def set_stride_one(layer, dilation=1):
    block = layer[0]
    for conv in (getattr(block, "conv1", None), getattr(block, "conv2", None)):
        if conv is not None and conv.stride != (1, 1):
            conv.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)
    if dilation > 1:
        for blk in layer:
            for conv in blk.modules():
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


class Backbone(nn.Module):
    """Stages of a ResNet: stage1 = stem+layer1 (stride 4) ... stage4 = layer4 (stride 16).

    With `freeze_bn` (IRN's choice: small per-GPU batches, ImageNet statistics) BatchNorm
    layers always use their running statistics; their affine parameters stay learnable.
    Training from scratch (no ImageNet weights, e.g. on the synthetic benchmark) needs
    `freeze_bn=False`. `frozen_stages` stages get no gradient at all.
    """

    def __init__(self, depth=50, pretrained="imagenet", strides=(2, 2, 2, 1), frozen_stages=2,
                 freeze_bn=True, dilate_last=False):
        super().__init__()
        self.freeze_bn = freeze_bn
        net = load_resnet(depth, pretrained, strides, dilate_last)
        self.stage1 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.stage2, self.stage3, self.stage4 = net.layer2, net.layer3, net.layer4
        self.channels = [m[-1].conv3.out_channels if hasattr(m[-1], "conv3")
                         else m[-1].conv2.out_channels
                         for m in (net.layer1, net.layer2, net.layer3, net.layer4)]
        self.frozen_stages = frozen_stages
        for stage in self.stages()[:frozen_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)

    def stages(self):
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    def train(self, mode=True):
        super().train(mode)
        if not self.freeze_bn:
            return self
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x, all_stages=False):
        feats = []
        for stage in self.stages():
            x = stage(x)
            feats.append(x)
        return feats if all_stages else x


def normalize(images_uint8):
    """uint8 NHWC (numpy or tensor) -> ImageNet-normalised float NCHW tensor."""
    x = torch.as_tensor(images_uint8).float().div_(255)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    x = x.permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std

"""IRN's inter-pixel relation network (edge branch) and its training pairs and losses.

A frozen ResNet feeds a light edge branch that predicts a class-boundary map at stride 4.
Training never sees boundaries: for pixel pairs within `radius` on the stride-4 grid, the
affinity of a pair is 1 - (max boundary probability on the path between them), and the IR
label map (confident bg / classes / 255 unsure) says which pairs must be connected (same
label) and which separated (different labels). The random walk at inference
(csd.irn.random_walk) reads the same kind of affinities from the trained boundary map.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from csd.cam.backbone import Backbone
from csd.data.voc import IGNORE
from csd.irn.random_walk import affinity_maps, path_directions

EDGE_WIDTH = 32   # channels of each stage's 1x1 projection in IRN's edge branch
EDGE_GROUPS = 4   # GroupNorm groups of those projections
EPS = 1e-5        # IRN's log guard in the affinity losses


def _stage_stride(layer):
    return max(m.stride[0] for m in layer[0].modules() if isinstance(m, nn.Conv2d))


class EdgeNet(nn.Module):
    """Frozen backbone + IRN's edge branch; forward(x) -> edge logits [B, 1, ceil(H/4), ceil(W/4)].

    Five features as in IRN: the stem output (after max-pool) and the four ResNet stages,
    each projected to 32 channels (1x1 conv, GroupNorm, upsampled to stride 4, ReLU),
    concatenated and reduced to one logit by a 1x1 conv with bias.
    """

    def __init__(self, backbone_settings, pretrained=None):
        super().__init__()
        self.backbone = Backbone(depth=backbone_settings["depth"], pretrained=pretrained,
                                 strides=tuple(backbone_settings["strides"]),
                                 frozen_stages=4, freeze_bn=True)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        stem_channels = self.backbone.stage1[0].out_channels
        layers = [self.backbone.stage1[4], self.backbone.stage2, self.backbone.stage3,
                  self.backbone.stage4]
        strides, stride = [1], 1
        for layer in layers:
            stride *= _stage_stride(layer)
            strides.append(stride)
        self.upsample = strides  # each feature's stride relative to the stem (stride 4)
        self.edge_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, EDGE_WIDTH, 1, bias=False),
                          nn.GroupNorm(EDGE_GROUPS, EDGE_WIDTH))
            for c in [stem_channels] + list(self.backbone.channels))
        self.edge_out = nn.Conv2d(EDGE_WIDTH * 5, 1, 1, bias=True)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    def edge_parameters(self):
        return list(self.edge_layers.parameters()) + list(self.edge_out.parameters())

    def features(self, x):
        """The five frozen features (no graph is kept: the backbone never learns here)."""
        with torch.no_grad():
            stem = self.backbone.stage1[:4](x)
            feats = [stem, self.backbone.stage1[4](stem)]
            for stage in (self.backbone.stage2, self.backbone.stage3, self.backbone.stage4):
                feats.append(stage(feats[-1]))
        return feats

    def forward(self, x):
        feats = self.features(x)
        h, w = feats[0].shape[-2:]
        outs = []
        for feat, layer, factor in zip(feats, self.edge_layers, self.upsample):
            y = layer(feat)
            if factor > 1:
                # IRN: upsample by the stride ratio, then crop to the stride-4 grid
                y = F.interpolate(y, scale_factor=factor, mode="bilinear",
                                  align_corners=False)[..., :h, :w]
            outs.append(F.relu(y))
        return self.edge_out(torch.cat(outs, dim=1))


def build_irn(settings):
    """EdgeNet from train_irn settings, its backbone from settings["backbone"]["pretrained"]."""
    backbone = settings["backbone"]
    return EdgeNet(backbone, pretrained=backbone["pretrained"])


def load_irn(path, device="cpu"):
    """A trained EdgeNet from train_irn's output file, in eval mode on `device`."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "model" not in saved or "settings" not in saved:
        raise ValueError(f"{path}: not a train_irn output ({{'model', 'settings'}})")
    net = EdgeNet(saved["settings"]["backbone"], pretrained=None)
    net.load_state_dict(saved["model"], strict=True)
    return net.to(device).eval()


# ---- pixel pairs within a radius on fixed-size crops (IRN's training pairs) ----
# Directions and paths are the random walk's (csd.irn.random_walk.path_directions), so training
# and inference read affinities from the boundary map in the same way. As IRN's PathIndex,
# training uses only source pixels whose partners in every direction lie inside the crop:
# rows [0, h - m), columns [m, w - m), m = radius - 1 (the farthest path offset).

def _margin(radius):
    return int(radius) - 1


def _sources(x, margin):
    return x[..., :x.shape[-2] - margin, margin:x.shape[-1] - margin]


def edge_to_affinity(edge, radius):
    """edge probabilities [B, h, w] -> pair affinities [B, D, h - m, w - 2m], m = radius - 1.

    Affinity of a pair = 1 - max edge probability along its path (IRN), D directions in
    the order of path_directions(radius). Differentiable in `edge`.
    """
    margin = _margin(radius)
    b, h, w = edge.shape
    if h <= margin or w <= 2 * margin:
        raise ValueError(f"edge map {(h, w)} too small for pairs within radius {radius}")
    # The crops stacked vertically are one map for affinity_maps: a kept source's partner
    # and path never leave the source's own crop (they lie at most m rows below it).
    maps = affinity_maps(edge.reshape(b * h, w), radius)
    return _sources(maps.reshape(-1, b, h, w).transpose(0, 1), margin)


def _partner(x, dy, dx, margin):
    """x at (y + dy, x + dx) for every source pixel (y, x)."""
    h, w = x.shape[-2:]
    return x[..., dy:dy + h - margin, margin + dx:margin + dx + w - 2 * margin]


def pair_labels(label, radius):
    """IR labels at stride 4 [B, h, w] -> boolean pair sets (bg_pos, fg_pos, neg), each
    [B, D, h - m, w - 2m] aligned with edge_to_affinity. Pairs touching IGNORE are in none.
    """
    margin = _margin(radius)
    source = _sources(label, margin).unsqueeze(1)
    target = torch.stack([_partner(label, dy, dx, margin)
                          for (dy, dx), _ in path_directions(radius)], dim=1)
    valid = (source != IGNORE) & (target != IGNORE)
    same = source == target
    pos = same & valid
    return pos & (source == 0), pos & (source > 0), ~same & valid


def downsample_label(mask):
    """Crop label [B, H, W] -> the edge map's stride-4 grid [B, ceil(H/4), ceil(W/4)].

    IRN shrinks its crops' labels with PIL nearest x0.25, which reads the pixel nearest to
    each cell's centre: 4i + 2 on sides divisible by 4 (IRN's crops are). The same pixel
    here; on other sides the last cell, which may be cut short, reads the side's last pixel.
    """
    h, w = mask.shape[-2:]
    rows, cols = (torch.clamp(torch.arange((n + 3) // 4, device=mask.device) * 4 + 2,
                              max=n - 1) for n in (h, w))
    return mask.index_select(-2, rows).index_select(-1, cols)


def affinity_loss(aff, bg_pos, fg_pos, neg):
    """IRN's losses, each averaged over its pair set in the batch: pos -log(aff + eps),
    neg -log(1 + eps - aff). Returns (total, parts) with IRN's total
    (bg_pos / 2 + fg_pos / 2 + neg) / 2."""
    def mean_over(loss, mask):
        mask = mask.to(loss.dtype)
        return (loss * mask).sum() / (mask.sum() + EPS)

    pos_loss = -torch.log(aff + EPS)
    parts = {"bg_pos": mean_over(pos_loss, bg_pos),
             "fg_pos": mean_over(pos_loss, fg_pos),
             "neg": mean_over(-torch.log(1 + EPS - aff), neg)}
    total = (parts["bg_pos"] / 2 + parts["fg_pos"] / 2 + parts["neg"]) / 2
    return total, parts

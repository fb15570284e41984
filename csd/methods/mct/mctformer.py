"""MCTformer-V2: a timm VisionTransformer with one class token per class and a patch-token CAM
head, and its class maps.

- Tokens: 20 class tokens (each with its own positional embedding) before the patch tokens;
  the patch positional embedding is resampled to the input's grid (timm's dynamic size),
  inputs not divisible by the patch size are padded at the bottom/right (grid = ceil(H/p)).
- Logits, two heads, each trained with the multilabel soft margin loss: the class tokens'
  outputs averaged over the feature dimension (MCTformer), and a 3x3 conv on the patch
  tokens -> 20 maps -> global average pooling (MCTformer-V2's patch CAM). As in MCTformer,
  both read the last block's output without the final LayerNorm.
- Attention: every block's softmaxed attention is kept (timm's fused attention is switched
  off for that) and averaged over heads.
- Class maps: class-to-patch attention summed over the last `cam_layers` blocks times the
  patch CAM (raw = before its ReLU; the attention is >= 0, so the ReLU'd map is the fused
  CAM). `cam()` refines them with the patch-to-patch attention summed over all blocks.
- CSD's class maps (`decoupling_maps`) are the author's (PSD_WSSS engine.py): the refined
  maps with the patch CAM detached, so CSD's losses train the attention only.

The model exposes what CSD (csd.methods.csd.train) calls on CAMNet: `features`,
`logits_from_features`, `cam_from_features`, `decoupling_maps`, `classification_loss`, `cam`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer

from csd.data.voc import NUM_CLASSES
from csd.runtime.config import section

DEIT_SMALL = {"embed_dim": 384, "depth": 12, "num_heads": 6, "patch_size": 16}
TIMM_NAME = "deit_small_patch16_224"  # the timm weights behind `pretrained: imagenet`


def _keep_attention(dropout, inputs, output):
    """Forward hook on a block's attention dropout: its input is the softmaxed attention.
    A plain function storing on the module itself, so a deep copy (EMA teacher) keeps its own."""
    dropout.weights = inputs[0]


@dataclass
class Tokens:
    """What one pass of the transformer gives, sliceable along the batch like a tensor.
    cls [B, 20, D] class tokens, patches [B, D, h, w], attention [L, B, N, N] (head mean,
    N = 20 + h*w, class tokens first)."""

    cls: torch.Tensor
    patches: torch.Tensor
    attention: torch.Tensor

    def __getitem__(self, index):
        return Tokens(self.cls[index], self.patches[index], self.attention[:, index])


class MCTformer(VisionTransformer):
    def __init__(self, embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224,
                 drop_path=0.1, num_classes=NUM_CLASSES, cam_layers=3, refine=True):
        super().__init__(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                         depth=depth, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=True,
                         num_classes=0, global_pool="", class_token=False,
                         drop_path_rate=drop_path, dynamic_img_size=True,
                         dynamic_img_pad=True)
        self.n_tokens = num_classes
        self.cam_layers = cam_layers
        self.refine = refine
        self.norm = nn.Identity()  # MCTformer reads the blocks' output without the final norm
        self.class_tokens = nn.Parameter(torch.zeros(1, num_classes, embed_dim))
        self.class_pos = nn.Parameter(torch.zeros(1, num_classes, embed_dim))
        trunc_normal_(self.class_tokens, std=0.02)
        trunc_normal_(self.class_pos, std=0.02)
        self.head = nn.Conv2d(embed_dim, num_classes, 3, padding=1)
        for block in self.blocks:
            block.attn.fused_attn = False  # the fused kernel never forms the weights
            block.attn.attn_drop.register_forward_hook(_keep_attention)

    def no_weight_decay(self):
        return {"pos_embed", "class_tokens", "class_pos"}

    def features(self, x):
        """One pass: Tokens (class tokens, patch tokens on their grid, every block's attention)."""
        x = self.patch_embed(x)  # [B, h, w, D]: dynamic_img_size keeps the grid
        batch, h, w = x.shape[:3]
        x = self._pos_embed(x)  # patch position embedding resampled to h x w
        cls = (self.class_tokens + self.class_pos).expand(batch, -1, -1)
        x = self.norm_pre(torch.cat([cls, x], dim=1))
        attention = []
        for block in self.blocks:
            x = block(x)
            dropout = block.attn.attn_drop
            attention.append(dropout.weights.mean(dim=1))
            dropout.weights = None  # no graph left on the module (deep copies must work)
        x = self.norm(x)
        c = self.n_tokens
        patches = x[:, c:].transpose(1, 2).reshape(batch, -1, h, w)
        return Tokens(x[:, :c], patches, torch.stack(attention))

    def logits_from_features(self, tokens):
        """[B, 2, 20]: class-token logits and patch-CAM logits (global average pooling)."""
        return torch.stack([tokens.cls.mean(dim=-1), self.head(tokens.patches).mean(dim=(2, 3))],
                           dim=1)

    @staticmethod
    def classification_loss(logits, targets):
        """Multilabel soft margin loss of each head, summed (MCTformer-V2)."""
        return sum(F.multilabel_soft_margin_loss(logits[:, i], targets)
                   for i in range(logits.shape[1]))

    def forward(self, x):
        return self.logits_from_features(self.features(x))

    def class_attention(self, tokens):
        """[B, 20, h, w]: class-to-patch attention summed over the last `cam_layers` blocks."""
        c = self.n_tokens
        attention = tokens.attention[-self.cam_layers:].sum(dim=0)[:, :c, c:]
        return attention.reshape(tokens.patches.shape[0], c, *tokens.patches.shape[2:])

    def patch_affinity(self, tokens):
        """[B, hw, hw]: patch-to-patch attention summed over all blocks."""
        c = self.n_tokens
        return tokens.attention.sum(dim=0)[:, c:, c:]

    def cam_from_features(self, tokens, relu=True, classifier_grad=True):
        """Class maps [B, 20, h, w]: class attention x patch CAM (ReLU'd = MCTformer's fused
        CAM). classifier_grad=False: a loss on them does not train the conv head."""
        weight, bias = self.head.weight, self.head.bias
        if not classifier_grad:
            weight, bias = weight.detach(), bias.detach()
        maps = self.class_attention(tokens) * self.patch_cam(tokens, weight, bias)
        return F.relu(maps) if relu else maps

    def patch_cam(self, tokens, weight, bias):
        """The conv head on the patch tokens [B, 20, h, w] (MCTformer-V2's patch CAM)."""
        return F.conv2d(tokens.patches, weight, bias, padding=1)

    def refined(self, tokens, maps):
        """Class maps [B, 20, h, w] propagated by the patch affinity."""
        refined = torch.einsum("bnm,bcm->bcn", self.patch_affinity(tokens), maps.flatten(2))
        return refined.reshape(maps.shape)

    def decoupling_maps(self, tokens, classifier_grad=False):
        """CSD's class maps, the author's: the fused CAM with the patch CAM detached, refined
        by the patch affinity (whatever `refine` says), so a loss on them reaches the
        attention only; `classifier_grad` has no effect (nothing of the conv head is left)."""
        patch_cam = F.relu(self.patch_cam(tokens, self.head.weight, self.head.bias)).detach()
        return self.refined(tokens, self.class_attention(tokens) * patch_cam)

    def cam(self, x):
        """The seeds' CAM [B, 20, h, w]: fused CAM, refined by the patch affinity if `refine`."""
        tokens = self.features(x)
        maps = self.cam_from_features(tokens)
        return self.refined(tokens, maps) if self.refine else maps


def deit_to_mct(state, model):
    """A DeiT/timm ViT state dict (one cls token, maybe a distillation token) -> this model's:
    the cls token and its position embedding copied into every class token, the patch
    position embedding resampled to the model's grid; the classifier and final norm dropped."""
    state = dict(state)
    for key in [k for k in state if k.startswith(("head", "norm.", "fc_norm."))]:
        del state[key]
    if "cls_token" not in state or "pos_embed" not in state:
        raise ValueError("not a DeiT/ViT state dict: no cls_token / pos_embed")
    cls = state.pop("cls_token")
    prefix = 1 + int(state.pop("dist_token", None) is not None)
    pos = state.pop("pos_embed")
    c = model.n_tokens
    state["class_tokens"] = cls[:, :1].expand(1, c, -1).clone()
    state["class_pos"] = pos[:, :1].expand(1, c, -1).clone()
    old = int(round((pos.shape[1] - prefix) ** 0.5))
    state["pos_embed"] = resample_abs_pos_embed(pos[:, prefix:], new_size=model.patch_embed.grid_size,
                                                old_size=(old, old), num_prefix_tokens=0)
    return state


def load_pretrained(model, pretrained):
    """pretrained: "imagenet" (timm's DeiT-S weights; the model must be DeiT-S/16), a local
    .pth (a DeiT checkpoint, {"model": state_dict} or the state dict), or None."""
    if pretrained in (None, "none"):
        return model
    if pretrained == "imagenet":
        import timm

        if (model.embed_dim, len(model.blocks)) != (DEIT_SMALL["embed_dim"], DEIT_SMALL["depth"]):
            raise ValueError("pretrained: imagenet needs the DeiT-S shape "
                             f"{DEIT_SMALL} (or give a local .pth)")
        state = timm.create_model(TIMM_NAME, pretrained=True).state_dict()
        source = TIMM_NAME
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        source = path
    missing, unexpected = model.load_state_dict(deit_to_mct(state, model), strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the MCTformer (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    return model


def build_mct(model_settings, img_size, cam_layers=3, refine=True, pretrained=True):
    """MCTformer from a `train_mct.model` section; pretrained=False skips the weights
    (rebuilding a trained model)."""
    section(model_settings, "train_mct.model")
    model = MCTformer(embed_dim=model_settings["embed_dim"], depth=model_settings["depth"],
                      num_heads=model_settings["num_heads"],
                      patch_size=model_settings["patch_size"], img_size=img_size,
                      drop_path=model_settings["drop_path"], cam_layers=cam_layers,
                      refine=refine)
    return load_pretrained(model, model_settings["pretrained"]) if pretrained else model

"""IRN's classifier: ResNet backbone, global average pooling, bias-free 1x1 conv to 20 classes.

The same 1x1 conv applied before the pooling gives the class activation maps (CAMs): the
logits are the spatial mean of the CAM before its ReLU. CSD trains this network with an
extra loss on the CAMs, so `features` and `cam_from_features` are separate steps: one
backbone pass serves both the classification loss and the CAM loss.
"""

import torch.nn as nn
import torch.nn.functional as F

from csd.cam.backbone import Backbone
from csd.data.voc import NUM_CLASSES
from csd.runtime.config import section


def build_backbone(settings_backbone):
    """A csd.cam.backbone.Backbone from a train_cam.backbone settings section."""
    section(settings_backbone, "train_cam.backbone")
    return Backbone(depth=settings_backbone["depth"],
                    pretrained=settings_backbone["pretrained"],
                    strides=tuple(settings_backbone["strides"]),
                    frozen_stages=settings_backbone["frozen_stages"],
                    freeze_bn=settings_backbone["freeze_bn"])


class CAMNet(nn.Module):
    def __init__(self, settings_backbone, num_classes=NUM_CLASSES):
        super().__init__()
        self.backbone = build_backbone(settings_backbone)
        self.classifier = nn.Conv2d(self.backbone.channels[-1], num_classes, 1, bias=False)

    def features(self, x):
        """Last-stage features [B, C, H/16, W/16] (output stride 16 with strides 2,2,2,1)."""
        return self.backbone(x)

    def logits_from_features(self, features):
        # IRN pools first, then classifies; the conv is linear, so this is the mean CAM logit.
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def cam_from_features(self, features, relu=True, classifier_grad=True):
        """Class maps [B, 20, h, w]: the classifier applied at every position (ReLU'd = CAM).
        classifier_grad=False: a loss on these maps trains the features only."""
        weight = self.classifier.weight if classifier_grad else self.classifier.weight.detach()
        maps = F.conv2d(features, weight)
        return F.relu(maps) if relu else maps

    def decoupling_maps(self, features, classifier_grad=False):
        """CSD's class maps (csd.methods.csd.train): the raw maps, the classifier trained by them
        only with `classifier_grad`."""
        return self.cam_from_features(features, relu=False, classifier_grad=classifier_grad)

    def forward(self, x):
        return self.logits_from_features(self.features(x))

    @staticmethod
    def classification_loss(logits, targets):
        return F.multilabel_soft_margin_loss(logits, targets)

    def cam(self, x):
        return self.cam_from_features(self.features(x))

    def param_groups(self):
        """(trainable backbone params, classifier params): the classifier gets a larger lr."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        classifier = [p for p in self.classifier.parameters() if p.requires_grad]
        return backbone, classifier

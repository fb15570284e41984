"""What the method tests share: a tiny VOC-like tree whose ground truth serves as round-0
masks, and a ResNet classifier's settings to train on it."""

import numpy as np
import pytest

from csd.data.voc import load_labels
from tests.conftest import make_voc

BACKBONE = {"depth": 18, "pretrained": None, "strides": [2, 2, 2, 1], "frozen_stages": 0,
            "freeze_bn": False}
TRAIN = {"seed": 1, "backbone": BACKBONE, "batch_size": 4, "epochs": 2, "lr": 0.01,
         "classifier_lr_mult": 10, "weight_decay": 1e-4, "momentum": 0.9, "poly_power": 0.9,
         "resize_long": [40, 56], "crop": 32, "flip": True, "num_workers": 0}
CDA = {"area_range": [0.01, 0.7], "rotation": 90, "size_range": [0.2, 0.7],
       "paste_fraction": 0.5}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    ids, _ = make_voc(root, n=12, seed=5)
    return root, ids, load_labels(root / "labels.csv")


def onehot(*classes):
    v = np.zeros(20)
    v[list(classes)] = 1
    return v

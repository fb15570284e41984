"""DeepLab models, lr groups, train_deeplab (incl. resume), multi-scale inference, the CRF
and the test-server archive, on tiny inputs."""

import json
import math
import tarfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from csd.data.voc import ARCHIVE_DIR, load_label_png, pack_test_archive, palette
from csd.runtime.io import save_png, save_torch
from csd.seg.deeplab import (
    DeepLabV2,
    build_deeplab,
    load_deeplab,
    param_groups,
    predict_logits,
)
from csd.seg.infer_seg import crf_refine, infer_deeplab, segment
from csd.seg.train_seg import epochs_for, train_deeplab
from tests.cam.test_cam import Killed, kill_after_first_epoch
from tests.conftest import RECORD, layer_dtypes, make_voc

BACKBONE = {"depth": 18, "pretrained": None, "freeze_bn": True}
MODEL = {"arch": "deeplab_v2", "backbone": BACKBONE, "aspp_rates": [6, 12, 18, 24]}
# 8 images at batch 4: 2 steps per epoch, so 4 iterations = 2 epochs
TRAIN = dict(MODEL, backbone=dict(BACKBONE, freeze_bn=False), seed=0,
             batch_size=4, iterations=4, lr=2.5e-4, weight_decay=5e-4,
             momentum=0.9, poly_power=0.9, scales=[0.5, 1.5], crop=48, flip=True,
             num_workers=0)
CRF = {"gaussian_sxy": 1, "gaussian_compat": 3, "bilateral_sxy": 67, "bilateral_srgb": 3,
       "bilateral_compat": 4, "iterations": 10}  # method.md's DeepLab inference CRF
INFER = {"scales": [1.0, 0.75, 0.5], "flip": True, "crf": CRF}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def v2():
    torch.manual_seed(0)
    return build_deeplab(MODEL).eval()


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    ids, _ = make_voc(root)
    return root, ids


@pytest.fixture(scope="module")
def trained(voc, tmp_path_factory):
    root, ids = voc
    out = tmp_path_factory.mktemp("train")
    history = train_deeplab(root, ids, root / "SegmentationClass", out / "seg.pth",
                            out / "history.json", TRAIN)
    return out, history


@pytest.mark.parametrize("size", [(65, 49), (64, 48), (33, 71)])
def test_v2_output_stride_8(v2, size):
    with torch.no_grad():
        logits = v2(torch.randn(2, 3, *size))
        assert logits.shape == (2, 21, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
        assert predict_logits(v2, torch.randn(1, 3, *size)).shape == (1, 21, *size)


def test_v2_is_dilated_2_and_4():
    model = DeepLabV2(50, None, rates=(6, 12))
    layer3, layer4 = model.backbone[6], model.backbone[7]
    for layer, dilation in ((layer3, 2), (layer4, 4)):
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
        assert {c.dilation for c in convs if c.kernel_size == (3, 3)} == {(dilation, dilation)}
    assert [c.dilation for c in model.head] == [(6, 6), (12, 12)]
    assert all(c.out_channels == 21 and c.bias is not None for c in model.head)


def test_v2_logits_are_the_sum_of_the_aspp_branches(v2):
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        feats = v2.backbone(x)
        branches = [conv(feats) for conv in v2.head]
        assert torch.allclose(v2(x), torch.stack(branches).sum(0), atol=1e-6)


def test_v3_builds_with_21_classes_at_stride_8():
    torch.manual_seed(0)
    model = build_deeplab({"arch": "deeplab_v3", "backbone": {"depth": 50, "pretrained": None, "freeze_bn": False}})
    assert model.head[-1].out_channels == 21
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 41, 33)).shape == (1, 21, 6, 5)
    with pytest.raises(ValueError, match="depth"):
        build_deeplab({"arch": "deeplab_v3", "backbone": BACKBONE})


def test_bad_arch_names_the_key():
    with pytest.raises(ValueError, match="'arch'.*deeplab_v4"):
        build_deeplab(dict(MODEL, arch="deeplab_v4"))
    with pytest.raises(KeyError, match="aspp_rates"):
        build_deeplab({k: v for k, v in MODEL.items() if k != "aspp_rates"})


@pytest.mark.parametrize("arch", ["deeplab_v2", "deeplab_v3"])
def test_lr_groups_cover_trainable_params_once(v2, arch):
    model = v2 if arch == "deeplab_v2" else build_deeplab(
        {"arch": arch, "backbone": {"depth": 50, "pretrained": None, "freeze_bn": False}})
    groups, base_lrs = param_groups(model, 1e-3)
    assert base_lrs == pytest.approx([1e-3, 1e-2, 2e-2])
    assert [g["lr"] for g in groups] == base_lrs
    ids = [[id(p) for p in g["params"]] for g in groups]
    flat = [i for group in ids for i in group]
    assert len(flat) == len(set(flat))  # no parameter in two groups
    assert set(flat) == {id(p) for p in model.parameters() if p.requires_grad}
    head = dict(model.head.named_parameters())
    assert set(ids[1]) == {id(p) for n, p in head.items() if not n.endswith("bias")}
    assert set(ids[2]) == {id(p) for n, p in head.items() if n.endswith("bias")} != set()
    assert set(ids[0]) == {id(p) for p in model.backbone.parameters() if p.requires_grad}
    torch.optim.SGD(groups, lr=1e-3, momentum=0.9, weight_decay=5e-4)  # usable as is


def test_v2_batchnorm_is_frozen(v2):
    bns = [m for m in v2.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(p.requires_grad for m in bns for p in m.parameters())
    before = {k: v.clone() for k, v in v2.state_dict().items()}
    v2.train()
    try:
        assert v2.training and not any(m.training for m in bns)
        v2(torch.randn(2, 3, 40, 40)).sum().backward()
        assert all(p.grad is None for m in bns for p in m.parameters())
        after = v2.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # running stats kept
    finally:
        v2.zero_grad(set_to_none=True)
        v2.eval()


def test_v2_batchnorm_trains_when_not_frozen():
    # from scratch there are no statistics to freeze: BatchNorm must learn them
    model = build_deeplab(dict(MODEL, backbone=dict(BACKBONE, freeze_bn=False))).train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 40, 40))
    assert bn.training and bn.weight.requires_grad
    assert not torch.equal(before, bn.running_mean)


def test_train_deeplab_writes_model_and_history(trained):
    out, history = trained
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(set(r) == RECORD and math.isfinite(r["loss"]) for r in history)
    assert history[1]["lr"] < history[0]["lr"] < TRAIN["lr"]
    assert json.loads((out / "history.json").read_text()) == history
    assert not (out / "seg.pth.ckpt").exists()
    saved = torch.load(out / "seg.pth", weights_only=True)
    assert saved["settings"] == dict(TRAIN, epochs=2)
    torch.manual_seed(0)
    fresh = build_deeplab(MODEL)
    assert not torch.equal(fresh.state_dict()["head.0.weight"], saved["model"]["head.0.weight"])
    model = load_deeplab(out / "seg.pth")
    assert not model.training and isinstance(model, DeepLabV2)


def test_train_deeplab_resume_equals_uninterrupted(voc, trained, tmp_path, monkeypatch):
    root, ids = voc
    args = (root, ids, root / "SegmentationClass", tmp_path / "seg.pth",
            tmp_path / "history.json", TRAIN)
    kill_after_first_epoch(monkeypatch)
    with pytest.raises(Killed):
        train_deeplab(*args)
    assert (tmp_path / "seg.pth.ckpt").exists() and not (tmp_path / "seg.pth").exists()
    # SGD with the settings' momentum and weight decay
    groups = torch.load(tmp_path / "seg.pth.ckpt", weights_only=False)["optimizer"]["param_groups"]
    assert {(g["momentum"], g["weight_decay"]) for g in groups} == {
        (TRAIN["momentum"], TRAIN["weight_decay"])}
    monkeypatch.undo()
    torch.manual_seed(12345)  # the restarted process starts from other RNG states
    assert train_deeplab(*args) == trained[1]
    resumed = torch.load(tmp_path / "seg.pth", weights_only=True)["model"]
    uninterrupted = torch.load(trained[0] / "seg.pth", weights_only=True)["model"]
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_train_deeplab_names_missing_mask(voc, tmp_path):
    root, ids = voc
    masks = tmp_path / "masks"
    for image_id in ids[1:]:
        save_png(masks / f"{image_id}.png", np.zeros((8, 8), np.uint8), palette())
    with pytest.raises(FileNotFoundError, match=f"{masks}: no pseudo mask PNG for 1 ids.*{ids[0]}"):
        train_deeplab(root, ids, masks, tmp_path / "m.pth", tmp_path / "h.json", TRAIN)
    args = (root, ids, root / "SegmentationClass", tmp_path / "m.pth", tmp_path / "h.json")
    with pytest.raises(ValueError, match="settings 'train_seg' counts 'iterations'; drop its "
                       "'epochs' key"):
        train_deeplab(*args, dict(TRAIN, epochs=3))
    with pytest.raises(KeyError, match=r"settings 'train_seg' lacks keys \['lr'\]"):
        train_deeplab(*args, {k: v for k, v in TRAIN.items() if k != "lr"})
    with pytest.raises(ValueError, match="starts from no weights .* BatchNorm would keep random "
                       "statistics; set freeze_bn false"):
        train_deeplab(*args, dict(TRAIN, backbone=dict(BACKBONE, pretrained="none")))
    with pytest.raises(ValueError, match="train_seg: 8 images are fewer than batch_size 9"):
        train_deeplab(*args, dict(TRAIN, batch_size=9))


def test_epochs_for_rounds_iterations_to_whole_epochs_of_full_batches():
    assert epochs_for(20000, 10582, 10) == 19  # the recipe: 1058 steps per epoch
    assert epochs_for(10, 11, 4) == 5  # 2 full batches per epoch (the last 3 images dropped)
    assert epochs_for(1, 8, 4) == 1  # at least one epoch
    assert epochs_for(5, 4, 4) == 5  # one step per epoch
    assert epochs_for(5, 3, 4) == 5  # no full batch: counted as one step


def random_image(h=40, w=52, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_segment_shape_and_flip_equivariance(v2):
    image = random_image()
    mirror = np.ascontiguousarray(image[:, ::-1])
    probs = segment(v2, image, INFER)
    assert probs.shape == (21, 40, 52) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(segment(v2, mirror, INFER), probs[:, :, ::-1], atol=1e-5)
    # the flip pass is what makes it so: one pass alone is not mirror-symmetric
    one = dict(INFER, scales=[1.0], flip=False)
    assert not np.allclose(segment(v2, mirror, one), segment(v2, image, one)[:, :, ::-1],
                           atol=1e-4)


def test_segment_fuses_scales_by_max(v2):
    image = random_image(seed=1)

    def single(scale):
        return segment(v2, image, dict(INFER, scales=[scale], flip=False))

    fused = segment(v2, image, dict(INFER, scales=[1.0, 0.5], flip=False))
    expected = np.maximum(single(1.0), single(0.5))
    np.testing.assert_allclose(fused, expected / expected.sum(0, keepdims=True), atol=1e-5)
    assert not np.allclose(fused, (single(1.0) + single(0.5)) / 2, atol=1e-4)  # not the mean


def test_crf_keeps_a_clean_prediction():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30] = (200, 30, 30)
    image[:, 30:] = (20, 40, 190)
    labels = np.zeros((40, 60), np.int64)
    labels[:, 30:] = 15
    probs = np.full((21, 40, 60), 0.1 / 20, np.float32)
    np.put_along_axis(probs, labels[None], 0.9, axis=0)
    refined = crf_refine(image, probs, CRF)
    assert refined.shape == probs.shape
    np.testing.assert_array_equal(refined.argmax(axis=0), labels)
    with pytest.raises(KeyError, match="bilateral_srgb"):
        crf_refine(image, probs, {k: v for k, v in CRF.items() if k != "bilateral_srgb"})


def test_infer_deeplab_writes_pngs_and_archive(voc, v2, tmp_path):
    root, ids = voc
    model_path = tmp_path / "seg.pth"
    save_torch(model_path, {"model": v2.state_dict(), "settings": TRAIN})
    raw, crf = tmp_path / "raw", tmp_path / "crf"
    settings = dict(INFER, scales=[1.0, 0.5])
    assert infer_deeplab(root, ids[:2], model_path, raw, crf, settings) == 2
    for image_id in ids[:2]:
        h, w = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        for folder in (raw, crf):
            assert Image.open(folder / f"{image_id}.png").mode == "P"
            mask = load_label_png(folder / f"{image_id}.png")
            assert mask.shape == (h, w) and mask.max() <= 20
    (crf / f"{ids[1]}.png").unlink()  # a job killed between the two writes
    assert infer_deeplab(root, ids[:2], model_path, raw, crf, settings) == 1
    assert not list(tmp_path.rglob("*.part"))

    archive = tmp_path / "out" / "results.tgz"
    names = pack_test_archive(crf, ids[:2], archive)
    expected = [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in ids[:2]]
    assert names == expected and ARCHIVE_DIR in expected[0]
    with tarfile.open(archive, "r:gz") as tar:
        assert tar.getnames() == expected
        data = tar.extractfile(expected[0]).read()
    assert data == (crf / f"{ids[0]}.png").read_bytes()
    with pytest.raises(FileNotFoundError, match=ids[2]):
        pack_test_archive(crf, ids[:3], tmp_path / "bad.tgz")
    assert not (tmp_path / "bad.tgz").exists()


def test_train_and_infer_deeplab_compute_in_bf16(voc, tmp_path):
    root, ids = voc
    with layer_dtypes() as seen:
        history = train_deeplab(root, ids, root / "SegmentationClass", tmp_path / "seg.pth",
                                tmp_path / "h.json", dict(TRAIN, iterations=2),
                                precision="bf16")
    assert seen == {torch.bfloat16} and history[0]["precision"] == "bf16"
    predictions = {}
    for setting in ("bf16", "fp32"):
        with layer_dtypes() as seen:
            assert infer_deeplab(root, ids[:1], tmp_path / "seg.pth", tmp_path / setting,
                                 tmp_path / f"{setting}_crf", INFER, precision=setting) == 1
        assert seen == {torch.bfloat16 if setting == "bf16" else torch.float32}
        predictions[setting] = load_label_png(tmp_path / setting / f"{ids[0]}.png")
    assert (predictions["bf16"] == predictions["fp32"]).mean() > 0.9

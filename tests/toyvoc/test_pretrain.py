"""Procedural pretraining (csd.toyvoc.pretrain) and the CAM-cells statistic (csd.cam.cam_cells)."""

import numpy as np
import pytest
import torch

from csd.cam.backbone import load_resnet
from csd.cam.cam_cells import cam_cells, output_stride
from csd.cam.cam_net import CAMNet
from csd.data.voc import CLASSES, IGNORE, palette
from csd.runtime.io import load_json, save_png
from csd.methods.mct.mctformer import build_mct
from csd.toyvoc.pretrain import NUM_TARGETS, pretrain_backbone, pretrain_vit, render_set
from csd.toyvoc.world import CONTEXTS, plan_image
from tests.conftest import layer_dtypes

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = dict(seed=1000, size_min=48, size_max=64, context_strength=0.9,
             single_label_fraction=0.5, max_classes=3, max_instances=4, object_min_frac=0.05,
             object_max_frac=0.3, min_visible_frac=0.02, void_width=2, jpeg_quality=90)
SETTINGS = dict(seed=0, world=WORLD, n_images=48, depth=18, batch_size=8, epochs=10, lr=0.1,
                momentum=0.9, weight_decay=1e-4, poly_power=0.9, resize_long=[48, 64], crop=48,
                flip=True, num_workers=0)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    history = pretrain_backbone(out / "resnet18.pth", out / "model.pt", out / "history.json",
                                SETTINGS)
    return out, history


def test_render_set_labels_each_image_with_its_classes_and_context():
    images, targets = render_set(WORLD, 12)
    assert len(images) == 12 and targets.shape == (12, NUM_TARGETS)
    for index, (image, target) in enumerate(zip(images, targets)):
        plan = plan_image(dict(WORLD, n_train=12), index)
        assert image.shape == (plan["height"], plan["width"], 3) and image.dtype == np.uint8
        context = np.zeros(len(CONTEXTS))
        context[plan["context"]] = 1
        assert np.array_equal(target[len(CLASSES):], context)
        # every drawn class is kept or dropped as a whole instance; the main one is on top
        classes = set(np.flatnonzero(target[:len(CLASSES)]))
        assert plan["main"] in classes and classes <= set(plan["classes"])


def test_render_set_is_the_same_in_worker_processes():
    images, targets = render_set(WORLD, 10)
    parallel_images, parallel_targets = render_set(WORLD, 10, workers=2)
    assert np.array_equal(targets, parallel_targets)
    assert all(np.array_equal(a, b) for a, b in zip(images, parallel_images, strict=True))


def test_render_set_depends_on_the_generator_seed():
    first, _ = render_set(WORLD, 4)
    again, _ = render_set(WORLD, 4)
    other, _ = render_set(dict(WORLD, seed=1001), 4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))


VIT_MODEL = dict(embed_dim=48, depth=2, num_heads=3, patch_size=8, drop_path=0.0)
VIT = dict(seed=0, world=WORLD, n_images=48, model=VIT_MODEL, batch_size=4, epochs=20,
           lr=1e-3, min_lr=1e-5, warmup_lr=1e-6, warmup_epochs=1, weight_decay=0.05,
           resize_long=[48, 64], crop=32, flip=True, num_workers=0)


@pytest.fixture(scope="module")
def pretrained_vit(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain_vit")
    history = pretrain_vit(out / "vit.pth", out / "model.pt", out / "history.json", VIT)
    return out, history


@pytest.mark.parametrize("pretrain, settings", [(pretrain_backbone, SETTINGS),
                                                (pretrain_vit, VIT)])
def test_pretraining_refuses_the_benchmarks_own_generator_seed(tmp_path, pretrain, settings):
    with pytest.raises(ValueError, match="dataset.toyvoc.seed"):
        pretrain(tmp_path / "b.pth", tmp_path / "m.pt", tmp_path / "h.json", settings,
                 benchmark_seed=WORLD["seed"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fixture, factor", [("pretrained", 0.75), ("pretrained_vit", 0.95)])
def test_pretraining_learns(request, fixture, factor):
    _, history = request.getfixturevalue(fixture)
    settings = SETTINGS if fixture == "pretrained" else VIT
    assert len(history) == settings["epochs"]
    # The best constant predictor (each target's frequency) scores the mean binary entropy
    # of the targets; the trained network must do better on its own 48 images.
    _, targets = render_set(WORLD, settings["n_images"])
    p = targets.mean(0).clip(1e-6, 1 - 1e-6)
    constant = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    assert history[-1]["loss"] < factor * constant
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_vit_output_is_a_deit_file_that_mctformer_loads(pretrained_vit):
    """The ViT's weights without its head, which train_mct.model.pretrained loads: every block,
    the class token into each of the 20, the position table resampled to the larger grid."""
    out, _ = pretrained_vit
    state = torch.load(out / "vit.pth", weights_only=True)
    assert not any(k.startswith("head.") for k in state)
    assert state["pos_embed"].shape == (1, 1 + (VIT["crop"] // 8) ** 2, 48)
    model = build_mct(dict(VIT_MODEL, pretrained=str(out / "vit.pth")), img_size=64)
    for key in ("blocks.1.attn.qkv.weight", "blocks.0.mlp.fc1.bias", "patch_embed.proj.weight"):
        assert torch.equal(model.state_dict()[key], state[key]), key
    assert torch.equal(model.class_tokens, state["cls_token"].expand(1, 20, 48))
    assert model.pos_embed.shape == (1, 64, 48)  # 4x4 table at crop 32 -> 8x8 grid at 64
    # against a fresh model: the pretraining changed the weights
    fresh = build_mct(dict(VIT_MODEL, pretrained=None), img_size=64)
    assert not torch.equal(fresh.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)
    # a train_mct shape that is not the file's is refused, naming the file
    with pytest.raises((ValueError, RuntimeError), match="vit.pth|size mismatch"):
        build_mct(dict(VIT_MODEL, embed_dim=96, pretrained=str(out / "vit.pth")), img_size=64)


def test_output_is_a_torchvision_state_dict_that_backbone_pretrained_loads(pretrained):
    out, _ = pretrained
    state = torch.load(out / "resnet18.pth", weights_only=True)
    assert not any(k.startswith("fc.") for k in state)
    net = load_resnet(18, str(out / "resnet18.pth"))
    assert torch.equal(net.state_dict()["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    # as train_cam uses it: IRN's strides, the weights from the file, BN statistics too
    cam = CAMNet({"depth": 18, "pretrained": str(out / "resnet18.pth"), "strides": [2, 2, 1, 1],
                  "frozen_stages": 2, "freeze_bn": True})
    assert torch.equal(cam.state_dict()["backbone.stage4.1.bn2.running_var"],
                       state["layer4.1.bn2.running_var"])
    assert not torch.equal(state["layer4.1.bn2.running_var"], torch.ones_like(
        state["layer4.1.bn2.running_var"]))


def test_output_stride_ignores_layer1():
    assert output_stride([2, 2, 2, 1]) == 16
    assert output_stride([1, 2, 2, 2]) == 32
    assert output_stride([2, 2, 1, 1]) == 8


def test_cam_cells_counts_labelled_object_pixels_at_the_training_scale(tmp_path):
    # a 64x32 image (long side 64) trained at long side 32..96 (mean 64: scale 1), stride 16
    objects = np.zeros((32, 64), np.uint8)
    objects[0:16, 0:16] = 1           # 256 px = 1 cell
    objects[16:32, 0:32] = 2          # 512 px = 2 cells
    objects[16:32, 30:32] = IGNORE    # ... minus the void band: 480 px
    objects[0:8, 40:48] = IGNORE      # void alone is no object
    (tmp_path / "SegmentationObject").mkdir()
    save_png(tmp_path / "SegmentationObject" / "a.png", objects, palette())
    small = objects[::2, ::2].copy()  # the same picture at half size: scale 2, same cells
    save_png(tmp_path / "SegmentationObject" / "b.png", small, palette())
    stats = cam_cells(tmp_path, ["a", "b"], {"resize_long": [32, 96], "crop": 40,
                                             "strides": [2, 2, 2, 1]}, tmp_path / "c.json")
    assert stats["objects"] == 4 and stats["output_stride"] == 16
    assert stats["crop_grid"] == [3, 3]
    cells_a = [256 / 256, 480 / 256]
    cells_b = [64 * 4 / 256, 120 * 4 / 256]
    assert stats["mean"] == pytest.approx(np.mean(cells_a + cells_b))
    assert stats["median"] == pytest.approx(np.median(cells_a + cells_b))
    assert load_json(tmp_path / "c.json") == stats


def test_cam_cells_names_a_missing_instance_mask(tmp_path):
    (tmp_path / "SegmentationObject").mkdir()
    with pytest.raises(FileNotFoundError, match="nope.png"):
        cam_cells(tmp_path, ["nope"], {"resize_long": [32, 96], "crop": 40,
                                       "strides": [2, 2, 2, 1]}, tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_pretraining_computes_in_bf16_and_saves_float32_weights(tmp_path):
    with layer_dtypes() as seen:
        history = pretrain_backbone(tmp_path / "b.pth", tmp_path / "m.pt", tmp_path / "h.json",
                                    dict(SETTINGS, n_images=16, epochs=1), precision="bf16")
    assert seen == {torch.bfloat16} and history[0]["precision"] == "bf16"
    state = torch.load(tmp_path / "b.pth", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
    assert all(v.is_contiguous() for v in state.values())  # no channels-last leftovers
    load_resnet(18, str(tmp_path / "b.pth"))

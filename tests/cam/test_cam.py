"""CAMNet, train_cam (incl. resume) and make_cams on a tiny generated VOC-like tree."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from csd.cam.cam_net import CAMNet
from csd.cam.make_cam import make_cams, multiscale_cam, normalize_max
from csd.cam.train_cam import load_cam_net, train_cam
from csd.data.transforms import eval_transform, rescale
from csd.runtime.io import save_npz, save_torch
from csd.runtime.training import Checkpoint, epoch_loader
from tests.conftest import layer_dtypes, make_voc

BACKBONE = {"depth": 18, "pretrained": None, "strides": [2, 2, 2, 1], "frozen_stages": 1,
            "freeze_bn": False}
TRAIN = {"seed": 3, "backbone": BACKBONE, "batch_size": 4, "epochs": 2, "lr": 0.01,
         "classifier_lr_mult": 10, "weight_decay": 1e-4, "momentum": 0.9, "poly_power": 0.9,
         "resize_long": [40, 56], "crop": 32, "flip": True, "num_workers": 0}
MAKE_CAM = {"scales": [1.0, 0.5, 1.5], "flip": True}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    ids, labels = make_voc(root)
    return root, ids, labels


@pytest.fixture(scope="module")
def trained(voc, tmp_path_factory):
    root, ids, _ = voc
    out = tmp_path_factory.mktemp("train")
    history = train_cam(root, ids, root / "labels.csv", out / "cam.pth", out / "history.json",
                        TRAIN)
    return out, history


def test_camnet_shapes_stride16():
    model = CAMNet(BACKBONE).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 48)).shape == (2, 20)
        assert model.cam(torch.randn(2, 3, 64, 48)).shape == (2, 20, 4, 3)
        # odd sizes: every stride-2 step rounds up
        assert model.cam(torch.randn(1, 3, 50, 37)).shape == (1, 20, 4, 3)


def test_param_groups_disjoint_cover_trainable_and_frozen_stages_get_no_grad():
    model = CAMNet(dict(BACKBONE, frozen_stages=2))
    backbone, classifier = model.param_groups()
    ids_b, ids_c = {id(p) for p in backbone}, {id(p) for p in classifier}
    assert not ids_b & ids_c
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert ids_b | ids_c == trainable
    assert ids_c == {id(model.classifier.weight)} and model.classifier.bias is None
    frozen = [p for s in model.backbone.stages()[:2] for p in s.parameters()]
    assert frozen and not {id(p) for p in frozen} & trainable

    model.train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in frozen)
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.backbone.stage3.parameters())
    assert model.classifier.weight.grad.abs().sum() > 0


def test_cam_is_relu_of_hand_set_linear_head():
    torch.manual_seed(0)
    model = CAMNet(BACKBONE).eval()
    weight = torch.randn(20, model.backbone.channels[-1])
    with torch.no_grad():
        model.classifier.weight.copy_(weight[:, :, None, None])
        x = torch.randn(2, 3, 64, 64)
        features = model.backbone(x)
        expected = torch.relu(torch.einsum("kc,bchw->bkhw", weight, features))
        assert torch.allclose(model.cam(x), expected, atol=1e-4)
        assert (expected == 0).any() and (expected > 0).any()  # the ReLU matters here
        # logits = pooled features through the same weights = mean of the pre-ReLU map
        logits = torch.einsum("kc,bc->bk", weight, features.mean(dim=(2, 3)))
        assert torch.allclose(model(x), logits, atol=1e-4)
        pre = model.cam_from_features(features, relu=False).mean(dim=(2, 3))
        assert torch.allclose(pre, logits, atol=1e-4)


def test_train_cam_two_epochs(voc, trained):
    out, history = trained
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in history)
    assert history[1]["lr"] < history[0]["lr"] < TRAIN["lr"]  # poly decay per iteration
    assert json.loads((out / "history.json").read_text()) == history
    assert not (out / "cam.pth.ckpt").exists()
    saved = torch.load(out / "cam.pth", weights_only=True)
    assert saved["settings"] == TRAIN
    model = load_cam_net(out / "cam.pth")
    assert not model.training
    fresh = CAMNet(BACKBONE)
    changed = [k for k, v in fresh.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, saved["model"][k])]
    assert "classifier.weight" in changed
    # frozen stage 1 keeps its weights (freshly built with the same seed)
    torch.manual_seed(TRAIN["seed"])
    fresh = CAMNet(BACKBONE)
    assert torch.equal(fresh.state_dict()["backbone.stage1.0.weight"],
                       saved["model"]["backbone.stage1.0.weight"])


class Killed(Exception):
    pass


def kill_after_first_epoch(monkeypatch):
    real_save = Checkpoint.save

    def save_then_die(self, epoch, *args):
        real_save(self, epoch, *args)
        if epoch == 0:
            raise Killed

    monkeypatch.setattr(Checkpoint, "save", save_then_die)


def test_train_cam_resume_equals_uninterrupted(voc, trained, tmp_path, monkeypatch, capsys):
    root, ids, _ = voc
    uninterrupted = torch.load(trained[0] / "cam.pth", weights_only=True)["model"]
    kill_after_first_epoch(monkeypatch)
    args = (root, ids, root / "labels.csv", tmp_path / "cam.pth", tmp_path / "history.json",
            TRAIN)
    with pytest.raises(Killed):
        train_cam(*args)
    assert (tmp_path / "cam.pth.ckpt").exists() and not (tmp_path / "cam.pth").exists()
    # the optimizer ran its last step of epoch 1 (step 1 of 4) at the poly lr of each group
    groups = torch.load(tmp_path / "cam.pth.ckpt", weights_only=False)["optimizer"][
        "param_groups"]
    poly = (1 - 1 / 4) ** 0.9
    assert [g["lr"] for g in groups] == pytest.approx([TRAIN["lr"] * poly,
                                                       TRAIN["lr"] * 10 * poly])
    monkeypatch.undo()
    capsys.readouterr()
    torch.manual_seed(12345)  # the restarted process starts from other RNG states
    history = train_cam(*args)
    assert "train_cam: resuming after epoch 1" in capsys.readouterr().err
    assert history == trained[1]
    resumed = torch.load(tmp_path / "cam.pth", weights_only=True)["model"]
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_train_cam_discards_checkpoint_of_other_settings(voc, tmp_path, monkeypatch, capsys):
    root, ids, _ = voc
    kill_after_first_epoch(monkeypatch)
    paths = (tmp_path / "cam.pth", tmp_path / "history.json")
    with pytest.raises(Killed):
        train_cam(root, ids, root / "labels.csv", *paths, TRAIN)
    monkeypatch.undo()
    capsys.readouterr()
    other = dict(TRAIN, lr=0.02, epochs=1)  # resuming would skip training entirely
    history = train_cam(root, ids, root / "labels.csv", *paths, other)
    assert (f"discarding {paths[0]}.ckpt: written for other settings or images"
            in capsys.readouterr().err)
    # 8 images / batch 4 = 2 steps: the last lr of the new schedule, not the killed run's
    assert len(history) == 1
    assert history[0]["lr"] == pytest.approx(0.02 * (1 - 1 / 2) ** 0.9)
    assert torch.load(paths[0], weights_only=True)["settings"] == other
    assert not list(tmp_path.glob("*.ckpt*"))
    # the same settings on another image list: discarded too
    kill_after_first_epoch(monkeypatch)
    with pytest.raises(Killed):
        train_cam(root, ids, root / "labels.csv", *paths, TRAIN)
    monkeypatch.undo()
    capsys.readouterr()
    train_cam(root, ids[::-1], root / "labels.csv", *paths, TRAIN)
    assert "discarding" in capsys.readouterr().err


def test_train_cam_clear_errors(voc, tmp_path):
    root, ids, _ = voc
    with pytest.raises(ValueError, match=r"train_cam: 8 images are fewer than batch_size 9 "
                       r"\(drop_last would leave no batch\)"):
        train_cam(root, ids, root / "labels.csv", tmp_path / "m.pth", tmp_path / "h.json",
                  dict(TRAIN, batch_size=9))
    with pytest.raises(KeyError, match=r"settings 'train_cam' lacks keys \['momentum'\]"):
        train_cam(root, ids, root / "labels.csv", tmp_path / "m.pth", tmp_path / "h.json",
                  {k: v for k, v in TRAIN.items() if k != "momentum"})
    with pytest.raises(KeyError, match="labels.csv"):
        train_cam(root, ids + ["2099_999999"], root / "labels.csv", tmp_path / "m.pth",
                  tmp_path / "h.json", TRAIN)


@pytest.fixture(scope="module")
def cam_model(tmp_path_factory):
    """A model whose CAMs are positive wherever features are: classifier weights > 0."""
    torch.manual_seed(1)
    model = CAMNet(BACKBONE)
    with torch.no_grad():
        model.classifier.weight.uniform_(0.1, 1.0)
    path = tmp_path_factory.mktemp("model") / "cam.pth"
    save_torch(path, {"model": model.state_dict(), "settings": TRAIN})
    return path


def test_make_cams_files(voc, cam_model, tmp_path):
    root, ids, labels = voc
    written = make_cams(root, ids[:3], root / "labels.csv", cam_model, tmp_path, MAKE_CAM)
    assert written == 3
    for image_id in ids[:3]:
        data = np.load(tmp_path / f"{image_id}.npz")
        assert sorted(data.files) == ["cam", "high_res", "keys"]
        h, w = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        k = len(labels[image_id])
        assert data["keys"].dtype == np.int64 and data["keys"].tolist() == labels[image_id]
        assert data["cam"].dtype == np.float32 and data["high_res"].dtype == np.float32
        assert data["cam"].shape == (k, math.ceil(h / 4), math.ceil(w / 4))
        assert data["high_res"].shape == (k, h, w)
        for maps in (data["cam"], data["high_res"]):
            assert maps.min() >= 0
            np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-3)


def test_make_cams_skips_done_ids(voc, cam_model, tmp_path):
    root, ids, _ = voc
    save_npz(tmp_path / f"{ids[0]}.npz", keys=np.zeros(0, np.int64))  # marker "already done"
    written = make_cams(root, ids[:2], root / "labels.csv", cam_model, tmp_path, MAKE_CAM)
    assert written == 1
    assert np.load(tmp_path / f"{ids[0]}.npz").files == ["keys"]
    assert make_cams(root, ids[:2], root / "labels.csv", cam_model, tmp_path, MAKE_CAM) == 0


def test_multiscale_cam_flip_equivariant(cam_model):
    model = load_cam_net(cam_model)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)  # multiples of 16
    mirror = np.ascontiguousarray(image[:, ::-1])
    keys = [0, 14]
    cam, high = multiscale_cam(model, image, keys, MAKE_CAM["scales"], True)
    cam_m, high_m = multiscale_cam(model, mirror, keys, MAKE_CAM["scales"], True)
    assert cam.shape == (2, 12, 16) and high.shape == (2, 48, 64)
    scale = cam.abs().max()
    assert torch.allclose(cam_m, cam.flip(-1), atol=1e-4 * scale)
    assert torch.allclose(high_m, high.flip(-1), atol=1e-4 * scale)
    # without the flip pass the network alone is not mirror-symmetric
    cam1, _ = multiscale_cam(model, image, keys, [1.0], False)
    cam1_m, _ = multiscale_cam(model, mirror, keys, [1.0], False)
    assert not torch.allclose(cam1_m, cam1.flip(-1), atol=1e-2 * cam1.abs().max())


def test_multiscale_cam_is_the_sum_over_scales_worked_out_by_hand(cam_model):
    """Each scale: the image rescaled, its CAM plus its mirror's CAM mirrored back, resized
    bilinearly to the stride-4 grid (and to full size for high_res); the scales are summed."""
    model = load_cam_net(cam_model)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    keys = [0, 14]
    per_scale = []
    with torch.no_grad():
        for scale in (1.0, 0.5):
            x = eval_transform()({"image": rescale(image, scale)})["image"][None]
            maps = (model.cam(x) + model.cam(x.flip(-1)).flip(-1))[:, keys]
            per_scale.append((F.interpolate(maps, (12, 16), mode="bilinear")[0],
                              F.interpolate(maps, (48, 64), mode="bilinear")[0]))
    (cam_1, high_1), (cam_half, high_half) = per_scale
    assert not torch.allclose(cam_1, cam_half, atol=0.1 * cam_1.abs().max())  # they differ
    cam, high_res = multiscale_cam(model, image, keys, [1.0, 0.5], True)
    torch.testing.assert_close(cam, cam_1 + cam_half)
    torch.testing.assert_close(high_res, high_1 + high_half)


def test_make_cams_writes_the_flip_averaged_multiscale_maps(voc, cam_model, tmp_path):
    root, ids, labels = voc
    out = tmp_path / "nested" / "cams"  # parents are created
    make_cams(root, ids[:1], root / "labels.csv", cam_model, out, MAKE_CAM)
    image = np.asarray(Image.open(root / "JPEGImages" / f"{ids[0]}.jpg").convert("RGB"))
    cam, high_res = multiscale_cam(load_cam_net(cam_model), image, labels[ids[0]],
                                   MAKE_CAM["scales"], True)
    data = np.load(out / f"{ids[0]}.npz")
    np.testing.assert_allclose(data["cam"], normalize_max(cam).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["high_res"], normalize_max(high_res).numpy(), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(KeyError, match=r"settings 'make_cam' lacks keys \['flip'\]"):
        make_cams(root, ids[1:2], root / "labels.csv", cam_model, out, {"scales": [1.0]})
    with pytest.raises(ValueError, match=r"make_cam\.scales: \[\] should be non-empty"):
        make_cams(root, ids[1:2], root / "labels.csv", cam_model, out, dict(MAKE_CAM, scales=[]))


def test_rescale_and_normalize_max():
    image = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    assert rescale(image, 0.5).shape == (24, 32, 3) and rescale(image, 1.5).shape == (72, 96, 3)
    expected = np.asarray(Image.fromarray(image).resize((32, 24), Image.BICUBIC))
    np.testing.assert_array_equal(rescale(image, 0.5), expected)
    maps = torch.zeros(2, 2, 2)
    maps[0, 0, 0] = 1e-5  # as small as the guard: halved, not divided by 0
    maps[1, 1, 1] = 4.0
    torch.testing.assert_close(normalize_max(maps)[:, [0, 1], [0, 1]],
                               torch.tensor([[0.5, 0.0], [0.0, 4 / (4 + 1e-5)]]))


def test_epoch_loader_shuffles_by_seed_and_epoch_and_drops_the_last_partial_batch():
    data = list(range(10))
    settings = {"batch_size": 4, "num_workers": 0, "seed": 7}

    def order(epoch):
        return [int(i) for batch in epoch_loader(data, settings, epoch, "cpu") for i in batch]

    first = order(0)
    assert len(first) == 8 and len(set(first)) == 8  # 2 full batches of 4
    torch.manual_seed(123)  # the global RNG plays no part
    assert order(0) == first
    orders = [tuple(order(epoch)) for epoch in range(5)]
    assert len(set(orders)) == 5 and orders[0] != tuple(range(8))


def test_train_cam_and_make_cams_compute_in_bf16_and_write_float32(voc, tmp_path):
    """At bf16 every convolution computes in bfloat16 (autocast), while the CAMs written
    keep make_cam's float32 normalisation and stay close to the float32 network's."""
    root, ids, _ = voc
    with layer_dtypes() as seen:
        history = train_cam(root, ids, root / "labels.csv", tmp_path / "cam.pth",
                            tmp_path / "h.json", dict(TRAIN, epochs=1), precision="bf16")
    assert seen == {torch.bfloat16} and history[0]["precision"] == "bf16"
    maps = {}
    for setting in ("bf16", "fp32"):
        with layer_dtypes() as seen:
            make_cams(root, ids[:2], root / "labels.csv", tmp_path / "cam.pth",
                      tmp_path / setting, MAKE_CAM, precision=setting)
        assert seen == {torch.bfloat16 if setting == "bf16" else torch.float32}
        maps[setting] = np.load(tmp_path / setting / f"{ids[0]}.npz")["high_res"]
    assert maps["bf16"].dtype == np.float32
    np.testing.assert_allclose(maps["bf16"].max(axis=(1, 2)), 1.0, atol=1e-3)
    assert 0 < np.abs(maps["bf16"] - maps["fp32"]).mean() < 0.02

"""IRN edge branch, pair sampling, losses, train_irn (with resume) and make_sem_seg."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from csd.cam.backbone import normalize
from csd.data.voc import IGNORE, load_label_png, palette
from csd.irn.edge_net import (
    EdgeNet,
    affinity_loss,
    downsample_label,
    edge_to_affinity,
    load_irn,
    pair_labels,
)
from csd.irn.make_sem_seg import edge_map, make_sem_seg
from csd.irn.random_walk import path_directions
from csd.irn.train_irn import train_irn
from csd.runtime.io import save_npz, save_png, save_torch
from csd.runtime.training import Checkpoint
from tests.conftest import RECORD, layer_dtypes

BACKBONE = {"depth": 18, "pretrained": None, "strides": [2, 2, 2, 1]}
# make_sem_seg's settings; crop is train_irn's (irn_settings)
WALK = {"radius": 5, "beta": 10, "exp_times": 8, "bg_threshold": 0.25, "pad_to_crop": True,
        "crop": 64}


def irn_settings(**over):
    settings = {"seed": 0, "backbone": dict(BACKBONE),
                "batch_size": 4, "epochs": 2, "lr": 0.1, "weight_decay": 1e-4,
                "momentum": 1e-4, "poly_power": 0.9, "scale_range": [0.5, 1.5], "crop": 64,
                "flip": True, "radius": 5, "num_workers": 0}
    settings.update(over)
    return settings


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return EdgeNet(BACKBONE)


def test_edge_map_is_at_stride_4(net):
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 1, 16, 16)
    # odd sizes: ceil(H/4) like the stride-4 CAMs
    assert net(torch.randn(1, 3, 66, 50)).shape == (1, 1, 17, 13)


def test_only_the_edge_branch_learns(net):
    net.train()
    assert not any(m.training for m in net.backbone.modules())  # frozen BN statistics
    net.zero_grad()
    net(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.edge_parameters())
    # edge_parameters are exactly the trainable ones
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in net.edge_parameters()}


def test_edge_to_affinity_matches_brute_force():
    radius, margin = 3, 2
    edge = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(1))
    aff = edge_to_affinity(edge, radius)
    paths = path_directions(radius)
    assert aff.shape == (2, len(paths), 7 - margin, 9 - 2 * margin)
    for b in range(2):
        for d, (_, path) in enumerate(paths):
            for i in range(7 - margin):
                for j in range(9 - 2 * margin):
                    y, x = i, j + margin
                    expect = 1 - max(edge[b, y + py, x + px] for py, px in path)
                    assert math.isclose(aff[b, d, i, j].item(), expect, rel_tol=1e-6)


def test_pair_labels_hand_made():
    # radius 2: directions (0,1), (1,-1), (1,0), (1,1); sources (0,1) [label 0], (0,2) [label 1]
    label = torch.tensor([[[0, 0, 1, 1],
                           [0, IGNORE, 1, 1]]])
    assert [d for d, _ in path_directions(2)] == [(0, 1), (1, -1), (1, 0), (1, 1)]
    bg_pos, fg_pos, neg = pair_labels(label, 2)
    assert bg_pos.shape == (1, 4, 1, 2)
    # (0,1)->(1,0) same bg; (0,2)->(0,3),(1,2),(1,3) same class; (0,1)->(0,2),(1,2) differ;
    # the two pairs with the 255 pixel belong to no set
    assert (bg_pos.sum().item(), fg_pos.sum().item(), neg.sum().item()) == (1, 3, 2)
    assert not (bg_pos & fg_pos).any() and not (bg_pos & neg).any() and not (fg_pos & neg).any()
    # a 255 source contributes nothing
    label[0, 0, 1] = IGNORE
    bg_pos, fg_pos, neg = pair_labels(label, 2)
    assert (bg_pos.sum().item(), fg_pos.sum().item(), neg.sum().item()) == (0, 3, 0)


def test_downsample_label_reads_pixel_4i_plus_2_as_pil_nearest():
    # IRN: PIL nearest to a quarter of each side (its crops are multiples of 4)
    label = np.random.default_rng(0).integers(0, 256, (64, 72), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(label).resize((18, 16), Image.NEAREST))
    small = downsample_label(torch.from_numpy(label).long()[None])
    np.testing.assert_array_equal(small[0].numpy(), pil)
    mask = torch.arange(64 * 66).reshape(1, 66, 64)
    small = downsample_label(mask)
    assert small.shape == (1, 17, 16)  # the edge map's ceil(H/4) grid
    assert small[0, 2, 3] == mask[0, 10, 14]
    # 66 rows: the 17th cell (rows 64-65) reads the last row
    assert small[0, 16, 0] == mask[0, 65, 2]


def test_loss_prefers_the_true_boundary():
    # bg left, class 1 right, an unsure band between them: the true boundary is the band
    label = torch.zeros(1, 24, 24, dtype=torch.long)
    label[:, :, 11] = IGNORE
    label[:, :, 12:] = 1
    perfect = (label == IGNORE).float()
    sets = pair_labels(label, 5)
    assert all(s.any() for s in sets)
    good, parts = affinity_loss(edge_to_affinity(perfect, 5), *sets)
    inverted = (1 - perfect).requires_grad_()
    bad, _ = affinity_loss(edge_to_affinity(inverted, 5), *sets)
    assert good.item() < 1e-3 < 5 < bad.item()
    assert set(parts) == {"bg_pos", "fg_pos", "neg"}
    # the loss reaches the boundary map: lowering the inverted edges lowers the loss
    bad.backward()
    assert inverted.grad[0, :, :11].sum() > 0


# ---- stages on a tiny VOC-format fixture ----

def write_fixture(root, n=8, size=(56, 72)):
    """JPEGs with one coloured box each, IR labels (box = class, 255 band, bg 0)."""
    rng = np.random.default_rng(0)
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (root / "ir").mkdir()
    ids = [f"2000_{i:06d}" for i in range(n)]
    for k, image_id in enumerate(ids):
        h, w = size
        image = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 20, (h, w, 3), np.uint8)
        y0, x0 = rng.integers(4, h // 2), rng.integers(4, w // 2)
        y1, x1 = y0 + h // 3, x0 + w // 3
        image[y0:y1, x0:x1] = (200, 40, 40)
        Image.fromarray(image).save(root / "VOC2012" / "JPEGImages" / f"{image_id}.jpg")
        label = np.zeros((h, w), np.uint8)
        label[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = IGNORE
        label[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = 1 + k % 3
        save_png(root / "ir" / f"{image_id}.png", label, palette())
    return root / "VOC2012", ids


def test_train_irn_and_resume(tmp_path, monkeypatch):
    voc_root, ids = write_fixture(tmp_path, n=5)  # 2 batches of 2 per epoch (drop_last)
    settings = irn_settings(batch_size=2)
    full = train_irn(voc_root, ids, tmp_path / "ir", tmp_path / "a" / "irn.pth",
                     tmp_path / "a" / "history.json", settings)
    assert len(full) == 2 and all(np.isfinite(r["loss"]) for r in full)
    assert set(full[0]) == RECORD | {"bg_pos", "fg_pos", "neg"}
    assert json.loads((tmp_path / "a" / "history.json").read_text()) == full
    saved = torch.load(tmp_path / "a" / "irn.pth", weights_only=True)
    assert saved["settings"] == settings
    assert not (tmp_path / "a" / "irn.pth.ckpt").exists()

    # a job killed after epoch 1 restarts from its checkpoint and ends identically
    class Killed(Exception):
        pass

    real_save = Checkpoint.save

    def save_then_die(self, epoch, *args):
        real_save(self, epoch, *args)
        raise Killed

    monkeypatch.setattr(Checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train_irn(voc_root, ids, tmp_path / "ir", tmp_path / "b" / "irn.pth",
                  tmp_path / "b" / "history.json", settings)
    assert (tmp_path / "b" / "irn.pth.ckpt").exists()
    assert not (tmp_path / "b" / "irn.pth").exists()
    monkeypatch.setattr(Checkpoint, "save", real_save)
    resumed = train_irn(voc_root, ids, tmp_path / "ir", tmp_path / "b" / "irn.pth",
                        tmp_path / "b" / "history.json", settings)
    assert resumed == full
    again = torch.load(tmp_path / "b" / "irn.pth", weights_only=True)["model"]
    assert all(torch.equal(again[k], v) for k, v in saved["model"].items())


def test_train_irn_names_missing_labels(tmp_path):
    voc_root, ids = write_fixture(tmp_path, n=4)
    (tmp_path / "ir" / f"{ids[1]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=ids[1]):
        train_irn(voc_root, ids, tmp_path / "ir", tmp_path / "irn.pth", tmp_path / "h.json",
                  irn_settings())


def test_edge_map_pads_to_the_crop_as_irn(net):
    net.eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 54, 3), dtype=np.uint8)
    # IRN's EdgeDisplacement: the normalised image and its flip, zero-padded on the bottom
    # and right to the crop; logits cut to the image's stride-4 grid, then the flip undone
    x = normalize(image)
    x = torch.cat([x, x.flip(-1)])
    logits = net(torch.nn.functional.pad(x, (0, 64 - 54, 0, 64 - 40)))[:, 0, :10, :14]
    expected = torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)
    padded = edge_map(net, image, "cpu", pad_to=64)
    torch.testing.assert_close(padded, expected)
    # unpadded, GroupNorm sees other statistics: the map differs
    plain = edge_map(net, image, "cpu")
    assert plain.shape == padded.shape == (10, 14)
    assert (plain - padded).abs().max() > 1e-3
    # a side longer than the crop is kept whole (IRN would crop it): 72 wide -> 18 cells
    wide = np.random.default_rng(1).integers(0, 256, (40, 72, 3), dtype=np.uint8)
    assert edge_map(net, wide, "cpu", pad_to=64).shape == (10, 18)
    # an image of the crop's size is not padded at all
    square = wide[:, :64].copy()
    torch.testing.assert_close(edge_map(net, square, "cpu", pad_to=40),
                               edge_map(net, square, "cpu"))


def test_make_sem_seg_writes_label_pngs(tmp_path):
    voc_root, ids = write_fixture(tmp_path, n=3)
    # An edge branch that sees boundaries everywhere (edge ~ 1, affinities ~ 0): the walk
    # stays put, so the mask is the CAMs' own argmax against the background threshold.
    torch.manual_seed(0)
    walls = EdgeNet(BACKBONE)
    with torch.no_grad():
        walls.edge_out.weight.zero_()
        walls.edge_out.bias.fill_(8.0)
    save_torch(tmp_path / "irn.pth", {"model": walls.state_dict(), "settings": irn_settings()})
    h, w = 56, 72
    grid = (math.ceil(h / 4), math.ceil(w / 4))  # 14 x 18
    rng = np.random.default_rng(0)
    keys = {ids[0]: [2, 5], ids[1]: [14], ids[2]: [0, 7, 19]}
    for shard, image_id in enumerate(ids):  # CAMs spread over two shard dirs
        k = len(keys[image_id])
        cam = rng.random((k,) + grid, dtype=np.float32)
        if shard == 0:  # class 2 on the left, class 5 on the right, nothing between
            cam[:] = 0
            cam[0, :, :6] = 1.0
            cam[1, :, 12:] = 0.8
        save_npz(tmp_path / f"cam{shard % 2}" / f"{image_id}.npz",
                 keys=np.asarray(keys[image_id], np.int64), cam=cam,
                 high_res=rng.random((k, h, w), dtype=np.float32))
    cam_dirs = [tmp_path / "cam0", tmp_path / "cam1"]
    out = tmp_path / "sem_seg"
    assert make_sem_seg(voc_root, ids, cam_dirs, tmp_path / "irn.pth", out, WALK) == 3
    for image_id in ids:
        mask = load_label_png(out / f"{image_id}.png")
        assert mask.shape == (h, w)
        assert set(np.unique(mask)) <= {0} | {k + 1 for k in keys[image_id]}
    mask = load_label_png(out / f"{ids[0]}.png")
    assert (mask[:, :20] == 3).all() and (mask[:, 28:44] == 0).all()
    assert (mask[:, 52:] == 6).all()
    # resume: nothing left to do
    assert make_sem_seg(voc_root, ids, cam_dirs, tmp_path / "irn.pth", out, WALK) == 0


def test_make_sem_seg_rejects_misaligned_cams(tmp_path):
    voc_root, ids = write_fixture(tmp_path, n=1)
    save_torch(tmp_path / "irn.pth", {"model": EdgeNet(BACKBONE).state_dict(),
                                     "settings": irn_settings()})
    save_npz(tmp_path / "cam" / f"{ids[0]}.npz", keys=np.asarray([3]),
             cam=np.ones((1, 10, 10), np.float32), high_res=np.ones((1, 56, 72), np.float32))
    with pytest.raises(ValueError, match=ids[0]):
        make_sem_seg(voc_root, ids, [tmp_path / "cam"], tmp_path / "irn.pth",
                     tmp_path / "out", WALK)
    # padding to the crop needs the crop
    with pytest.raises(KeyError, match="crop"):
        make_sem_seg(voc_root, ids, [tmp_path / "cam"], tmp_path / "irn.pth",
                     tmp_path / "out", {k: v for k, v in WALK.items() if k != "crop"})
    assert load_irn(tmp_path / "irn.pth").training is False


def test_train_irn_and_the_edge_map_compute_in_bf16(tmp_path):
    voc_root, ids = write_fixture(tmp_path, n=4)
    with layer_dtypes() as seen:
        history = train_irn(voc_root, ids, tmp_path / "ir", tmp_path / "irn.pth",
                            tmp_path / "h.json", irn_settings(epochs=1), precision="bf16")
    assert seen == {torch.bfloat16} and history[0]["precision"] == "bf16"
    h, w = 56, 72
    grid = (math.ceil(h / 4), math.ceil(w / 4))
    rng = np.random.default_rng(0)
    for image_id in ids[:2]:
        save_npz(tmp_path / "cam" / f"{image_id}.npz", keys=np.asarray([1], np.int64),
                 cam=rng.random((1,) + grid, dtype=np.float32),
                 high_res=rng.random((1, h, w), dtype=np.float32))
    masks = {}
    for setting in ("bf16", "fp32"):
        with layer_dtypes() as seen:
            assert make_sem_seg(voc_root, ids[:2], [tmp_path / "cam"], tmp_path / "irn.pth",
                                tmp_path / setting, WALK, precision=setting) == 2
        assert seen == {torch.bfloat16 if setting == "bf16" else torch.float32}
        masks[setting] = load_label_png(tmp_path / setting / f"{ids[0]}.png")
    # the walk and its threshold in float32 on nearly the same edges: nearly the same mask
    assert (masks["bf16"] == masks["fp32"]).mean() > 0.95

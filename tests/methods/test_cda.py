"""CDA (csd.methods.cda): the instance pool, cutting and pasting instances, and a short
training run on a tiny VOC-like tree whose ground truth serves as round-0 masks."""

import numpy as np
import pytest
import torch

from csd.cam.cam_net import CAMNet
from csd.cam.train_cam import CAM_CLASSIFIER
from csd.data.transforms import MEAN, STD, train_transform
from csd.data.voc import load_image, load_label_png, palette
from csd.methods.cda import (
    WithInstances,
    instance_pool,
    make_instance,
    paste_batch,
    train_cam_cda,
)
from csd.runtime.io import save_png
from tests.methods.conftest import CDA, TRAIN, onehot


def test_instance_pool_and_instances(voc, tmp_path):
    root, ids, labels = voc
    pool = instance_pool(ids, labels, root / "SegmentationClass", (0.01, 0.7))
    singles = {i for i in ids if labels[i].sum() == 1}
    # every single-class image: the squares cover 3-16% of their images
    assert {i for i, _ in pool} == singles and len(pool) == len(singles)
    assert all(labels[i][c] == 1 for i, c in pool)
    assert instance_pool(ids, labels, root / "SegmentationClass", (0.9, 1.0)) == []
    # the range includes its ends
    first, c = pool[0]
    area = float((load_label_png(root / "SegmentationClass" / f"{first}.png") == c + 1).mean())
    assert [i for i, _ in instance_pool(ids, labels, root / "SegmentationClass",
                                        (area, area))] == [first]
    # a mask without the class is no instance, whatever the range
    for i in ids:
        save_png(tmp_path / f"{i}.png", np.zeros((8, 8), np.uint8), palette())
    assert instance_pool(ids, labels, tmp_path, (0.0, 1.0)) == []
    image_id, cls = pool[0]
    image = load_image(root / "JPEGImages" / f"{image_id}.jpg")
    mask = load_label_png(root / "SegmentationClass" / f"{image_id}.png")
    torch.manual_seed(0)
    canvas, canvas_mask = make_instance(image, mask, cls, 32, CDA)
    assert canvas.shape == (3, 32, 32) and canvas_mask.shape == (32, 32)
    assert 0 < canvas_mask.sum() < 32 * 32 * 0.7 ** 2 + 1
    assert torch.all(canvas[:, canvas_mask == 0] == 0)


def test_paste_batch_pastes_first_half_and_adds_labels():
    batch = {"image": torch.full((4, 3, 8, 8), 2.0), "label": torch.zeros(4, 20),
             "paste_image": torch.ones(4, 3, 8, 8), "paste_mask": torch.zeros(4, 8, 8),
             "paste_class": torch.tensor([-1, 5, 7, 9])}
    batch["paste_mask"][:, 2:4, 2:4] = 1
    images, labels = paste_batch(batch, 0.75)
    assert images[0].sum() == 2 * 3 * 64 and labels[0].sum() == 0  # nothing to paste
    for i, cls in ((1, 5), (2, 7)):  # 4 pixels of 1, the rest of 2
        assert images[i].sum() == 3 * (4 + 2 * 60) and labels[i].tolist() == onehot(cls).tolist()
    assert images[3].sum() == 2 * 3 * 64 and labels[3].sum() == 0  # beyond the fraction
    assert batch["image"].sum() == 2 * 4 * 3 * 64  # the batch itself is not modified


def test_make_instance_cuts_scales_and_places_the_object():
    """A tall 10 x 6 box (rows 3-12, columns 2-7) of one colour: without rotation its
    longer side becomes size_range * crop (16 of 32), the piece 16 x 10 anywhere on the
    canvas; with rotation up to 90 degrees it lies tall or wide, never cropped."""
    image = np.full((20, 20, 3), 50, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    image[3:13, 2:8] = (200, 100, 30)
    mask[3:13, 2:8] = 5  # class 4
    mask[0, 0] = 3  # another class's pixel: not part of the instance
    colour = (torch.tensor([200, 100, 30]) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    settings = dict(CDA, rotation=0, size_range=[0.5, 0.5])
    torch.manual_seed(0)
    corners = set()
    for _ in range(300):
        canvas, canvas_mask = make_instance(image, mask, 4, 32, settings)
        ys, xs = torch.nonzero(canvas_mask, as_tuple=True)
        top, left = int(ys.min()), int(xs.min())
        assert canvas_mask.sum() == 16 * 10 and canvas_mask[top:top + 16, left:left + 10].all()
        torch.testing.assert_close(canvas[:, top:top + 16, left:left + 10],
                                   colour[:, None, None].expand(3, 16, 10))
        canvas[:, top:top + 16, left:left + 10] = 0
        assert not canvas.any()  # nothing outside the piece
        corners.add((top, left))
    # every position with the piece inside the crop: rows 0-16, columns 0-22
    assert {t for t, _ in corners} == set(range(17)) and {c for _, c in corners} == set(range(23))
    shapes = set()
    for _ in range(40):
        _, canvas_mask = make_instance(image, mask, 4, 32, dict(settings, rotation=90))
        ys, xs = torch.nonzero(canvas_mask, as_tuple=True)
        height, width = int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
        shapes.add("tall" if height > 1.4 * width else "wide" if width > 1.4 * height else "")
    assert {"tall", "wide"} <= shapes


def test_make_instance_rotates_piece_and_mask_together(monkeypatch):
    """At exactly 90 degrees the tall 10 x 6 box lies wide, 10 x 16, its mask whole."""
    image = np.full((20, 20, 3), 50, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    image[3:13, 2:8] = (200, 100, 30)
    mask[3:13, 2:8] = 5
    monkeypatch.setattr("csd.methods.cda.uniform", lambda lo, hi: hi)  # angle 90, side 16
    canvas, canvas_mask = make_instance(image, mask, 4, 32, dict(CDA, rotation=90,
                                                                 size_range=[0.2, 0.5]))
    ys, xs = torch.nonzero(canvas_mask, as_tuple=True)
    top, left = int(ys.min()), int(xs.min())
    assert canvas_mask.sum() == 10 * 16 and canvas_mask[top:top + 10, left:left + 16].all()


def test_with_instances_reads_the_round0_masks_and_pastes_nothing_without_absent_classes(
        voc, tmp_path, capsys):
    root, ids, labels = voc
    transform = train_transform("long", [40, 56], 32)
    # round-0 masks unlike the ground truth: each single-label image all object
    round0 = tmp_path / "round0"
    round0.mkdir()
    for i in ids:
        label = load_label_png(root / "SegmentationClass" / f"{i}.png")
        classes = np.flatnonzero(labels[i])
        save_png(round0 / f"{i}.png", np.full_like(label, classes[0] + 1), palette())
    torch.manual_seed(0)
    data = WithInstances(root, ids, labels, round0, transform, 32,
                         dict(CDA, area_range=[0.5, 1.0], size_range=[1.0, 1.0], rotation=0))
    pasted = [s for s in (data[i] for i in range(len(ids))) if s["paste_class"] >= 0]
    assert pasted and all(s["paste_mask"].sum() >= 32 * 24 for s in pasted)  # whole images
    # every image holds every class that has instances: nothing to paste
    holds_all = {i: onehot(*np.flatnonzero(sum(labels.values()))) for i in ids}
    holds_all[ids[0]] = labels[ids[0]]
    data = WithInstances(root, ids, holds_all, round0, transform, 32, CDA)
    assert "CDA instance pool: " in capsys.readouterr().err
    for s in (data[i] for i in range(1, len(ids))):
        assert s["paste_class"] == -1 and s["paste_image"].shape == (3, 32, 32)
        assert s["paste_mask"].shape == (32, 32) and not s["paste_image"].any()
        assert not s["paste_mask"].any()
    WithInstances(root, ids, labels, round0, transform, 32, dict(CDA, area_range=[0.0, 0.01]))
    err = capsys.readouterr().err
    assert "CDA instance pool: 0 instances" in err
    assert f"WARNING: CDA: no single-class pseudo mask in {round0} covers [0.0, 0.01]" in err
    (round0 / f"{ids[3]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{round0}: no round-0 pseudo mask"):
        WithInstances(root, ids, labels, round0, transform, 32, CDA)


def test_train_cam_cda_clear_errors(voc, tmp_path):
    root, ids, _ = voc
    args = (root, ids, root / "labels.csv", root / "SegmentationClass", tmp_path / "m.pt",
            tmp_path / "h.json")
    with pytest.raises(KeyError, match=r"settings 'cda' lacks keys \['rotation'\]"):
        train_cam_cda(*args, dict(TRAIN, cda={k: v for k, v in CDA.items() if k != "rotation"}))
    with pytest.raises(ValueError, match=r"train_cam\.crop: None is not of type 'integer'"):
        train_cam_cda(*args, dict(TRAIN, crop=None, cda=CDA))


def test_with_instances_pastes_absent_classes_and_trains(voc, tmp_path, monkeypatch):
    root, ids, labels = voc
    torch.manual_seed(0)
    data = WithInstances(root, ids, labels, root / "SegmentationClass",
                         train_transform("long", [40, 56], 32), 32, CDA)
    for index in range(len(ids)):
        s = data[index]
        if s["paste_class"] >= 0:
            assert labels[ids[index]][s["paste_class"]] == 0
    # Training: what each batch pasted, and what the network saw.
    pasted, seen = [], []

    def spy_paste(batch, fraction):
        out = paste_batch(batch, fraction)
        pasted.append((batch, out))
        return out

    class SpyCAMNet(CAMNet):
        def forward(self, x):
            seen.append(x.detach().clone())
            return super().forward(x)

    monkeypatch.setattr("csd.methods.cda.paste_batch", spy_paste)
    spy_classifier = CAM_CLASSIFIER._replace(build=lambda s: SpyCAMNet(s["backbone"]))
    settings = dict(TRAIN, cda=CDA)
    history = train_cam_cda(root, ids, root / "labels.csv", root / "SegmentationClass",
                            tmp_path / "m.pt", tmp_path / "h.json", settings,
                            classifier=spy_classifier)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert len(pasted) == len(seen) == 2 * (len(ids) // TRAIN["batch_size"])
    share = []
    for (batch, (images, targets)), x in zip(pasted, seen):
        torch.testing.assert_close(x, images)
        for i in range(len(images)):
            changed = (images[i] != batch["image"][i]).any(dim=0)
            cls = int(batch["paste_class"][i])
            if i < len(images) * CDA["paste_fraction"] and cls >= 0:
                # exactly the instance's pixels (where it differs from the image) change
                differs = (batch["paste_image"][i] != batch["image"][i]).any(dim=0)
                assert torch.equal(changed, (batch["paste_mask"][i] > 0) & differs)
                assert targets[i, cls] == 1 and batch["label"][i, cls] == 0
                targets[i, cls] = 0
            else:
                assert not changed.any()
            torch.testing.assert_close(targets[i], batch["label"][i])
            share.append(changed.float().mean())
    # half of each batch pasted, instances of 0.2-0.7 of the crop's side
    assert 0.01 < torch.stack(share).mean() < 0.5 * 0.7 ** 2

"""Sharding changes nothing: each per-image stage (make_cam, cam_to_ir_label, make_sem_seg,
infer_seg) run as 2 shards and merged (csd.runtime.runner.shard + csd.runtime.store.merge_shards, as the
workflow does) gives exactly the files of a 1-shard run."""

import numpy as np
import pytest
import torch

from csd.cam.cam_net import CAMNet
from csd.cam.make_cam import make_cams
from csd.data.voc import load_label_png
from csd.irn.edge_net import EdgeNet
from csd.irn.ir_label import make_ir_labels
from csd.irn.make_sem_seg import make_sem_seg
from csd.runtime.io import save_torch
from csd.runtime.runner import shard
from csd.runtime.store import merge_shards
from csd.seg.deeplab import build_deeplab
from csd.seg.infer_seg import infer_deeplab
from tests.cam.test_cam import BACKBONE as CAM_BACKBONE
from tests.conftest import make_voc
from tests.irn.test_ir_label import SETTINGS as IR_LABEL
from tests.irn.test_irn import WALK, irn_settings
from tests.seg.test_deeplab import INFER, MODEL

pytestmark = pytest.mark.usefixtures("one_thread")


def sharded(count, ids, base, run, kinds=("out",)):
    """Run `run(shard_ids, **{kind: shard dir})` for each of `count` shards, then merge each
    kind's shard dirs into base/<kind>/all as merge_shards does; return those dirs."""
    for index in range(count):
        run(shard(ids, index, count),
            **{kind: base / kind / "shards" / str(index) for kind in kinds})
    merged = {}
    for kind in kinds:
        merged[kind] = base / kind / "all"
        shards = [base / kind / "shards" / str(index) for index in range(count)]
        assert merge_shards(shards, merged[kind]) == len(ids)
    return merged


def assert_same_files(one, two):
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and names
    for name in names:
        if name.endswith(".npz"):
            a, b = np.load(one / name), np.load(two / name)
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (name, key)
        else:
            assert (one / name).read_bytes() == (two / name).read_bytes(), name


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    ids, _ = make_voc(root, n=6, seed=4)
    models = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    cam = CAMNet(CAM_BACKBONE)
    with torch.no_grad():  # positive class weights: CAMs with structure, not all zero
        cam.classifier.weight.uniform_(0.1, 1.0)
    save_torch(models / "cam.pth", {"model": cam.state_dict(),
                                    "settings": {"backbone": CAM_BACKBONE}})
    edge = EdgeNet(irn_settings()["backbone"])
    save_torch(models / "irn.pth", {"model": edge.state_dict(), "settings": irn_settings()})
    save_torch(models / "seg.pth", {"model": build_deeplab(MODEL).state_dict(),
                                    "settings": MODEL})
    return root, ids, models


def test_shards_partition_the_ids():
    ids = [f"id{i}" for i in range(7)]
    parts = [shard(ids, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == ids and sum(map(len, parts)) == 7
    assert [len(p) for p in parts] == [3, 2, 2]
    with pytest.raises(ValueError, match="out of range"):
        shard(ids, 3, 3)


def test_two_shards_equal_one_shard_for_every_sharded_stage(data, tmp_path):
    root, ids, models = data
    runs = {}
    for count in (1, 2):
        base = tmp_path / f"shards{count}"
        cams = sharded(count, ids, base / "cam", lambda part, out: make_cams(
            root, part, root / "labels.csv", models / "cam.pth", out,
            {"scales": [1.0, 0.5], "flip": True}))["out"]
        # Later stages read the 1-shard CAMs, so that each stage is compared on its own.
        source = runs[1]["cam"] if count == 2 else cams
        ir_labels = sharded(count, ids, base / "ir", lambda part, out: make_ir_labels(
            root, part, [source], out, IR_LABEL))["out"]
        masks = sharded(count, ids, base / "mask", lambda part, out: make_sem_seg(
            root, part, [source], models / "irn.pth", out, WALK))["out"]
        preds = sharded(count, ids, base / "pred", lambda part, raw, crf: infer_deeplab(
            root, part, models / "seg.pth", raw, crf, dict(INFER, scales=[1.0, 0.5])),
            kinds=("raw", "crf"))
        runs[count] = {"cam": cams, "ir_label": ir_labels, "mask": masks, **preds}
    for kind in runs[1]:
        assert_same_files(runs[1][kind], runs[2][kind])
    # The stages produced real content (not constant maps) to compare.
    cam = np.load(runs[1]["cam"] / f"{ids[0]}.npz")["high_res"]
    assert cam.max() == pytest.approx(1.0) and cam.min() < 0.9
    labels = {int(value) for image_id in ids
              for value in np.unique(load_label_png(runs[1]["ir_label"] / f"{image_id}.png"))}
    assert len(labels) >= 2

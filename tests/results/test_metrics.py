import json

import numpy as np
import pytest

from csd.data.voc import palette
from csd.results.metrics import (
    N_LABELS,
    confusion_matrix,
    eval_masks,
    eval_seeds,
    scores,
)
from csd.runtime.io import save_npz, save_png


def test_scores_of_a_hand_made_confusion():
    conf = np.zeros((N_LABELS, N_LABELS), np.int64)
    conf[0, 0], conf[0, 1] = 8, 2   # background: 8 right, 2 called aeroplane
    conf[1, 1] = 5                  # aeroplane: all 5 right
    conf[2, 1] = 5                  # bicycle: all 5 called aeroplane
    s = scores(conf)
    # IoU = TP / (GT + pred - TP): bg 8/(10+8-8), aeroplane 5/(5+12-5), bicycle 0/5.
    assert s["iou"]["background"] == pytest.approx(80.0)
    assert s["iou"]["aeroplane"] == pytest.approx(100 * 5 / 12)
    assert s["iou"]["bicycle"] == pytest.approx(0.0)
    assert s["iou"]["tvmonitor"] is None  # absent from both: not part of the mean
    assert s["miou"] == pytest.approx(100 * (0.8 + 5 / 12 + 0) / 3)
    assert s["pixel_acc"] == pytest.approx(65.0)
    assert s["mean_acc"] == pytest.approx(100 * (0.8 + 1 + 0) / 3)


def test_confusion_ignores_void_and_matches_a_loop():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, N_LABELS, (30, 40)).astype(np.uint8)
    pred = rng.integers(0, N_LABELS, (30, 40)).astype(np.uint8)
    gt[:5] = 255
    pred[:, :3] = 255
    expected = np.zeros((N_LABELS, N_LABELS), np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        if g != 255 and p != 255:
            expected[g, p] += 1
    np.testing.assert_array_equal(confusion_matrix(gt, pred), expected)


def test_perfect_prediction_scores_100_and_bad_labels_raise():
    gt = np.array([[0, 1, 255], [15, 15, 20]], np.uint8)
    s = scores(confusion_matrix(gt, np.where(gt == 255, 7, gt)))
    assert s["miou"] == 100 and s["pixel_acc"] == 100 and s["mean_acc"] == 100
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(gt, np.full_like(gt, 21))


def write_seed_fixture(root):
    """Two images, CAMs in two shard dirs; expected scores worked out by hand below."""
    voc = root / "VOC2012"
    # Image a: aeroplane (label 1) in columns 0-1, background in 2-3, row 0 void.
    gt_a = np.array([[255] * 4] + [[1, 1, 0, 0]] * 3, np.uint8)
    cam_a = np.array([[0.9] * 4] + [[0.5, 0.5, 0.2, 0.1]] * 3, np.float32)
    save_png(voc / "SegmentationClass" / "a.png", gt_a, palette())
    save_npz(root / "cams0" / "a.npz", keys=np.array([0]), cam=cam_a[None, ::4, ::4],
             high_res=cam_a[None])
    # Image b: bird (class 2, label 3) left, person (class 14, label 15) right.
    gt_b = np.array([[3, 3, 15, 15]] * 2, np.uint8)
    cams_b = np.stack([np.array([[0.9, 0.9, 0.1, 0.1]] * 2), np.array([[0.2, 0.2, 0.8, 0.8]] * 2)])
    save_png(voc / "SegmentationClass" / "b.png", gt_b, palette())
    save_npz(root / "cams1" / "b.npz", keys=np.array([2, 14]),
             cam=cams_b[:, ::4, ::4].astype(np.float32), high_res=cams_b.astype(np.float32))
    return voc, [root / "cams0", root / "cams1"]


def test_eval_seeds_miou_and_curve(tmp_path):
    voc, cam_dirs = write_seed_fixture(tmp_path)
    settings = {"bg_threshold": 0.15, "curve_thresholds": [0.05, 0.3, 0.6]}
    out = tmp_path / "seeds.json"
    result = eval_seeds(voc, ["a", "b"], cam_dirs, out, settings)
    assert json.loads(out.read_text()) == result
    # Bird and person are right at every threshold below 0.8 (IoU 1). Image a, 9 valid pixels:
    # t=0.15: column 2 (0.2) turns aeroplane: aero 6/9, bg 3/6;
    # t=0.30: perfect; t=0.05: all aeroplane: aero 6/12, bg 0; t=0.60: all bg: bg 6/12, aero 0.
    expected = {0.05: (0.5 + 0 + 2) / 4, 0.15: (6 / 9 + 3 / 6 + 2) / 4, 0.3: 1.0,
                0.6: (0.5 + 0 + 2) / 4}
    assert result["miou"] == pytest.approx(100 * expected[0.15])
    assert result["iou"]["aeroplane"] == pytest.approx(100 * 6 / 9)
    assert result["iou"]["person"] == pytest.approx(100.0)
    assert result["n_images"] == 2 and result["threshold"] == 0.15
    assert [c["threshold"] for c in result["curve"]] == [0.05, 0.15, 0.3, 0.6]
    for c in result["curve"]:
        assert c["miou"] == pytest.approx(100 * expected[c["threshold"]])
    assert result["best_threshold"] == 0.3 and result["best_miou"] == pytest.approx(100.0)


def test_eval_seeds_names_missing_files(tmp_path):
    voc, cam_dirs = write_seed_fixture(tmp_path)
    settings = {"bg_threshold": 0.15, "curve_thresholds": []}
    with pytest.raises(FileNotFoundError, match="c.npz"):
        save_png(voc / "SegmentationClass" / "c.png", np.zeros((2, 2), np.uint8), palette())
        eval_seeds(voc, ["c"], cam_dirs, tmp_path / "x.json", settings)
    with pytest.raises(FileNotFoundError, match="SegmentationClass/d.png"):
        eval_seeds(voc, ["d"], cam_dirs, tmp_path / "x.json", settings)


def test_eval_masks(tmp_path):
    voc, _ = write_seed_fixture(tmp_path)
    masks = [tmp_path / "m0", tmp_path / "m1"]
    pred_a = np.array([[0] * 4] + [[1, 1, 1, 0]] + [[1, 1, 0, 0]] * 2, np.uint8)
    pred_b = np.array([[3, 3, 15, 255]] * 2, np.uint8)  # two unsure pixels
    save_png(masks[0] / "a.png", pred_a, palette())
    save_png(masks[1] / "b.png", pred_b, palette())
    out = tmp_path / "masks.json"
    result = eval_masks(voc, ["a", "b"], masks, out)
    # aeroplane 6/7, background 5/6, bird 1, person 1 (void predictions are not counted).
    assert result["miou"] == pytest.approx(100 * (6 / 7 + 5 / 6 + 2) / 4)
    assert result["pred_void_pct"] == pytest.approx(100 * 2 / 20)  # 12 + 8 labelled pixels
    assert json.loads(out.read_text())["n_images"] == 2

    save_png(masks[1] / "b.png", pred_b[:, :3], palette())
    with pytest.raises(ValueError, match="b.png.*shape"):
        eval_masks(voc, ["b"], masks, out)

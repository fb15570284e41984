import numpy as np
import pytest
from PIL import Image

from csd.data.voc import load_label_png
from csd.irn.ir_label import cam_to_ir_label, make_ir_labels
from csd.runtime.io import save_npz

CRF = {"gt_prob": 0.7, "gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 50,
       "bilateral_srgb": 5, "bilateral_compat": 10, "iterations": 10}
SETTINGS = {"conf_fg_thres": 0.30, "conf_bg_thres": 0.05, "workers": 1, "crf": CRF}
PERSON = 14  # class index; VOC label 15


def radius(h, w, cy, cx):
    yy, xx = np.mgrid[:h, :w]
    return np.hypot(yy - cy, xx - cx)


def test_blob_gives_class_inside_background_far_away_and_unsure_ring():
    # A red object inside a green context region on a grey image; the CAM is strong on
    # the object and weak (between the two thresholds) on the context.
    h, w = 96, 112
    r = radius(h, w, 48, 56)
    image = np.full((h, w, 3), 128, np.uint8)
    image[r < 32] = (40, 160, 40)
    image[r < 16] = (200, 40, 40)
    noise = 1 + 0.1 * np.random.default_rng(0).random((h, w))
    cam = (np.where(r < 16, 0.9, np.where(r < 32, 0.15, 0.01)) * noise).astype(np.float32)
    other = np.full_like(cam, 0.02)  # a second image label with no evidence anywhere
    pack = {"keys": np.array([2, PERSON]), "high_res": np.stack([other, cam])}
    out = cam_to_ir_label(image, pack, SETTINGS)
    assert out.dtype == np.uint8 and out.shape == (h, w)
    expected = np.where(r < 16, PERSON + 1, np.where(r < 32, 255, 0))
    np.testing.assert_array_equal(out, expected)


def test_without_crf_steps_the_thresholds_alone_decide():
    # Zero mean-field steps: the CRF returns the unary's argmax, i.e. the thresholded CAM.
    h, w = 60, 70
    r = radius(h, w, 30, 35)
    cam = np.exp(-(r ** 2) / (2 * 12.0 ** 2)).astype(np.float32)
    image = np.full((h, w, 3), 128, np.uint8)
    settings = dict(SETTINGS, crf=dict(CRF, iterations=0))
    out = cam_to_ir_label(image, {"keys": np.array([PERSON]), "high_res": cam[None]}, settings)
    expected = np.where(cam > 0.30, PERSON + 1, np.where(cam > 0.05, 255, 0))
    np.testing.assert_array_equal(out, expected)


def test_cam_shape_mismatch_is_rejected():
    image = np.zeros((10, 12, 3), np.uint8)
    pack = {"keys": np.array([1]), "high_res": np.zeros((1, 10, 11), np.float32)}
    with pytest.raises(ValueError, match="do not fit"):
        cam_to_ir_label(image, pack, SETTINGS)


def write_fixture(root, n=5):
    """A tiny VOC tree with random images and blob CAMs split over two shard dirs."""
    rng = np.random.default_rng(1)
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    cam_dirs = [root / "cams0", root / "cams1"]
    ids = [f"2007_{i:06d}" for i in range(n)]
    for k, image_id in enumerate(ids):
        h, w = 40 + 4 * k, 50
        image = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        planes = []
        for cy, cx in ((12, 12), (h - 12, w - 14)):  # two objects, one per label
            r = radius(h, w, cy + rng.integers(-3, 4), cx + rng.integers(-3, 4))
            image[r < 7] = rng.integers(0, 255, 3)
            planes.append(np.exp(-(r ** 2) / 80.0) + 0.05 * rng.random((h, w)))
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        keys = np.sort(rng.choice(20, size=2, replace=False))
        high_res = np.stack(planes)
        high_res = (high_res / high_res.max(axis=(1, 2), keepdims=True)).astype(np.float32)
        save_npz(cam_dirs[k % 2] / f"{image_id}.npz", keys=keys, cam=high_res[:, ::4, ::4],
                 high_res=high_res)
    return voc, ids, cam_dirs


def test_parallel_equals_serial_and_resume_skips(tmp_path):
    voc, ids, cam_dirs = write_fixture(tmp_path)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert make_ir_labels(voc, ids, cam_dirs, serial, SETTINGS) == len(ids)
    assert make_ir_labels(voc, ids, cam_dirs, parallel, dict(SETTINGS, workers=2)) == len(ids)
    for image_id in ids:
        a = (serial / f"{image_id}.png").read_bytes()
        assert a == (parallel / f"{image_id}.png").read_bytes()
        labels = load_label_png(serial / f"{image_id}.png")
        assert labels.shape == Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size[::-1]
        assert len(np.unique(labels)) == 3  # background and both objects: not a trivial map
    assert sorted(p.name for p in serial.iterdir()) == [f"{i}.png" for i in ids]  # no leftovers

    # Resume: an existing output is kept as is; only the missing ones are made.
    (serial / f"{ids[0]}.png").write_bytes(b"sentinel")
    (serial / f"{ids[1]}.png").unlink()
    assert make_ir_labels(voc, ids, cam_dirs, serial, dict(SETTINGS, workers=2)) == 1
    assert (serial / f"{ids[0]}.png").read_bytes() == b"sentinel"
    assert (serial / f"{ids[1]}.png").read_bytes() == (parallel / f"{ids[1]}.png").read_bytes()


def test_missing_cam_names_the_id_and_dirs(tmp_path):
    voc, ids, cam_dirs = write_fixture(tmp_path, n=1)
    with pytest.raises(FileNotFoundError, match="2007_000009.*cams0"):
        make_ir_labels(voc, ["2007_000009"], cam_dirs, tmp_path / "out", SETTINGS)


def test_shards_merge_into_one_directory(tmp_path):
    from csd.runtime.store import merge_shards

    voc, ids, cam_dirs = write_fixture(tmp_path, n=3)
    (cam_dirs[0] / ".2007_000099.npz.x.part").write_bytes(b"unfinished")
    out = tmp_path / "cam" / "all"
    assert merge_shards(cam_dirs, out) == 3
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.npz" for i in ids]
    # Later stages read the merged directory; the shards can go.
    for d in cam_dirs:
        for p in d.iterdir():
            p.unlink()
    labels = make_ir_labels(voc, ids, [out], tmp_path / "ir", SETTINGS)
    assert labels == 3
    (cam_dirs[1] / f"{ids[0]}.npz").write_bytes(b"x")
    (cam_dirs[0] / f"{ids[0]}.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="in both"):
        merge_shards(cam_dirs, out)
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.npz" for i in ids]  # untouched
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no leftovers

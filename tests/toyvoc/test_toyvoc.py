"""ToyVOC generator: determinism, VOCdevkit layout, and the context/co-occurrence biases."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csd.data.voc import CLASSES, read_ids
from csd.toyvoc.generate import generate
from csd.toyvoc.render import render_image
from csd.toyvoc.world import CONTEXTS, PREFERRED_CONTEXT, plan_image


def settings(**overrides):
    base = dict(seed=0, n_train=12, n_val=8, n_test=4, n_sbd_train=6, n_sbd_val=4, sbd_overlap=2,
                size_min=64, size_max=80, context_strength=0.9, single_label_fraction=0.5,
                max_classes=3, max_instances=4, object_min_frac=0.04, object_max_frac=0.3,
                min_visible_frac=0.01, void_width=2, jpeg_quality=90)
    base.update(overrides)
    return base


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "toyvoc"
    summary = generate(root, settings())
    return root, summary


@pytest.fixture(scope="module")
def biased_and_control(tmp_path_factory):
    """300 small images at s = 0.9 and at s = 0 (the unbiased control), same seed."""
    out = {}
    for s in (0.9, 0.0):
        root = tmp_path_factory.mktemp(f"toy_s{s}") / "toyvoc"
        cfg = settings(n_train=150, n_val=60, n_test=0, n_sbd_train=90, n_sbd_val=0,
                       size_min=64, size_max=80, context_strength=s, seed=3)
        generate(root, cfg)
        out[s] = json.loads((root / "toyvoc_meta.json").read_text())
    return out


def test_same_seed_same_bytes_other_seed_differs(small_tree, tmp_path):
    root, _ = small_tree
    first = tree_bytes(root)
    generate(tmp_path / "again", settings())
    assert tree_bytes(tmp_path / "again") == first
    # Regenerating over an existing tree replaces it in place and leaves no temp dirs.
    generate(tmp_path / "again", settings(seed=1))
    other = tree_bytes(tmp_path / "again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]
    jpegs = [k for k in first if k.endswith(".jpg")]
    assert sum(first[k] != other.get(k) for k in jpegs) == len(jpegs)


def test_layout_pngs_and_xml_agree(small_tree, tmp_path):
    root, summary = small_tree
    voc = root / "VOCdevkit" / "VOC2012"
    lists = {name: read_ids(voc / "ImageSets" / "Segmentation" / f"{name}.txt")
             for name in ("train", "val", "test")}
    sbd = {name: read_ids(root / "benchmark_RELEASE" / "dataset" / f"{name}.txt")
           for name in ("train", "val")}
    assert [len(lists[n]) for n in ("train", "val", "test")] == [12, 8, 4]
    assert all(len(i) == 11 and i[4] == "_" for ids in lists.values() for i in ids)
    # SBD overlaps VOC train and val, so train_aug has duplicates and val ids to remove.
    sbd_all = set(sbd["train"]) | set(sbd["val"])
    assert sbd_all & set(lists["train"]) and sbd_all & set(lists["val"])
    train_aug = (set(lists["train"]) | sbd_all) - set(lists["val"])
    assert len(train_aug) == 12 + 6 + 4 == summary["split_counts"]["train_aug"]
    valid = set(range(21)) | {255}
    all_ids = set().union(*lists.values(), sbd_all)
    for image_id in all_ids:
        assert (voc / "JPEGImages" / f"{image_id}.jpg").is_file()
        xml = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
        names = {o.findtext("name") for o in xml.iter("object")}
        assert names and names <= set(CLASSES)
        width, height = int(xml.findtext("size/width")), int(xml.findtext("size/height"))
        assert Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size == (width, height)
        png = voc / "SegmentationClass" / f"{image_id}.png"
        if image_id not in set(lists["train"]) | set(lists["val"]):
            assert not png.exists()
            assert (root / "toyvoc_test_gt" / "SegmentationClass" / png.name).exists() == \
                (image_id in lists["test"])
            continue
        img = Image.open(png)
        assert img.mode == "P" and img.size == (width, height)
        values = set(np.unique(np.asarray(img)).tolist())
        assert values <= valid and 255 in values and 0 in values
        assert {CLASSES[v - 1] for v in values - {0, 255}} == names


def test_instance_masks_split_the_class_masks_into_the_annotated_objects(small_tree):
    root, _ = small_tree
    voc = root / "VOCdevkit" / "VOC2012"
    meta = {r["id"]: r for r in json.loads((root / "toyvoc_meta.json").read_text())["images"]}
    train = read_ids(voc / "ImageSets" / "Segmentation" / "train.txt")
    for image_id in train:
        classes = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        objects = np.asarray(Image.open(voc / "SegmentationObject" / f"{image_id}.png"))
        # same background and void band; each object lies on one class
        assert np.array_equal(objects == 0, classes == 0)
        assert np.array_equal(objects == 255, classes == 255)
        instances = meta[image_id]["instances"]
        assert sorted(set(np.unique(objects).tolist()) - {0, 255}) == list(
            range(1, len(instances) + 1))
        for k, inst in enumerate(instances, start=1):
            on = classes[objects == k]
            assert set(on.tolist()) == {CLASSES.index(inst["class"]) + 1}
            assert on.size == inst["visible_pixels"]


def test_void_band_width(tmp_path):
    thin = generate(tmp_path / "a", settings(void_width=0, n_sbd_train=0, n_sbd_val=0, n_test=0))
    assert thin["n_images"] == 20
    png = next((tmp_path / "a" / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*.png"))
    assert 255 not in np.asarray(Image.open(png))


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="context_strength"):
        generate(tmp_path / "x", settings(context_strength=1.5))
    with pytest.raises(ValueError, match="jpeg_quality"):
        generate(tmp_path / "x", settings(jpeg_quality=0))
    cfg = settings()
    del cfg["void_width"]
    with pytest.raises(KeyError, match=r"settings 'dataset.toyvoc' lacks keys \['void_width'\]"):
        generate(tmp_path / "x", cfg)
    assert not (tmp_path / "x").exists()


def test_failure_leaves_old_tree_untouched(small_tree, tmp_path, monkeypatch):
    generate(tmp_path / "t", settings(n_sbd_train=0, n_sbd_val=0, n_test=0))
    before = tree_bytes(tmp_path / "t")
    calls = []

    def broken(cfg, plan):
        calls.append(plan["id"])
        if len(calls) > 3:
            raise RuntimeError("killed")
        return real(cfg, plan)

    real = render_image
    monkeypatch.setattr("csd.toyvoc.generate.render_image", broken)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "t", settings(seed=5))
    assert tree_bytes(tmp_path / "t") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_objects_do_not_depend_on_context_strength():
    for index in range(60):
        a = plan_image(settings(context_strength=0.0), index)
        b = plan_image(settings(context_strength=1.0), index)
        assert (a["width"], a["height"], a["main"], len(a["instances"])) == \
               (b["width"], b["height"], b["main"], len(b["instances"]))
        if a["classes"] == b["classes"]:
            assert a["instances"] == b["instances"]
        assert b["preferred"]


def test_label_and_context_statistics(biased_and_control):
    n_contexts = len(CONTEXTS)
    for s, meta in biased_and_control.items():
        images, summary = meta["images"], meta["summary"]
        assert len(images) == 300
        single = np.mean([len(r["classes"]) == 1 for r in images])
        assert abs(single - 0.5) < 0.09
        assert summary["single_label_fraction"] == pytest.approx(single)
        preferred = np.mean([r["context"] == PREFERRED_CONTEXT[r["main_class"]] for r in images])
        assert summary["preferred_context_fraction"] == pytest.approx(preferred)
        # Binomial sd at n = 300 is at most 0.018: 0.055 is three of them.
        assert abs(preferred - (s + (1 - s) / n_contexts)) < 0.055
        contexts = [r["context"] for r in images]
        assert set(contexts) == set(CONTEXTS)
    # The unbiased control has no context preference for any frequent class either.
    control = biased_and_control[0.0]["summary"]
    table = np.asarray(control["class_context_counts"])
    per_class_pref = [table[c, CONTEXTS.index(PREFERRED_CONTEXT[name])] / table[c].sum()
                      for c, name in enumerate(CLASSES)]
    assert np.mean(per_class_pref) < 0.1 + 0.06
    # At s = 0.9 the poster's shortcuts are nearly class-specific.
    biased = biased_and_control[0.9]["images"]
    for cls, ctx in (("boat", "water"), ("train", "rails")):
        hosts = [r for r in biased if r["context"] == ctx]
        assert np.mean([r["main_class"] == cls for r in hosts]) > 0.6
        assert np.mean([r["context"] == ctx for r in biased if r["main_class"] == cls]) > 0.75


def test_partner_cooccurrence(biased_and_control):
    def pairs(meta):
        co = np.asarray(meta["summary"]["cooccurrence"])
        idx = CLASSES.index
        return sum(co[idx(a), idx(b)] for a, b in (("person", "horse"), ("person", "bicycle"),
                                                   ("person", "motorbike"), ("chair", "diningtable")))

    biased, control = pairs(biased_and_control[0.9]), pairs(biased_and_control[0.0])
    assert biased > 3 * control + 10
    summary = biased_and_control[0.9]["summary"]
    assert summary["partner_fraction_multilabel"] > 0.7
    assert biased_and_control[0.0]["summary"]["partner_fraction_multilabel"] < 0.3
    co = np.asarray(summary["cooccurrence"])
    assert (co == co.T).all() and np.diag(co).tolist() == summary["class_counts"]

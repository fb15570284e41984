"""Writing the VOCdevkit tree: every split's images, masks and lists, and the measured
statistics (toyvoc_meta.json), atomically."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from csd.data.voc import CLASSES, NUM_CLASSES, palette
from csd.runtime.io import save_json, save_png
from csd.toyvoc.render import annotation_xml, render_image, write_jpeg
from csd.toyvoc.world import (
    CONTEXTS,
    PARTNERS,
    PREFERRED_CONTEXT,
    check_settings,
    plan_image,
    split_ids,
)


def summarize(settings, records, splits):
    """Measured statistics of the generated images (all splits together)."""
    n = len(records)
    s = settings["context_strength"]
    cooccurrence = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    class_context = np.zeros((NUM_CLASSES, len(CONTEXTS)), np.int64)
    single_per_class = np.zeros(NUM_CLASSES, np.int64)
    n_single = n_preferred = n_partner_images = n_partner_present = n_dropped = 0
    for rec in records:
        present = [CLASSES.index(c) for c in rec["classes"]]
        for i in present:
            class_context[i, CONTEXTS.index(rec["context"])] += 1
            for j in present:
                cooccurrence[i, j] += 1
        if len(present) == 1:
            n_single += 1
            single_per_class[present[0]] += 1
        n_preferred += rec["context"] == PREFERRED_CONTEXT[rec["main_class"]]
        partners = PARTNERS.get(rec["main_class"], ())
        if partners and len(rec["classes"]) >= 2:
            n_partner_images += 1
            n_partner_present += any(p in rec["classes"] for p in partners)
        n_dropped += rec["dropped_instances"]
    voc_val = set(splits["voc_val"])
    train_aug = sorted((set(splits["voc_train"]) | set(splits["sbd_train"]) | set(splits["sbd_val"])) - voc_val)
    return {
        "n_images": n,
        "split_counts": {**{name: len(ids) for name, ids in splits.items()}, "train_aug": len(train_aug)},
        "single_label_fraction": n_single / n,
        "multi_label_fraction": 1 - n_single / n,
        "preferred_context_fraction": n_preferred / n,
        "expected_preferred_context_fraction": s + (1 - s) / len(CONTEXTS),
        "partner_fraction_multilabel": n_partner_present / max(n_partner_images, 1),
        "dropped_instances": n_dropped,
        "classes": list(CLASSES),
        "contexts": list(CONTEXTS),
        "preferred_context": PREFERRED_CONTEXT,
        "partners": {k: list(v) for k, v in PARTNERS.items()},
        "class_counts": np.diag(cooccurrence).tolist(),
        "single_label_counts": single_per_class.tolist(),
        "cooccurrence": cooccurrence.tolist(),
        "class_context_counts": class_context.tolist(),
    }


def generate(out_root, settings):
    """Write a ToyVOC tree under `out_root` and return its summary statistics.

    out_root/VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,SegmentationObject,
                                ImageSets/Segmentation}
    out_root/benchmark_RELEASE/dataset/{train,val}.txt   (SBD-like extra ids, no PNGs)
    out_root/toyvoc_test_gt/SegmentationClass/<id>.png   (test ground truth, kept out of
                                                         VOC2012 as in the real release)
    out_root/toyvoc_meta.json                            (per-image records + summary)
    The tree is built in a temporary directory next to out_root and renamed into place.
    """
    check_settings(settings)
    out_root = Path(out_root)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    splits = split_ids(settings)
    with_mask = set(splits["voc_train"]) | set(splits["voc_val"])
    test_ids = set(splits["voc_test"])
    membership = {}
    for name, ids in splits.items():
        for i in ids:
            membership.setdefault(i, []).append(name)
    n_images = sum(settings[k] for k in ("n_train", "n_val", "n_test", "n_sbd_train", "n_sbd_val"))

    tmp = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.", suffix=".part"))
    try:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                    "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        (tmp / "benchmark_RELEASE" / "dataset").mkdir(parents=True)
        (tmp / "toyvoc_test_gt" / "SegmentationClass").mkdir(parents=True)
        pal = palette()
        records = []
        for index in range(n_images):
            plan = plan_image(settings, index)
            image, labels, objects, kept = render_image(settings, plan)
            iid = plan["id"]
            write_jpeg(voc / "JPEGImages" / f"{iid}.jpg", image, settings["jpeg_quality"])
            (voc / "Annotations" / f"{iid}.xml").write_text(annotation_xml(plan, kept))
            if iid in with_mask:
                save_png(voc / "SegmentationClass" / f"{iid}.png", labels, pal)
                save_png(voc / "SegmentationObject" / f"{iid}.png", objects, pal)
            elif iid in test_ids:
                save_png(tmp / "toyvoc_test_gt" / "SegmentationClass" / f"{iid}.png", labels, pal)
            present = sorted({inst["cls"] for inst in kept})
            records.append({
                "id": iid, "splits": membership[iid], "width": plan["width"], "height": plan["height"],
                "classes": [CLASSES[c] for c in present],
                "main_class": CLASSES[plan["main"]],
                "context": CONTEXTS[plan["context"]],
                "preferred_context": bool(plan["preferred"]),
                "partnered": bool(plan["partnered"]),
                "dropped_instances": len(plan["instances"]) - len(kept),
                "instances": [{"class": CLASSES[inst["cls"]], "bbox": inst["bbox"],
                               "visible_pixels": inst["visible_pixels"]} for inst in kept],
            })
        for name, file in (("voc_train", "train"), ("voc_val", "val"), ("voc_test", "test")):
            (voc / "ImageSets" / "Segmentation" / f"{file}.txt").write_text("".join(f"{i}\n" for i in splits[name]))
        for name, file in (("sbd_train", "train"), ("sbd_val", "val")):
            (tmp / "benchmark_RELEASE" / "dataset" / f"{file}.txt").write_text("".join(f"{i}\n" for i in splits[name]))
        summary = summarize(settings, records, splits)
        save_json(tmp / "toyvoc_meta.json", {"settings": dict(settings), "summary": summary, "images": records})
        if out_root.exists():  # replace a previous tree, never leave a half-written one
            old = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.", suffix=".old"))
            os.replace(out_root, old / "tree")
            os.replace(tmp, out_root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary

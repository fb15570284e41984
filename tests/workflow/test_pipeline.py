"""End to end: IRN, IRN+CSD, IRN+CDA, MCTformer and MCTformer+CSD on a tiny synthetic config, run by Snakemake in a
subprocess, then what a changed setting or an edited stage module reruns."""

import json
import re
import tarfile

import numpy as np
import pytest

from csd.data.voc import load_label_png
from csd.results.metrics import confusion_matrix, scores
from csd.results.table import train_cpu_seconds
from tests.conftest import TINY, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow

SEGMENTATION = {"train_seg", "infer_seg", "merge_shards", "eval_seg", "test_archive",
                "overlays"}
DOWNSTREAM_OF_MAKE_CAM = {"make_cam", "merge_shards", "eval_cam", "cam_to_ir_label",
                          "train_irn", "make_sem_seg", "eval_sem_seg"} | SEGMENTATION


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def miou_of(run, split, pred_dir=None):
    """mIoU of the label PNGs in `pred_dir` (None: background everywhere) on the run's
    `split` ground truth, with the project's own metric functions."""
    root = run["work"] / "data/toyvoc/VOCdevkit/VOC2012/SegmentationClass"
    confusion = 0
    for i in (run["work"] / f"data/splits/toyvoc/{split}.txt").read_text().split():
        gt = load_label_png(root / f"{i}.png")
        pred = np.zeros_like(gt) if pred_dir is None else load_label_png(pred_dir / f"{i}.png")
        confusion = confusion + confusion_matrix(gt, pred)
    return scores(confusion)["miou"]


@pytest.mark.parametrize("method", TINY["methods"])
def test_run_produces_seed_and_mask_metrics(run, method):
    out = run["work"] / f"results/{method}/seed0"
    seed = json.loads((out / "seed_metrics.json").read_text())
    mask = json.loads((out / "mask_metrics.json").read_text())
    background = miou_of(run, "train")
    for metrics in (seed, mask):
        assert metrics["n_images"] == 12
        # Never below predicting background everywhere (seeds and masks use the image
        # labels). Not strictly above: the tiny irn/irn_cda classifiers (3 steps on a frozen
        # backbone pretrained on 32 images) stay on the all-negative plateau, their CAMs
        # are exactly 0 and the seeds all background; tests/overfit/test_overfit.py is where every
        # trainer must be seen to learn.
        assert background <= metrics["miou"] <= 100
    assert {point["threshold"] for point in seed["curve"]} >= {0.05, 0.15, 0.5}
    train_aug = (run["work"] / "data/splits/toyvoc/train_aug.txt").read_text().split()
    assert len(train_aug) == 12 + 10 + 4
    # Both make_cam shards were merged: one CAM and one pseudo mask per train_aug image.
    assert sorted(p.stem for p in (out / "cam/all").glob("*.npz")) == sorted(train_aug)
    assert sorted(p.stem for p in (out / "mask/all").glob("*.png")) == sorted(train_aug)
    history = json.loads((out / "cam_history.json").read_text())
    assert len(history) == 1 and history[0]["loss"] > 0
    stage = "train_mct" if method.startswith("mct") else "train_cam"  # the loop's progress name
    assert (run["work"] / f"logs/{method}/seed0/train_cam.log").read_text().count(stage)
    if method.endswith("_csd"):  # the decoupling losses ran and were logged
        assert {"cls", "fg", "bg"} <= set(history[0])
    if method == "mct":  # both MCTformer heads were trained
        assert {"cls", "patch"} <= set(history[0])


@pytest.mark.parametrize("method", TINY["methods"])
def test_run_trains_deeplab_and_evaluates_val_and_packs_test(run, method):
    out = run["work"] / f"results/{method}/seed0"
    val_ids = (run["work"] / "data/splits/toyvoc/val.txt").read_text().split()
    for variant in ("val", "val_crf"):
        metrics = json.loads((out / f"{variant}_metrics.json").read_text())
        # 6 DeepLab iterations need not beat background-only predictions, nor find any
        # class (irn_csd's DeepLab once scored 0.0: one absent class everywhere)
        assert metrics["n_images"] == len(val_ids) == 6 and 0 <= metrics["miou"] <= 100
        # (tests/overfit/test_overfit.py shows DeepLab learning); the value must be the one its
        # saved predictions give
        saved = miou_of(run, "val", out / f"pred_{variant}/all")
        assert metrics["miou"] == pytest.approx(saved)
    history = json.loads((out / "seg_history.json").read_text())
    assert len(history) >= 1 and all(epoch["loss"] > 0 for epoch in history)
    test_ids = (run["work"] / "data/splits/toyvoc/test.txt").read_text().split()
    with tarfile.open(out / "test_archive.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png"
                           for i in test_ids) and len(names) == 4


def test_table_has_a_row_per_method_then_the_paper_rows(run):
    import pandas as pd

    table = pd.read_csv(run["work"] / "results/table.csv")
    ours = table[table["source"] == "reproduced"]
    assert list(ours["method"]) == TINY["methods"]
    assert (ours["n_seeds"] == 1).all() and ours["seed_miou"].between(0, 100).all()
    assert ours["val_miou"].between(0, 100).all() and ours["val_crf_miou"].notna().all()
    assert ours["test_archive"].str.endswith("test_archive.tar.gz").all()
    # each method's classifier CPU time over irn's, from the rules' benchmark files (the
    # CSV holds 2 decimals)
    cpu = {m: train_cpu_seconds(run["work"] / f"logs/benchmark/{m}/seed0/train_cam.tsv")
           for m in TINY["methods"]}
    for method, ratio in ours.set_index("method")["train_cpu_ratio"].items():
        assert ratio == pytest.approx(cpu[method] / cpu["irn"], abs=0.006)
    assert (table["source"] == "paper").sum() >= 5
    assert (run["work"] / "results/table.html").exists()


def test_report_builds_with_the_table_and_figures(run):
    figures = run["work"] / "results/figures"
    expected = {"per_class_iou.png", "training_curves.png",
                *(f"overlays_{m}_seed0.png" for m in TINY["methods"])}
    assert {p.name for p in figures.glob("*.png")} == expected
    report = run["base"] / "report.html"
    snakemake(run["work"], "--report", str(report), configs=[run["config"]],
              snakefile=run["repo"] / "Snakefile")
    html = report.read_text()
    assert all(name in html for name in [*expected, "table.html"])


def test_second_dry_run_has_nothing_to_do(run):
    proc = snakemake(run["work"], "-n", configs=[run["config"]],
                     snakefile=run["repo"] / "Snakefile")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_make_cam_setting_reruns_make_cam_and_what_follows_only(run):
    changed = dict(TINY, make_cam=dict(TINY["make_cam"], scales=[1.0]))
    config = write_config(run["base"] / "changed.yaml", changed)
    proc = snakemake(run["work"], "-n", configs=[config], snakefile=run["repo"] / "Snakefile")
    jobs = planned_jobs(proc)
    assert {rule for rule, method in jobs if method == "irn"} == DOWNSTREAM_OF_MAKE_CAM
    # CSD and CDA train on irn's pseudo masks, which change: their classifiers rerun.
    assert {("train_cam", "irn_csd"), ("train_cam", "irn_cda")} <= jobs


def test_csd_setting_reruns_only_the_csd_method(run):
    changed = dict(TINY, csd={"temperature": 5.0})
    config = write_config(run["base"] / "csd_changed.yaml", changed)
    proc = snakemake(run["work"], "-n", configs=[config], snakefile=run["repo"] / "Snakefile")
    jobs = planned_jobs(proc)
    assert ("train_cam", "irn_csd") in jobs and ("eval_sem_seg", "irn_csd") in jobs
    assert ("table", None) in jobs and ("train_cam", "mct_csd") in jobs
    assert {method for _, method in jobs} == {"irn_csd", "mct_csd", None}
    # an MCTformer-only CSD setting reruns mct_csd only
    config = write_config(run["base"] / "csd_mct_changed.yaml", dict(TINY, csd_mct={"bg_scale": 5}))
    jobs = planned_jobs(snakemake(run["work"], "-n", configs=[config],
                                  snakefile=run["repo"] / "Snakefile"))
    assert ("train_cam", "mct_csd") in jobs
    assert {method for _, method in jobs} == {"mct_csd", None}


def jobs_after_editing(run, module):
    """The dry run's jobs once `module` (in the run's repo copy) has been edited (its code:
    an edited comment reruns nothing, tests/workflow/test_rerun.py)."""
    path = run["repo"] / module
    original = path.read_text()
    path.write_text(original + "\n_EDITED = True\n")
    try:
        proc = snakemake(run["work"], "-n", configs=[run["config"]],
                         snakefile=run["repo"] / "Snakefile")
    finally:
        path.write_text(original)
    return planned_jobs(proc)


def test_editing_a_stage_module_reruns_that_stage(run):
    jobs = jobs_after_editing(run, "csd/irn/make_sem_seg.py")
    assert {rule for rule, method in jobs if method == "irn"} == {
        "make_sem_seg", "merge_shards", "eval_sem_seg"} | SEGMENTATION
    # irn's masks are the round-0 masks of CSD and CDA: their classifiers rerun too.
    assert {("train_cam", "irn_csd"), ("train_cam", "irn_cda")} <= jobs


def test_editing_csd_code_reruns_only_the_csd_classifier_and_what_follows(run):
    jobs = jobs_after_editing(run, "csd/methods/csd/train.py")
    assert ("train_cam", "irn_csd") in jobs and ("train_cam", "mct_csd") in jobs
    assert {m for _, m in jobs} == {"irn_csd", "mct_csd", None}


def test_editing_the_transformer_reruns_only_the_mctformer_runs(run):
    jobs = jobs_after_editing(run, "csd/methods/mct/mctformer.py")
    assert {("train_cam", "mct"), ("make_cam", "mct"), ("train_cam", "mct_csd")} <= jobs
    assert {m for _, m in jobs} == {"mct", "mct_csd", None}
    # IRN's backbone for MCTformer runs is not the classifier's: no cam_model.pt input
    jobs = jobs_after_editing(run, "csd/irn/train_irn.py")
    assert {("train_irn", m) for m in TINY["methods"]} <= jobs


def test_one_pretraining_serves_every_resnet_stage_of_every_run(run):
    """The tiny route: pretrain_backbone ran once, and every ResNet stage started from its
    weights (frozen parts still equal them after training)."""
    import torch

    log = run["proc"].stdout + run["proc"].stderr
    assert len(re.findall(r"^(local)?rule pretrain_backbone:", log, re.M)) == 1
    pretrained = torch.load(run["work"] / TINY["train_cam"]["backbone"]["pretrained"],
                            weights_only=True)
    layer2 = {k: v for k, v in pretrained.items() if k.startswith("layer2.")}
    assert layer2
    for method in ("irn", "irn_csd", "irn_cda"):  # conv1..layer2 frozen in the classifier
        cam = torch.load(run["work"] / f"results/{method}/seed0/cam_model.pt",
                         weights_only=True)["model"]
        for key, value in layer2.items():
            assert torch.equal(cam["backbone.stage2." + key[len("layer2."):]], value), key
    for method in TINY["methods"]:  # IRN's backbone is frozen whole, MCTformer runs too
        irn = torch.load(run["work"] / f"results/{method}/seed0/irn_model.pt",
                         weights_only=True)["model"]
        assert torch.equal(irn["backbone.stage4.1.conv2.weight"],
                           pretrained["layer4.1.conv2.weight"])
        # DeepLab's frozen BatchNorm keeps the pretrained statistics
        seg = torch.load(run["work"] / f"results/{method}/seed0/seg_model.pt",
                         weights_only=True)["model"]
        assert torch.equal(seg["backbone.1.running_var"], pretrained["bn1.running_var"])


def test_one_vit_pretraining_serves_both_mctformer_runs(run):
    """pretrain_vit ran once; its weights file is a DeiT file (no head) of train_mct's shape,
    and the MCTformer classifiers (the only ones naming it) are what a new one reruns."""
    import torch

    log = run["proc"].stdout + run["proc"].stderr
    assert len(re.findall(r"^(local)?rule pretrain_vit:", log, re.M)) == 1
    state = torch.load(run["work"] / TINY["train_mct"]["model"]["pretrained"], weights_only=True)
    assert "cls_token" in state and not any(k.startswith("head.") for k in state)
    changed = dict(TINY, pretrain_vit=dict(TINY["pretrain_vit"], epochs=2))
    jobs = planned_jobs(snakemake(run["work"], "-n", configs=[
        write_config(run["base"] / "vit_changed.yaml", changed)],
        snakefile=run["repo"] / "Snakefile"))
    assert ("pretrain_vit", None) in jobs
    assert {("train_cam", "mct"), ("train_cam", "mct_csd")} <= jobs
    assert not {("train_cam", m) for m in ("irn", "irn_csd", "irn_cda")} & jobs
    assert ("pretrain_backbone", None) not in jobs


def test_thread_setting_reruns_the_torch_stages_and_not_the_data(run):
    """Outputs depend on the thread count: a new job_threads reruns every torch stage."""
    config = write_config(run["base"] / "threads_changed.yaml", dict(TINY, job_threads=1))
    jobs = planned_jobs(snakemake(run["work"], "-n", configs=[config],
                                  snakefile=run["repo"] / "Snakefile"))
    assert ("pretrain_backbone", None) in jobs and ("pretrain_vit", None) in jobs
    for rule in ("train_cam", "make_cam", "train_irn", "make_sem_seg", "train_seg",
                 "infer_seg"):
        assert {(rule, m) for m in TINY["methods"]} <= jobs, rule
    assert ("make_toyvoc", None) not in jobs and ("build_splits", None) not in jobs


def test_pretraining_setting_reruns_pretraining_and_the_resnet_stages(run):
    changed = dict(TINY, pretrain_backbone=dict(TINY["pretrain_backbone"], epochs=2))
    config = write_config(run["base"] / "pretrain_changed.yaml", changed)
    jobs = planned_jobs(snakemake(run["work"], "-n", configs=[config],
                                  snakefile=run["repo"] / "Snakefile"))
    assert ("pretrain_backbone", None) in jobs
    assert {("train_cam", m) for m in ("irn", "irn_csd", "irn_cda")} <= jobs
    assert {("train_irn", m) for m in TINY["methods"]} <= jobs
    # the ViT classifier does not start from the ResNet (mct_csd's does rerun: its round-0
    # masks come from mct's IRN, which does)
    assert ("train_cam", "mct") not in jobs and ("pretrain_vit", None) not in jobs
    assert ("make_toyvoc", None) not in jobs and ("build_splits", None) not in jobs

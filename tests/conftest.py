import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from csd.data.voc import palette, write_labels_csv
from csd.runtime.io import save_png

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: OpenMP threads only add spin-waits, badly so on a shared 2-core box
    (use with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def layer_dtypes():
    """The set of output dtypes of every convolution and linear layer run inside: what
    autocast gave them (bfloat16 under a bf16 stage, float32 without autocast)."""
    seen = set()

    def hook(module, args, output):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


# what csd.runtime.training.fit records for every epoch besides a step's own parts
RECORD = {"epoch", "lr", "loss", "grad_norm", "grad_norm_max", "precision", "threads"}


PRETRAINED = "data/pretrain/resnet18.pth"  # pretrain_backbone's output at depth 18
PRETRAINED_VIT = "data/pretrain/vit_e48_d2_p16.pth"  # pretrain_vit's output for its model
# The tiny synthetic config of the end-to-end runs (tests/workflow/test_pipeline.py,
# tests/workflow/test_slurm.py, benchmarks/scaleout.py): every stage, the five methods, a few
# seconds per job on a CPU.
TINY = {
    "methods": ["irn", "irn_csd", "irn_cda", "mct", "mct_csd"],
    "dataset": {"name": "toyvoc", "toyvoc": {
        "n_train": 12, "n_val": 6, "n_test": 4, "n_sbd_train": 10, "n_sbd_val": 4,
        "sbd_overlap": 2, "size_min": 64, "size_max": 80}},
    # the synthetic benchmark's route: procedural pretraining, then every ResNet stage
    # starts from its weights (frozen BatchNorm, frozen stem stages)
    "pretrain_backbone": {"depth": 18, "n_images": 32, "epochs": 1, "batch_size": 16,
                          "crop": 64, "resize_long": [64, 80]},
    "train_cam": {
        "backbone": {"depth": 18, "pretrained": PRETRAINED, "frozen_stages": 2,
                     "freeze_bn": True},
        "batch_size": 8, "epochs": 1, "momentum": 0.9, "resize_long": [64, 80], "crop": 64,
        "num_workers": 0},
    "pretrain_vit": {"model": {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 16,
                               "drop_path": 0.1},
                     "n_images": 32, "epochs": 1, "batch_size": 16, "crop": 64,
                     "resize_long": [64, 80]},
    "train_mct": {
        "model": {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 16,
                  "drop_path": 0.1, "pretrained": PRETRAINED_VIT},
        "batch_size": 8, "epochs": 1, "warmup_epochs": 0, "crop": 64,
        "resize_long": [64, 80], "num_workers": 0},
    "make_cam": {"scales": [1.0, 0.5], "shards": 2},
    "cam_to_ir_label": {"workers": 1, "shards": 1},
    "train_irn": {
        "backbone": {"depth": 18, "pretrained": PRETRAINED, "strides": [2, 2, 2, 1]},
        "batch_size": 8, "epochs": 1, "crop": 64, "radius": 5,
        "num_workers": 0},
    "make_sem_seg": {"shards": 2},
    "train_seg": {"backbone": {"depth": 18, "pretrained": PRETRAINED, "freeze_bn": True},
                  "batch_size": 4,
                  "iterations": 6, "crop": 48, "num_workers": 0},
    "infer_seg": {"scales": [1.0, 0.5], "shards": 2},
    # one epoch of a tiny classifier gives rough masks: accept any instance size
    "cda": {"area_range": [0.01, 1.0]},
}


def snakemake(workdir, *args, configs=(), check=True, timeout=1800, env=None, snakefile=None):
    """Run the repository's workflow in `workdir` in a subprocess (as a user would)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile or REPO / "Snakefile"),
           "-d", str(workdir)]
    cmd += list(args)
    if configs:  # one option, last: a repeated --configfile keeps only its last value
        cmd += ["--configfile", *map(str, configs)]
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def planned_jobs(proc):
    """{(rule, method)} of a dry run's jobs (method None for jobs without that wildcard)."""
    jobs = set()
    for block in re.split(r"^rule ", proc.stdout + proc.stderr, flags=re.M)[1:]:
        rule = block.split(":", 1)[0].strip()
        method = re.search(r"wildcards: .*?method=(\w+)", block)
        jobs.add((rule, method.group(1) if method else None))
    return jobs


def write_config(path, overrides):
    Path(path).write_text(yaml.safe_dump(overrides, sort_keys=False))
    return path


def copy_repo(source, dest, fresh_dates=False):
    """A copy of the repository's source (not its runs); fresh_dates: as `cp -r` gives."""
    source = Path(source)
    runs = {".git", ".venv", "data", "results", "logs", ".snakemake", ".gpu_locks"}

    def ignore(directory, names):  # the runs' folders at the top only (csd/data is code)
        top = Path(directory) == source
        return [n for n in names if n == "__pycache__" or (top and n in runs)]

    return shutil.copytree(source, dest, ignore=ignore,
                           copy_function=shutil.copyfile if fresh_dates else shutil.copy2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """TINY run locally at --cores 2 from a private copy of the repository (so tests may edit
    its modules); shared by the pipeline tests and the SLURM test's comparison."""
    base = tmp_path_factory.mktemp("pipeline")
    repo = copy_repo(REPO, base / "repo")
    work = base / "work"
    work.mkdir()
    config = write_config(base / "tiny.yaml", TINY)
    # five methods' whole DAGs: minutes on an idle 2-core box, over 30 on a loaded one
    proc = snakemake(work, "--cores", "2", configs=[config], snakefile=repo / "Snakefile",
                     timeout=3600)
    return {"repo": repo, "work": work, "config": config, "proc": proc, "base": base}


@pytest.fixture
def repo():
    return REPO


COLOURS = {0: (220, 30, 30), 1: (30, 200, 30), 14: (30, 30, 220)}  # class -> square colour


def make_voc(root, n=8, seed=0, size=(48, 64), square=(12, 19)):
    """n JPEGs (sides in `size` px) on a grey background with one square (side in `square`)
    per labelled class, their label maps in SegmentationClass and labels.csv; returns
    (sorted ids, {id: classes})."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    labels = {}
    for i in range(n):
        h, w = rng.integers(size[0], size[1] + 1, size=2)
        image = np.full((h, w, 3), 120, np.uint8)
        mask = np.zeros((h, w), np.uint8)
        classes = sorted(rng.choice(list(COLOURS), size=rng.integers(1, 3), replace=False))
        for c in classes:
            s = int(rng.integers(square[0], square[1] + 1))
            y, x = rng.integers(0, h - s), rng.integers(0, w - s)
            image[y:y + s, x:x + s] = COLOURS[c]
            mask[y:y + s, x:x + s] = c + 1
        image_id = f"2099_{i:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        save_png(root / "SegmentationClass" / f"{image_id}.png", mask, palette())
        labels[image_id] = [int(c) for c in classes]
    write_labels_csv(root / "labels.csv", labels)
    return sorted(labels), labels

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from csd.io import save_png
from csd.voc import palette, write_labels_csv

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: OpenMP threads only add spin-waits, badly so on a shared 2-core box
    (use with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def snakemake(workdir, *args, configs=(), check=True, timeout=1800, env=None, snakefile=None):
    """Run the repository's workflow in `workdir` in a subprocess (as a user would)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile or REPO / "Snakefile"),
           "-d", str(workdir)]
    for config in configs:
        cmd += ["--configfile", str(config)]
    cmd += list(args)
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def write_config(path, overrides):
    Path(path).write_text(yaml.safe_dump(overrides, sort_keys=False))
    return path


@pytest.fixture
def repo():
    return REPO


COLOURS = {0: (220, 30, 30), 1: (30, 200, 30), 14: (30, 30, 220)}  # class -> square colour


def make_voc(root, n=8, seed=0):
    """n JPEGs (48-64 px) on a grey background with one square per labelled class, their
    label maps in SegmentationClass and labels.csv; returns (sorted ids, {id: classes})."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    labels = {}
    for i in range(n):
        h, w = rng.integers(48, 65, size=2)
        image = np.full((h, w, 3), 120, np.uint8)
        mask = np.zeros((h, w), np.uint8)
        classes = sorted(rng.choice(list(COLOURS), size=rng.integers(1, 3), replace=False))
        for c in classes:
            s = int(rng.integers(12, 20))
            y, x = rng.integers(0, h - s), rng.integers(0, w - s)
            image[y:y + s, x:x + s] = COLOURS[c]
            mask[y:y + s, x:x + s] = c + 1
        image_id = f"2099_{i:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        save_png(root / "SegmentationClass" / f"{image_id}.png", mask, palette())
        labels[image_id] = [int(c) for c in classes]
    write_labels_csv(root / "labels.csv", labels)
    return sorted(labels), labels

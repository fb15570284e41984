"""The SLURM profile on a real one-node SLURM cluster (Debian's slurmctld + slurmd, two fake
GPUs): the tiny config's irn run submitted job by job, compared with the local run.

Needs root (apt install, daemons, /dev/fakegpu*); skips otherwise or when apt fails.
Deselect with `-m "not slurm"`.
"""

import collections
import json
import re

import numpy as np
import pytest

from tests.conftest import TINY, write_config
from tests.workflow.slurm_cluster import (
    SlurmCluster,
    install,
    snakemake_on_slurm,
    submitted_jobs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

# The jobs SLURM must run for one method and seed; merge_shards (6 kinds: the raw test
# predictions are never merged, nothing reads them), test_archive, table,
# figures and all are localrules and run in the Snakemake process itself.
REMOTE = {"make_toyvoc": 1, "pretrain_backbone": 1, "build_splits": 1, "train_cam": 1, "make_cam": 2, "eval_cam": 1,
          "cam_to_ir_label": 1, "train_irn": 1, "make_sem_seg": 2, "eval_sem_seg": 1,
          "train_seg": 1, "infer_seg": 4, "eval_seg": 2, "overlays": 1}
LOCAL = {"cam_cells": 1, "merge_shards": 6, "test_archive": 1, "table": 1, "figures": 1, "all": 1}
GPU_LOGS = ["../../pretrain/pretrain_backbone", "train_cam", "make_cam.0", "make_cam.1", "train_irn", "make_sem_seg.0",
            "make_sem_seg.1", "train_seg", "infer_seg_val.0", "infer_seg_val.1",
            "infer_seg_test.0", "infer_seg_test.1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = install()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), gpus=2)
    try:
        cluster.start()
        yield cluster
    finally:
        procs = list(cluster.procs)
        cluster.stop()
        assert all(proc.poll() is not None for proc in procs)  # both daemons are gone


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_run")
    work = base / "work"
    work.mkdir()
    config = write_config(base / "tiny.yaml", dict(TINY, methods=["irn"]))
    # CSD_FAKE_GPUS: csd.runtime.device logs the device SLURM gave each GPU job (compute stays on CPU)
    cluster.env["CSD_FAKE_GPUS"] = "2"
    proc = snakemake_on_slurm(cluster, work, config, limit=1500)
    assert proc.returncode == 0, (f"rc {proc.returncode}\n{proc.stderr[-6000:]}\n"
                                  f"{cluster.logs()}")
    return {"work": work, "proc": proc}


def test_every_compute_job_went_through_slurm_and_only_those(slurm_run):
    jobs = submitted_jobs(slurm_run["proc"], slurm_run["work"])
    assert collections.Counter(jobs.values()) == REMOTE
    assert len(jobs) == sum(REMOTE.values()) == 20
    log = slurm_run["proc"].stdout + slurm_run["proc"].stderr
    local = collections.Counter(re.findall(r"^localrule (\w+):", log, re.M))
    assert local == LOCAL


def test_gpu_jobs_got_a_slurm_gpu(slurm_run):
    """Each GPU rule's job ran with CUDA_VISIBLE_DEVICES set by SLURM's GRES (one of the two
    fake devices), so csd.runtime.device used it instead of claiming a lock."""
    logs = slurm_run["work"] / "logs/irn/seed0"
    seen = set()
    for name in GPU_LOGS:
        match = re.search(r"device: SLURM set CUDA_VISIBLE_DEVICES=(\d+)",
                          (logs / f"{name}.log").read_text())
        assert match, name
        seen.add(match.group(1))
    assert seen <= {"0", "1"}
    assert not (slurm_run["work"] / ".gpu_locks").exists()


def test_slurm_run_computes_what_the_local_run_computes(slurm_run, tiny_run):
    """Same threads per job (tests/workflow/slurm_profile), CPU only: every number and every pseudo
    mask equals the local --cores 2 run's."""
    ours, theirs = (run["work"] / "results/irn/seed0" for run in (slurm_run, tiny_run))
    for kind in ("seed", "mask", "val", "val_crf"):
        a = json.loads((ours / f"{kind}_metrics.json").read_text())
        b = json.loads((theirs / f"{kind}_metrics.json").read_text())
        assert a["miou"] == b["miou"] and a["iou"] == b["iou"], kind
    masks = sorted(p.name for p in (theirs / "mask/all").glob("*.png"))
    assert masks == sorted(p.name for p in (ours / "mask/all").glob("*.png"))
    assert len(masks) == 26  # train_aug
    for name in masks:
        assert (ours / "mask/all" / name).read_bytes() == (theirs / "mask/all" / name).read_bytes()
    cam = np.load(ours / "cam/all" / masks[0].replace(".png", ".npz"))["high_res"]
    assert np.array_equal(cam, np.load(theirs / "cam/all" / masks[0].replace(".png", ".npz"))
                          ["high_res"])
    table = (slurm_run["work"] / "results/table.csv").read_text().splitlines()
    assert table[0].startswith("method,source,n_seeds,seed_miou")
    assert table[1].startswith("irn,reproduced,1,")

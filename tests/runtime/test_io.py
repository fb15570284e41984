"""Atomic writers: identical objects give identical files; killed per-image jobs resume."""

import os

import pytest
import torch

from csd.runtime.io import job_key, pending, resumable_dirs, save_torch


def test_identical_checkpoints_are_byte_identical(tmp_path):
    # torch.save names the zip's inner folder after the file it is given; the atomic
    # writer's temporary name is random, so that name must not reach the archive.
    state = {"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 4}
    save_torch(tmp_path / "a.pt", state)
    save_torch(tmp_path / "b" / "cam_model.pt", state)
    first = (tmp_path / "a.pt").read_bytes()
    assert first == (tmp_path / "b" / "cam_model.pt").read_bytes()
    loaded = torch.load(tmp_path / "a.pt")
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["weight"], state["model"]["weight"])


def test_a_killed_per_image_job_keeps_its_finished_images(tmp_path):
    # Snakemake removes a job's output directory before rerunning it: the images are made
    # in a hidden sibling that only a job with another key (inputs, settings) discards.
    out = tmp_path / "cam" / "shards" / "0"
    with pytest.raises(KeyboardInterrupt):
        with resumable_dirs([out], "job 1") as (work,):
            (work / "a.npz").write_bytes(b"a")
            raise KeyboardInterrupt
    assert not out.exists()
    with resumable_dirs([out], "job 1") as (work,):
        assert pending("make_cam", ["a", "b"], [work], ".npz") == ["b"]
        (work / "b.npz").write_bytes(b"b")
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "b.npz"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["0"]
    with pytest.raises(KeyboardInterrupt):
        with resumable_dirs([out], "job 1") as (work,):
            (work / "c.npz").write_bytes(b"c")
            raise KeyboardInterrupt
    with resumable_dirs([out], "job 2") as (work,):  # new inputs: nothing of job 1 is kept
        assert pending("make_cam", ["a", "c"], [work], ".npz") == ["a", "c"]


def test_job_key_follows_inputs_and_settings(tmp_path):
    model = tmp_path / "cam_model.pt"
    model.write_bytes(b"1")
    key = job_key([model, tmp_path], {"scales": [1.0]})
    assert key == job_key([model, tmp_path], {"scales": [1.0]})
    assert key != job_key([model, tmp_path], {"scales": [0.5]})
    os.utime(model, ns=(1, 1))  # rewritten by a rerun of the stage before
    assert key != job_key([model, tmp_path], {"scales": [1.0]})

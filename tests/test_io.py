"""Atomic writers: identical objects give identical files."""

import torch

from csd.io import save_torch


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

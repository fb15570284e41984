"""What every training stage shares: seeding, poly schedule, checkpoint + resume, curves."""

import random
from pathlib import Path

import numpy as np
import torch

from csd.io import save_torch


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def poly_lr(base_lr, step, total_steps, power=0.9):
    return base_lr * (1 - step / total_steps) ** power


def set_lr(optimizer, factor_lrs):
    """factor_lrs: a list with one lr per param group."""
    for group, lr in zip(optimizer.param_groups, factor_lrs):
        group["lr"] = lr


class Checkpoint:
    """Save training state each epoch to `<out>.ckpt`; `resume()` restores it after a kill.

    The state holds model, optimizer, the epoch finished, the RNG states and the history of
    per-epoch records, so a resumed run continues the same curve (and, on CPU, the same
    numbers) as an uninterrupted one.
    """

    def __init__(self, final_path):
        self.path = Path(str(final_path) + ".ckpt")

    def save(self, epoch, model, optimizer, history):
        save_torch(self.path, {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state()},
        })

    def resume(self, model, optimizer):
        """Return (next_epoch, history); (0, []) when there is nothing to resume."""
        if not self.path.exists():
            return 0, []
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        return state["epoch"] + 1, state["history"]

    def remove(self):
        self.path.unlink(missing_ok=True)

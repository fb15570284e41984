"""What every training stage shares: seeding, the poly schedule, the epoch loop with its
checkpoint and resume, and the per-epoch history (the training curves); and the ViTs'
AdamW with warm-up + cosine (`fit_adamw`)."""

import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from csd.runtime.io import save_json, save_torch
from csd.runtime.precision import autocast, grad_scaler, prepare_model, resolve


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


def epoch_generator(seed, epoch):
    """A generator for one epoch's shuffle and worker seeds, a pure function of (seed, epoch),
    so a resumed run needs nothing but the checkpoint to continue the same sequence."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def epoch_loader(dataset, settings, epoch, device):
    return DataLoader(dataset, batch_size=settings["batch_size"], shuffle=True, drop_last=True,
                      num_workers=settings["num_workers"],
                      generator=epoch_generator(settings["seed"], epoch),
                      pin_memory=torch.device(device).type == "cuda")


class Checkpoint:
    """Training state saved each epoch to `<out>.ckpt`; `resume()` restores it after a kill.

    The state holds model, optimizer, the epoch finished, the RNG states and the history, so
    a resumed run continues the same curve (and, on CPU, the same numbers) as an
    uninterrupted one. `meta` (settings and image list) must match to resume: a checkpoint
    of a killed run with other settings (the user changed lr, Snakemake reran the job) is
    discarded, not resumed.
    """

    def __init__(self, final_path, meta=None, extras=None):
        self.path = Path(str(final_path) + ".ckpt")
        self.meta = json.loads(json.dumps(meta))  # as it reads back: tuples become lists
        self.extras = extras or {}  # other modules a resume needs (e.g. an EMA teacher)

    def save(self, epoch, model, optimizer, history):
        save_torch(self.path, {
            "epoch": epoch,
            "meta": self.meta,
            "model": model.state_dict(),
            "extras": {name: module.state_dict() for name, module in self.extras.items()},
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
        if state.get("meta") != self.meta:
            print(f"discarding {self.path}: written for other settings or images",
                  file=sys.stderr)
            self.remove()
            return 0, []
        model.load_state_dict(state["model"])
        for name, module in self.extras.items():
            module.load_state_dict(state["extras"][name])
        optimizer.load_state_dict(state["optimizer"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        return state["epoch"] + 1, state["history"]

    def remove(self):
        self.path.unlink(missing_ok=True)


def grad_norm(model):
    """The 2-norm of every parameter gradient together (inf or nan when one is not finite)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


def terms(values):
    return ", ".join(f"{key} {value:.4g}" for key, value in values.items())


def fit(name, model, optimizer, dataset, step, base_lrs, settings, model_out, history_out,
        device, extras=None, schedule=None, precision="fp32"):
    """The epoch loop of every training stage.

    step(model, batch, epoch) -> (loss, parts): parts is a dict of scalar tensors logged
    per epoch; it runs under autocast at `precision` (csd.runtime.precision; `auto` is resolved
    for `device`), so a step keeps its losses in float32 itself. `extras` ({name: module})
    are checkpointed and restored with the model. Per iteration the lr of each param group
    follows poly(base_lrs), or `schedule(step, total_steps)` -> one lr per group when
    given; per epoch the mean of the loss and of each part goes to the history with the
    precision and torch threads the epoch ran with, and a checkpoint is saved. A step whose
    loss or gradient is not finite stops the job (nothing of it is saved); the gradient's
    norm (before `clip_grad_norm`, where the settings set one) goes to the history as its
    epoch mean and maximum, beside the maxima of the step's own `grad_*` parts. At the end {"model",
    "settings", "precision"} goes to model_out and the history to history_out (JSON).
    """
    steps_per_epoch = len(dataset) // settings["batch_size"]
    if steps_per_epoch == 0:
        raise ValueError(f"{name}: {len(dataset)} images are fewer than batch_size "
                         f"{settings['batch_size']} (drop_last would leave no batch)")
    total_steps = steps_per_epoch * settings["epochs"]
    ids_sha1 = hashlib.sha1("\n".join(map(str, getattr(dataset, "ids", []))).encode())
    clip = settings.get("clip_grad_norm")  # declared by the classifiers' settings
    precision = resolve(precision, device)
    scaler = grad_scaler(precision, device)
    model = prepare_model(model, precision)
    # a checkpoint of another precision is another run: it is discarded, not resumed
    checkpoint = Checkpoint(model_out, meta={"settings": settings, "precision": precision,
                                             "ids_sha1": ids_sha1.hexdigest()},
                            extras=extras)
    start, history = checkpoint.resume(model, optimizer)
    if start:
        print(f"{name}: resuming after epoch {start} from {checkpoint.path}", file=sys.stderr)

    model.train()
    for epoch in range(start, settings["epochs"]):
        sums, peaks = {}, {}
        bar = tqdm(epoch_loader(dataset, settings, epoch, device), total=steps_per_epoch,
                   file=sys.stderr, dynamic_ncols=True,
                   desc=f"{name} epoch {epoch + 1}/{settings['epochs']}")
        for i, batch in enumerate(bar):
            global_step = epoch * steps_per_epoch + i
            lrs = (schedule(global_step, total_steps) if schedule else
                   [poly_lr(lr, global_step, total_steps, settings["poly_power"])
                    for lr in base_lrs])
            set_lr(optimizer, lrs)
            with autocast(precision, device):
                loss, parts = step(model, batch, epoch)
            values = {key: float(torch.as_tensor(value).detach())
                      for key, value in {"loss": loss, **parts}.items()}
            where = f"{name}: at epoch {epoch + 1}, step {i + 1}"
            if not np.isfinite(values["loss"]):
                raise FloatingPointError(f"{where} the loss is not finite ({terms(values)})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # (a no-op without fp16's scaler)
            values["grad_norm"] = grad_norm(model)
            # fp16's scaler skips a step with inf gradients itself (and lowers its scale)
            if not scaler.is_enabled() and not np.isfinite(values["grad_norm"]):
                raise FloatingPointError(f"{where} the gradient is not finite ({terms(values)})")
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
                if key.startswith("grad_"):  # a blow-up shows in the maxima, not the means
                    peaks[key] = max(peaks.get(key, value), value)
            bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lrs[0]:.2e}")
        bar.close()
        record = {"epoch": epoch + 1, "lr": lrs[0]}
        record.update({key: total / steps_per_epoch for key, total in sums.items()})
        record.update({f"{key}_max": peak for key, peak in peaks.items()})
        record.update(precision=precision, threads=torch.get_num_threads())
        history.append(record)
        print(f"{name} epoch {epoch + 1}: " + " ".join(
            f"{k} {v:.4f}" for k, v in record.items()
            if k not in ("epoch", "lr", "precision", "threads")), file=sys.stderr)
        checkpoint.save(epoch, model, optimizer, history)

    save_torch(model_out, {"model": model.state_dict(), "settings": settings,
                           "precision": precision})
    save_json(history_out, history)
    checkpoint.remove()
    return history


def adamw_groups(model, weight_decay):
    """[no decay, decay] param groups as DeiT's: biases, norms and the names in the model's
    `no_weight_decay()` get none."""
    from timm.optim import param_groups_weight_decay

    return param_groups_weight_decay(model, weight_decay,
                                     no_weight_decay_list=model.no_weight_decay())


def fit_adamw(name, model, dataset, step, lr, settings, model_out, history_out, device,
              extras=None, precision="fp32"):
    """`fit` with DeiT's optimiser: AdamW at `lr`, no weight decay on biases, norms and the
    model's `no_weight_decay()` (tokens, position embeddings), the lr warmed up linearly from
    `warmup_lr` over `warmup_epochs` then cosine to `min_lr`, per iteration (timm's)."""
    from timm.scheduler import CosineLRScheduler

    optimizer = torch.optim.AdamW(adamw_groups(model, settings["weight_decay"]), lr=lr)
    steps_per_epoch = max(1, len(dataset) // settings["batch_size"])
    scheduler = CosineLRScheduler(
        optimizer, t_initial=steps_per_epoch * settings["epochs"], lr_min=settings["min_lr"],
        warmup_t=steps_per_epoch * settings["warmup_epochs"],
        warmup_lr_init=settings["warmup_lr"], t_in_epochs=False)

    def schedule(global_step, total_steps):
        scheduler.step_update(global_step)
        return [group["lr"] for group in optimizer.param_groups]

    return fit(name, model, optimizer, dataset, step, None, settings, model_out, history_out,
               device, extras=extras, schedule=schedule, precision=precision)

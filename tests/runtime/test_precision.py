"""csd.runtime.precision: the precision chosen per device and CPU (capabilities mocked), and the
training loop under autocast: what computes in bfloat16, what stays float32, what stops."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import csd.runtime.precision as precision
from csd.runtime import training
from csd.runtime.training import fit
from tests.conftest import layer_dtypes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_is_bf16_only_where_it_is_native(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve("auto", "cpu") == expected
    # an explicit setting is taken as it is, native or not
    for value in ("fp32", "bf16", "fp16"):
        assert precision.resolve(value, "cpu") == value


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(precision, "cuda_has_bf16", lambda device: bf16)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: not bf16)  # not consulted
    assert precision.resolve("auto", "cuda") == expected
    assert precision.resolve("auto", "cuda:1") == expected


def test_bad_precision_names_the_value():
    with pytest.raises(ValueError, match="'half'"):
        precision.resolve("half", "cpu")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (False, False, False), (True, False, True), (False, True, True)])
def test_native_bf16_is_torchs_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert precision.cpu_has_native_bf16() is expected


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f", False),        # AVX2/AVX-512 without BF16: emulated
    ("fpu avx2 avx512f avx512_bf16", True),
    ("fpu avx2 amx_bf16 amx_tile", True)])
def test_without_torchs_view_the_kernels_flags_decide(monkeypatch, tmp_path, flags, expected):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(cpuinfo) == set(flags.split())
    assert precision.cpu_flags(tmp_path / "absent") == set()
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(flags.split()))
    assert precision.cpu_has_native_bf16() is expected


def test_the_grad_scaler_is_on_for_fp16_only():
    assert not precision.grad_scaler("bf16", "cpu").is_enabled()
    assert not precision.grad_scaler("fp32", "cpu").is_enabled()
    assert precision.grad_scaler("fp16", "cpu").is_enabled()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class Images(torch.utils.data.Dataset):
    def __init__(self, n=8):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=generator)
        self.y = (torch.rand(n, 2, generator=generator) > 0.5).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


SETTINGS = {"seed": 0, "batch_size": 4, "epochs": 2, "poly_power": 0.9, "num_workers": 0}


def run_fit(tmp_path, step, precision_setting, epochs=2, model=None, **settings):
    if model is None:
        torch.manual_seed(0)
        model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return fit("probe", model, optimizer, Images(), step, [0.1],
               dict(SETTINGS, epochs=epochs, **settings), tmp_path / "model.pt",
               tmp_path / "history.json", "cpu", precision=precision_setting)


def plain_step(model, batch, epoch):
    x, y = batch
    return nn.functional.binary_cross_entropy_with_logits(model(x), y), {}


@pytest.mark.parametrize("setting, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_fit_steps_under_autocast_and_records_the_precision(tmp_path, setting, dtype):
    losses = []

    def step(model, batch, epoch):
        x, y = batch
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        losses.append(loss.dtype)
        return loss, {}

    with layer_dtypes() as seen:
        history = run_fit(tmp_path, step, setting)
    assert seen == {dtype}
    assert set(losses) == {torch.float32}
    assert [(r["precision"], r["threads"]) for r in history] == [(setting, 1)] * 2
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["precision"] == setting
    assert all(v.dtype == torch.float32 for v in saved["model"].values())
    assert json.loads((tmp_path / "history.json").read_text()) == history


def test_auto_is_resolved_before_it_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)

    def step(model, batch, epoch):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(model(x), y), {}

    with layer_dtypes() as seen:
        history = run_fit(tmp_path, step, "auto", epochs=1)
    assert seen == {torch.float32} and history[0]["precision"] == "fp32"


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_a_non_finite_step_stops_the_job_and_saves_nothing_of_it(tmp_path, poison):
    """Epoch 1 is fine; at epoch 2, step 2 the loss (or only its gradient) is not finite."""
    calls = []

    def step(model, batch, epoch):
        calls.append(epoch)
        x, y = batch
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        if len(calls) == 4:
            if poison == "loss":
                loss = loss * float("nan")
            else:  # finite value, infinite gradient: sqrt at 0
                loss = loss + torch.sqrt(model.fc.weight.sum() * 0)
        return loss, {"cls": loss.detach()}

    with pytest.raises(FloatingPointError, match=rf"probe: at epoch 2, step 2 the {poison} "
                                                 r"is not finite \(loss .*, cls "):
        run_fit(tmp_path, step, "fp32")
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "history.json").exists()
    # the checkpoint holds epoch 1 only: the bad step's update never reached it
    state = torch.load(tmp_path / "model.pt.ckpt", weights_only=False)
    assert state["epoch"] == 0 and len(state["history"]) == 1
    assert all(np.isfinite(v.numpy()).all() for v in state["model"].values())


def test_the_history_has_the_gradient_norms_mean_and_maximum(tmp_path, monkeypatch):
    norms = []
    real = training.grad_norm

    def spy(model):
        norms.append(real(model))
        return norms[-1]

    monkeypatch.setattr(training, "grad_norm", spy)
    history = run_fit(tmp_path, plain_step, "fp32", epochs=1)
    assert len(norms) == 2 and norms[0] != norms[1]
    assert history[0]["grad_norm"] == pytest.approx(sum(norms) / 2)
    assert history[0]["grad_norm_max"] == max(norms)


def test_clip_grad_norm_bounds_each_step(tmp_path):
    """SGD without momentum moves the weights by lr x gradient: clipped to 1e-3, two steps
    at lr <= 0.1 move them by at most 2e-4; unclipped, by far more."""
    moved = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        model = Tiny()
        start = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
        run_fit(tmp_path / str(clip), plain_step, "fp32", epochs=1, model=model,
                clip_grad_norm=clip)
        end = torch.cat([p.detach().flatten() for p in model.parameters()])
        moved[clip] = torch.linalg.vector_norm(end - start).item()
    assert moved[1e-3] <= 2 * 0.1 * 1e-3 * (1 + 1e-5)
    assert moved[None] > 10 * moved[1e-3]

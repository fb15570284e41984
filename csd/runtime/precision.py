"""Mixed precision: which dtype a stage computes in, and the autocast around its network.

`precision` (config: global, overridable per stage) is one of
  fp32  everything in float32;
  bf16  torch.autocast to bfloat16 (convolutions and matrix products; torch keeps its
        numerically delicate ops in float32);
  fp16  torch.autocast to float16, with a GradScaler in training (CUDA);
  auto  bf16 on a CPU that computes bfloat16 natively (AVX512_BF16 or AMX; elsewhere it is
        emulated and slower than fp32), bf16 on a CUDA device that supports it, fp16 on an
        older CUDA device, fp32 otherwise.
`auto` is resolved by the job on the machine it runs on (a SLURM node decides for itself),
and every stage records the precision it used. What stays in float32 under autocast is
marked with `full_precision()`: the stages' losses, CSD's min-max, CAM normalisation, the
random walk, the CRF and the metrics all run on float32 tensors.
"""

import dataclasses
import sys
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of the instructions that compute bfloat16 natively
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (empty where /proc/cpuinfo is not there, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16():
    """Whether this CPU computes bfloat16 in hardware (AVX512_BF16 or AMX), as the kernel
    reports it; torch's own view where it has one."""
    checks = [getattr(torch.cpu, name, None) for name in
              ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(checks):
        return any(check() for check in checks)
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def cuda_has_bf16(device):
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve(precision, device):
    """The precision a job computes in on `device`: `precision` itself, or for `auto`
    what this device does fastest without losing float32's range."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if cuda_has_bf16(device) else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(precision, device):
    """torch.autocast for a resolved precision on `device` (a no-op context for fp32)."""
    device = torch.device(device)
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[precision])


def full_precision(device):
    """Autocast off on `device`'s type: ops inside compute in their inputs' dtype, so the
    float32 tensors given to them (see float32) stay float32."""
    return torch.autocast(torch.device(device).type, enabled=False)


def grad_scaler(precision, device):
    """A GradScaler for fp16 (float16's range underflows small gradients), a disabled one
    otherwise: its scale/step/update then do exactly backward and optimizer.step."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def prepare_model(model, precision):
    """A network ready for `precision`: channels-last memory under autocast, where oneDNN's
    reduced-precision convolutions run fastest (a ResNet-18 training step ~1.15x faster in
    bf16; no gain in float32, so float32 keeps the default layout). In place; returns it."""
    if precision != "fp32":
        model.to(memory_format=torch.channels_last)
    return model


def inference_model(stage, model, precision, device):
    """(model ready for `precision` resolved on `device`, that precision) for an inference
    stage, the choice logged with the stage's torch threads."""
    precision = resolve(precision, device)
    print(f"{stage}: precision {precision}, {torch.get_num_threads()} threads",
          file=sys.stderr)
    return prepare_model(model, precision), precision


def float32(x):
    """A tensor, or a dataclass of tensors (csd.methods.mct.mctformer.Tokens), in float32
    (in the graph)."""
    if torch.is_tensor(x):
        return x.float()
    return dataclasses.replace(x, **{f.name: float32(getattr(x, f.name))
                                     for f in dataclasses.fields(x)})

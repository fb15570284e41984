"""Claim a GPU for one job: a non-blocking flock per device, released by the kernel on exit.

Snakemake's `--resources gpu=N` only counts jobs; it assigns no device. Each GPU job calls
`claim_device()`, which takes the first free lock among the visible devices. Under SLURM
(CUDA_VISIBLE_DEVICES already set by the scheduler) the job's own device is used as is.
"""

import fcntl
import os
from pathlib import Path

import torch

_held = []  # keep lock files open for the life of the process


def _device_count():
    forced = os.environ.get("CSD_FAKE_GPUS")  # tests simulate device counts
    if forced is not None:
        return int(forced)
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _device(index):
    if os.environ.get("CSD_FAKE_GPUS") is not None:
        return torch.device("cpu")  # simulated devices: the claim is real, compute is not
    return torch.device("cuda", index)


def claim_device(lock_dir=".gpu_locks", log=print):
    """Return the torch.device this job should use; hold its lock until the process ends."""
    count = _device_count()
    if count == 0:
        log("device: no CUDA device, running on cpu")
        return torch.device("cpu")
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        log(f"device: SLURM set CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
        return _device(0)  # the first (usually only) device SLURM made visible
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        # "a": opening must not truncate the holder's pid before the lock is known to be free
        handle = open(Path(lock_dir) / f"gpu{index}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held.append(handle)
        log(f"device: claimed cuda:{index} (lock {handle.name})")
        return _device(index)
    raise RuntimeError(
        f"all {count} GPUs in {lock_dir} are claimed; run snakemake with "
        f"--resources gpu=<at most {count}> so it never starts more GPU jobs than devices")

"""Atomic file output: a killed job never leaves a file that looks complete."""

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path):
    return json.loads(Path(path).read_text())


def save_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npz(path, **arrays):
    # np.savez appends .npz to names without it, so write through a file object.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def save_png(path, array, palette=None):
    """Save a uint8 label map (palette PNG when `palette` is given) or an RGB image."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if palette is not None:
        # frombytes keeps the label values as palette indices exactly.
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        img.putpalette(palette)
    else:
        img = Image.fromarray(array)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_torch(path, obj):
    import torch

    # Through a file object: given a path, torch.save names the zip's inner folder after it
    # (here the random temporary name), and identical states would give different bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def pending(stage, ids, out_dirs, suffix=".png"):
    """The ids of a per-image stage whose outputs (out_dir/<id><suffix> in every out_dir)
    are not all written yet: a rerun after a kill resumes where it stopped."""
    ids = [str(i) for i in ids]
    todo = [i for i in ids if not all((Path(d) / f"{i}{suffix}").exists() for d in out_dirs)]
    if len(todo) < len(ids):
        print(f"{stage}: {len(ids) - len(todo)} of {len(ids)} images already done, skipped",
              file=sys.stderr)
    return todo


def job_key(inputs, settings):
    """What a per-image job's outputs depend on: its settings and its input files' and
    directories' sizes and modification times (a rerun of an upstream stage rewrites them)."""
    stats = []
    for path in sorted(map(str, inputs)):
        info = os.stat(path)
        stats.append([path, info.st_size, info.st_mtime_ns])
    return json.dumps({"settings": settings, "inputs": stats}, sort_keys=True, default=str)


@contextmanager
def resumable_dirs(out_dirs, key):
    """Per-image output directories that survive a killed job.

    Snakemake removes a job's output before rerunning it, so each directory is filled as its
    hidden sibling `.<name>.partial` (where `pending` finds the images already done) and
    renamed onto the output when the block succeeds. `key` (`job_key`) is kept with the
    images: a rerun with other inputs or settings starts over, never mixing old images in.
    """
    import shutil

    outs = [Path(d) for d in out_dirs]
    works = [out.parent / f".{out.name}.partial" for out in outs]
    for work in works:
        stamp = work / ".key"
        if work.exists() and not (stamp.is_file() and stamp.read_text() == key):
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)
    yield works
    for out, work in zip(outs, works):
        (work / ".key").unlink()
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)


def resumable_outputs(smk):
    """`resumable_dirs` of a Snakemake job's output directories (in their order), keyed by
    its inputs and params."""
    return resumable_dirs(list(smk.output), job_key(list(smk.input), dict(smk.params.items())))

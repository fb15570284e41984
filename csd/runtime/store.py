"""Finding per-image files (CAMs, labels) spread over the shard directories of a stage."""

from pathlib import Path

import numpy as np

CAM_FIELDS = ("keys", "cam", "high_res")


def find_in_dirs(dirs, filename):
    """The path of `filename` in the first of `dirs` that holds it (shards never overlap)."""
    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    for directory in dirs:
        path = Path(directory) / filename
        if path.exists():
            return path
    raise FileNotFoundError(f"{filename} not found in any of {[str(d) for d in dirs]}")


def load_cam_pack(cam_dirs, image_id, fields=CAM_FIELDS):
    """One image's CAM file as {key: array}; `fields` picks the arrays to read."""
    path = find_in_dirs(cam_dirs, f"{image_id}.npz")
    with np.load(path) as npz:
        missing = [k for k in fields if k not in npz.files]
        if missing:
            raise KeyError(f"{path}: CAM file lacks keys {missing}")
        return {k: npz[k] for k in fields}


def merge_shards(shard_dirs, out_dir):
    """Join the per-shard output directories of a stage into `out_dir` (atomically).

    Files are hard-linked (copied across file systems), so deleting the temporary shards
    afterwards costs no data. Hidden names (unfinished atomic writes) are left out; a file
    name found in two shards is an error, since shards never overlap.
    """
    import os
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".part"))
    try:
        origin = {}
        for shard in shard_dirs:
            shard = Path(shard)
            if not shard.is_dir():
                raise FileNotFoundError(f"shard directory {shard} not found")
            for path in sorted(shard.iterdir()):
                if path.name.startswith(".") or not path.is_file():
                    continue
                if path.name in origin:
                    raise ValueError(f"{path.name} is in both {origin[path.name]} and {shard}")
                origin[path.name] = shard
                try:
                    os.link(path, tmp / path.name)
                except OSError:
                    shutil.copy2(path, tmp / path.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"merged {len(origin)} files from {len(shard_dirs)} shards into {out_dir}")
    return len(origin)

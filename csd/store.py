"""Finding per-image files (CAMs, labels) spread over the shard directories of a stage."""

from pathlib import Path

import numpy as np

CAM_KEYS = ("keys", "cam", "high_res")


def find_in_dirs(dirs, filename):
    """The path of `filename` in the first of `dirs` that holds it (shards never overlap)."""
    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    for directory in dirs:
        path = Path(directory) / filename
        if path.exists():
            return path
    raise FileNotFoundError(f"{filename} not found in any of {[str(d) for d in dirs]}")


def load_cam_pack(cam_dirs, image_id, fields=CAM_KEYS):
    """One image's CAM file as {key: array}; `fields` picks the arrays to read."""
    path = find_in_dirs(cam_dirs, f"{image_id}.npz")
    with np.load(path) as npz:
        missing = [k for k in fields if k not in npz.files]
        if missing:
            raise KeyError(f"{path}: CAM file lacks keys {missing}")
        return {k: npz[k] for k in fields}

"""How many CAM cells an object covers at the classifier's training scale and output stride.

A CAM can only take an object's shape if the object spans many cells: a VOC object at
IRN's 512-px crops and output stride 16 covers hundreds of the 32x32 cells, while a 5%
object of a 112-px image at stride 16 covers about two of 7x7. The count is measured on
the instance masks (VOC's SegmentationObject, which toyvoc writes too): an object's
labelled pixels, times the squared mean training scale (the mean of `resize_long` over the
image's long side), over the squared output stride.
"""

from pathlib import Path

import numpy as np

from csd.data.voc import IGNORE, load_label_png
from csd.runtime.io import save_json


def output_stride(strides):
    """The ResNet's output stride: the stem's 4 times the strides of layer2..layer4 (layer1
    never strides, whatever its entry says)."""
    return 4 * int(np.prod(strides[1:]))


def cam_cells(voc_root, ids, settings, out_json):
    """Write {mean, median, ...} CAM cells per object over the instances of `ids` to out_json.

    settings: the classifier's `resize_long` [lo, hi], `crop` and backbone `strides`.
    """
    object_dir = Path(voc_root) / "SegmentationObject"
    stride = output_stride(settings["strides"])
    scale_long = float(np.mean(settings["resize_long"]))
    cells = []
    for image_id in ids:
        path = object_dir / f"{image_id}.png"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no instance mask for image {image_id} "
                                    "(CAM cells per object are measured on SegmentationObject)")
        objects = load_label_png(path)
        counts = np.bincount(objects.ravel(), minlength=256)
        counts[[0, IGNORE]] = 0
        scale = scale_long / max(objects.shape)
        cells += (counts[counts > 0] * scale ** 2 / stride ** 2).tolist()
    if not cells:
        raise ValueError(f"{object_dir}: no objects in the {len(ids)} listed images")
    grid = -(-settings["crop"] // stride)
    stats = {"mean": float(np.mean(cells)), "median": float(np.median(cells)),
             "objects": len(cells), "images": len(ids), "output_stride": stride,
             "crop_grid": [grid, grid], "mean_long_side": scale_long}
    save_json(out_json, stats)
    return stats

"""Rendering a plan: the image, its label and instance maps, its XML annotation, its JPEG."""

from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from csd.data.voc import CLASSES, IGNORE
from csd.toyvoc.backgrounds import make_background
from csd.toyvoc.shapes import object_colors, paint_texture, shape_mask
from csd.toyvoc.world import (
    APPEARANCE,
    CONTEXTS,
    STREAM_BACKGROUND,
    STREAM_LOOK,
    min_object_pixels,
    object_uv,
    void_kernel,
)


def render_image(settings, plan):
    """Paint a plan: returns (RGB uint8 image, label map with void band, instance map (VOC's
    SegmentationObject: 1.. per kept instance, 0 background, IGNORE on the band), kept
    instances).

    Instances with fewer labelled (visible, non-void) pixels than min_visible_frac of the
    image are removed (and their class label with them when no instance of it is left)
    before painting, so the image never shows an unlabelled object.
    """
    h, w = plan["height"], plan["width"]
    shapes = []
    for inst in plan["instances"]:
        u, v = object_uv(inst, w, h)
        mask, part = shape_mask(APPEARANCE[CLASSES[inst["cls"]]]["shape"], u, v)
        shapes.append((u, v, mask, part & mask))

    # VOC marks object borders as void: a band `void_width` px wide on every boundary
    # between two instances or an instance and the background. An instance counts as
    # visible by its labelled pixels, so every kept class shows in the label map.
    keep = list(range(len(shapes)))
    min_pixels = min_object_pixels(settings, w, h)
    kernel = void_kernel(settings)
    while True:
        owner = np.full((h, w), -1, np.int64)
        for k in keep:
            owner[shapes[k][2]] = k
        band = np.zeros((h, w), bool)
        if settings["void_width"] > 0:
            ids = (owner + 1).astype(np.uint8)  # max_instances < 255
            band = cv2.dilate(ids, kernel) != cv2.erode(ids, kernel)
        visible = {k: int(((owner == k) & ~band).sum()) for k in keep}
        dropped = [k for k in keep if visible[k] < min_pixels]
        if not dropped:
            break
        keep = [k for k in keep if k not in dropped]

    image = make_background(CONTEXTS[plan["context"]], h, w,
                            np.random.default_rng([settings["seed"], plan["index"], STREAM_BACKGROUND]))
    labels = np.zeros((h, w), np.uint8)
    objects = np.zeros((h, w), np.uint8)
    kept = []
    for k in keep:
        inst = plan["instances"][k]
        look = APPEARANCE[CLASSES[inst["cls"]]]
        rng = np.random.default_rng([settings["seed"], plan["index"], STREAM_LOOK, k])
        c1, c2, c3 = (object_colors(c, rng) for c in look["colors"])
        u, v, mask, part = shapes[k]
        paint = paint_texture(look["texture"], u, v, c1, c2, rng)
        paint[part] = c3 * (1.08 - 0.06 * (v[part, None] + 1))
        image[mask] = paint[mask]
        labels[mask] = inst["cls"] + 1
        vis = owner == k
        objects[vis] = len(kept) + 1
        ys, xs = np.nonzero(vis)
        kept.append(dict(inst, visible_pixels=visible[k],
                         bbox=[int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1],
                         truncated=bool(xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1)))
    noise = np.random.default_rng([settings["seed"], plan["index"], STREAM_BACKGROUND, 1])
    image += 3.0 * noise.standard_normal(image.shape).astype(np.float32)  # sensor noise
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    labels[band] = IGNORE
    objects[band] = IGNORE
    return image, labels, objects, kept


def annotation_xml(plan, instances):
    """VOC-style XML: filename, size and one <object> per kept instance."""
    lines = ["<annotation>", "\t<folder>VOC2012</folder>",
             f"\t<filename>{escape(plan['id'])}.jpg</filename>",
             "\t<source>", "\t\t<database>ToyVOC synthetic</database>", "\t</source>",
             "\t<size>", f"\t\t<width>{plan['width']}</width>",
             f"\t\t<height>{plan['height']}</height>", "\t\t<depth>3</depth>", "\t</size>",
             "\t<segmented>1</segmented>"]
    for inst in instances:
        xmin, ymin, xmax, ymax = inst["bbox"]
        lines += ["\t<object>", f"\t\t<name>{CLASSES[inst['cls']]}</name>",
                  "\t\t<pose>Unspecified</pose>", f"\t\t<truncated>{int(inst['truncated'])}</truncated>",
                  "\t\t<difficult>0</difficult>", "\t\t<bndbox>",
                  f"\t\t\t<xmin>{xmin}</xmin>", f"\t\t\t<ymin>{ymin}</ymin>",
                  f"\t\t\t<xmax>{xmax}</xmax>", f"\t\t\t<ymax>{ymax}</ymax>",
                  "\t\t</bndbox>", "\t</object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def jpeg_bytes(image, quality, name="image"):
    """An RGB uint8 image as the JPEG bytes toyvoc writes (also what pretraining decodes)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {name}")
    return data.tobytes()


def write_jpeg(path, image, quality):
    Path(path).write_bytes(jpeg_bytes(image, quality, path))

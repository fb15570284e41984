"""ToyVOC: a synthetic, context-biased PASCAL VOC benchmark written as a real VOCdevkit tree.

Real VOC cannot be downloaded everywhere, so every stage of the pipeline can run on this
generated dataset instead. It reproduces the problem CSD attacks: each class has a
preferred background context (boat <-> water, train <-> rails, ...) and some classes have
co-occurring partners (person with horse/bicycle/motorbike, chair with diningtable, ...).
`context_strength` s sets how often these shortcuts hold (s = 0 is the unbiased control),
`single_label_fraction` sets the share of single-label images (CSD's source domain).

Determinism: every image draws from its own generators seeded by (seed, image index,
stream), so the output does not depend on generation order, and the geometry stream never
sees s, so objects and their positions are the same for every context_strength.
"""

import os
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from csd.io import save_json, save_png
from csd.voc import CLASSES, IGNORE, NUM_CLASSES, palette

CONTEXTS = ("sky", "water", "rails", "road", "grass", "floor", "room", "snow", "sand", "forest")

# The shortcut table. boat/water, train/rails, bird/forest, dog/snow, person/sand are the
# only classes preferring their context, so those contexts are nearly class-specific.
PREFERRED_CONTEXT = {
    "aeroplane": "sky", "bicycle": "road", "bird": "forest", "boat": "water",
    "bottle": "room", "bus": "road", "car": "road", "cat": "room", "chair": "floor",
    "cow": "grass", "diningtable": "floor", "dog": "snow", "horse": "grass",
    "motorbike": "road", "person": "sand", "pottedplant": "room", "sheep": "grass",
    "sofa": "room", "train": "rails", "tvmonitor": "room",
}

# Co-occurrence partners: with probability s a multi-label image of the key class gets one
# of these as its second class.
PARTNERS = {
    "person": ("horse", "bicycle", "motorbike"),
    "horse": ("person",), "bicycle": ("person",), "motorbike": ("person",),
    "chair": ("diningtable",), "diningtable": ("chair",), "bottle": ("diningtable",),
    "sofa": ("tvmonitor",), "tvmonitor": ("sofa",),
}

# Object families: silhouette, texture, colours (main, texture, part), base aspect
# (width / height), rotation range in degrees.
APPEARANCE = {
    "aeroplane": dict(shape="plane", texture="solid", colors=((205, 208, 215), (150, 155, 165), (200, 40, 40)), aspect=1.3, rotation=30),
    "bicycle": dict(shape="bicycle", texture="solid", colors=((20, 190, 210), (20, 190, 210), (30, 30, 30)), aspect=1.7, rotation=8),
    "bird": dict(shape="bird", texture="stripes", colors=((245, 140, 20), (40, 30, 20), (245, 140, 20)), aspect=1.8, rotation=25),
    "boat": dict(shape="boat", texture="stripes", colors=((200, 35, 40), (245, 245, 240), (250, 250, 245)), aspect=1.2, rotation=8),
    "bottle": dict(shape="bottle", texture="gradient", colors=((20, 120, 50), (140, 230, 150), (230, 200, 60)), aspect=0.45, rotation=12),
    "bus": dict(shape="bus", texture="windows", colors=((250, 200, 20), (40, 50, 70), (30, 30, 30)), aspect=1.8, rotation=5),
    "car": dict(shape="car", texture="solid", colors=((35, 75, 210), (35, 75, 210), (25, 25, 25)), aspect=1.9, rotation=5),
    "cat": dict(shape="cat", texture="stripes", colors=((215, 130, 50), (110, 55, 20), (240, 200, 160)), aspect=1.0, rotation=20),
    "chair": dict(shape="chair", texture="checker", colors=((175, 30, 35), (240, 225, 190), (175, 30, 35)), aspect=0.8, rotation=8),
    "cow": dict(shape="cow", texture="spots", colors=((245, 245, 240), (20, 20, 20), (230, 160, 160)), aspect=1.6, rotation=8),
    "diningtable": dict(shape="table", texture="grain", colors=((235, 232, 220), (195, 185, 165), (70, 45, 25)), aspect=1.5, rotation=6),
    "dog": dict(shape="dog", texture="noise", colors=((150, 95, 50), (90, 55, 25), (60, 35, 20)), aspect=1.4, rotation=10),
    "horse": dict(shape="horse", texture="solid", colors=((120, 55, 20), (120, 55, 20), (40, 25, 15)), aspect=1.3, rotation=8),
    "motorbike": dict(shape="motorbike", texture="checker", colors=((225, 30, 160), (40, 40, 40), (25, 25, 25)), aspect=1.6, rotation=8),
    "person": dict(shape="person", texture="solid", colors=((40, 60, 150), (40, 60, 150), (235, 185, 150)), aspect=0.5, rotation=8),
    "pottedplant": dict(shape="plant", texture="noise", colors=((40, 170, 70), (10, 90, 30), (190, 90, 50)), aspect=0.8, rotation=8),
    "sheep": dict(shape="sheep", texture="dots", colors=((238, 236, 225), (190, 185, 170), (45, 40, 35)), aspect=1.4, rotation=8),
    "sofa": dict(shape="sofa", texture="solid", colors=((135, 50, 160), (135, 50, 160), (90, 30, 110)), aspect=1.8, rotation=6),
    "train": dict(shape="train", texture="stripes", colors=((30, 80, 170), (240, 215, 60), (200, 30, 30)), aspect=2.6, rotation=6),
    "tvmonitor": dict(shape="tv", texture="screen", colors=((25, 25, 30), (120, 200, 250), (60, 60, 65)), aspect=1.3, rotation=5),
}

# Extra checks beyond the type: (low, high) inclusive.
_RANGES = {
    "seed": (0, None), "n_train": (1, None), "n_val": (1, None), "n_test": (0, None),
    "n_sbd_train": (0, None), "n_sbd_val": (0, None), "sbd_overlap": (0, None),
    "size_min": (32, None), "size_max": (32, None), "context_strength": (0.0, 1.0),
    "single_label_fraction": (0.0, 1.0), "max_classes": (1, NUM_CLASSES),
    "max_instances": (1, 100), "object_min_frac": (0.0, 1.0), "object_max_frac": (0.0, 1.0),
    "min_visible_frac": (0.0, 1.0), "void_width": (0, None), "jpeg_quality": (1, 100),
}
_INT_KEYS = {"seed", "n_train", "n_val", "n_test", "n_sbd_train", "n_sbd_val", "sbd_overlap",
             "size_min", "size_max", "max_classes", "max_instances", "void_width",
             "jpeg_quality"}

# Random streams per image (see module docstring).
_LABELS, _GEOMETRY, _BACKGROUND, _LOOK = 0, 1, 2, 3


def check_settings(settings):
    """Raise ValueError naming the key for a missing, mistyped or out-of-range setting."""
    for key, (low, high) in _RANGES.items():
        if key not in settings:
            raise ValueError(f"toyvoc settings: missing key '{key}'")
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"toyvoc settings: '{key}' must be a number, got {value!r}")
        if key in _INT_KEYS and int(value) != value:
            raise ValueError(f"toyvoc settings: '{key}' must be an integer, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"toyvoc settings: '{key}' = {value!r} outside [{low}, {high}]")
    s = settings
    if s["size_max"] < s["size_min"]:
        raise ValueError(f"toyvoc settings: 'size_max' ({s['size_max']}) < 'size_min' ({s['size_min']})")
    if not 0 < s["object_min_frac"] <= s["object_max_frac"]:
        raise ValueError("toyvoc settings: 'object_min_frac' must be in (0, object_max_frac]")
    if s["min_visible_frac"] >= s["object_min_frac"]:
        raise ValueError("toyvoc settings: 'min_visible_frac' must be below 'object_min_frac'")
    if s["single_label_fraction"] < 1 and s["max_classes"] < 2:
        raise ValueError("toyvoc settings: 'max_classes' must be >= 2 when single_label_fraction < 1")
    if s["max_instances"] < s["max_classes"]:
        raise ValueError("toyvoc settings: 'max_instances' must be >= 'max_classes'")
    if 2 * s["sbd_overlap"] > min(s["n_train"], s["n_val"]):
        raise ValueError("toyvoc settings: 'sbd_overlap' must be at most half of n_train and n_val")


def image_id(index):
    """VOC-like id string with leading zeros (years cycle so ids look like VOC's)."""
    return f"{2007 + index % 5}_{index:06d}"


def split_ids(settings):
    """{split name: ids}: VOC train/val/test lists and SBD-like train/val lists.

    Images are numbered VOC train, VOC val, VOC test, SBD-only train, SBD-only val. The
    SBD lists also hold `sbd_overlap` VOC train and `sbd_overlap` VOC val ids each, like
    the real SBD, so that train_aug = VOC train | SBD train | SBD val - VOC val has work to do.
    """
    s = settings
    counts = [s["n_train"], s["n_val"], s["n_test"], s["n_sbd_train"], s["n_sbd_val"]]
    starts = np.cumsum([0] + counts)
    ranges = [list(range(starts[i], starts[i + 1])) for i in range(len(counts))]
    voc_train, voc_val, voc_test, sbd_train, sbd_val = ranges
    k = s["sbd_overlap"]
    rng = np.random.default_rng([s["seed"], 7])
    from_train = [voc_train[i] for i in rng.permutation(len(voc_train))[:2 * k]]
    from_val = [voc_val[i] for i in rng.permutation(len(voc_val))[:2 * k]]
    sbd_train = sbd_train + from_train[:k] + from_val[:k]
    sbd_val = sbd_val + from_train[k:] + from_val[k:]
    lists = {"voc_train": voc_train, "voc_val": voc_val, "voc_test": voc_test,
             "sbd_train": sbd_train, "sbd_val": sbd_val}
    return {name: sorted(image_id(i) for i in indices) for name, indices in lists.items()}


def plan_image(settings, index):
    """Draw one image's classes, context and object layout (no pixels yet).

    Label draws (stream _LABELS) always consume the same numbers whatever s is, and only
    their comparison with s changes, so s flips decisions without reshuffling the rest.
    """
    s = settings["context_strength"]
    rng = np.random.default_rng([settings["seed"], index, _LABELS])
    main = int(rng.integers(NUM_CLASSES))
    single = rng.random() < settings["single_label_fraction"]
    n_classes = 1 if single else int(rng.integers(2, settings["max_classes"] + 1))
    use_partner = rng.random() < s
    partner_pick = rng.random()
    others = [int(c) for c in rng.permutation(NUM_CLASSES) if c != main]
    use_context = rng.random() < s
    random_context = int(rng.integers(len(CONTEXTS)))
    extra_class_picks = rng.random(settings["max_instances"])

    classes = [main]
    partners = PARTNERS.get(CLASSES[main], ())
    partnered = n_classes >= 2 and use_partner and bool(partners)
    if partnered:
        classes.append(CLASSES.index(partners[int(partner_pick * len(partners))]))
    classes += [c for c in others if c not in classes][:n_classes - len(classes)]
    preferred = CONTEXTS.index(PREFERRED_CONTEXT[CLASSES[main]])
    context = preferred if use_context else random_context

    geo = np.random.default_rng([settings["seed"], index, _GEOMETRY])
    low, high = settings["size_min"], settings["size_max"]
    width, height = (int(v) for v in geo.integers(low, high + 1, size=2))
    n_instances = int(geo.integers(n_classes, settings["max_instances"] + 1))
    instances = []
    for k in range(n_instances):
        frac, aspect_jitter, rot, cx, cy, flip = geo.random(6)
        if k < n_classes:
            cls = classes[k]
        else:  # extra instances repeat one of the image's classes
            cls = classes[int(extra_class_picks[k] * n_classes)]
        look = APPEARANCE[CLASSES[cls]]
        frac = settings["object_min_frac"] + frac * (settings["object_max_frac"] - settings["object_min_frac"])
        inst = dict(cls=cls, angle=float((2 * rot - 1) * look["rotation"]), flip=bool(flip < 0.5))
        inst.update(_place(frac * width * height, look["aspect"] * (0.8 + 0.4 * aspect_jitter),
                           cx, cy, width, height))
        if k < n_classes:
            # Each class's first instance is grown until, unoccluded, the void band leaves
            # it enough labelled pixels (thin chairs and bicycles in small images).
            grow = 1.0
            while _labelled_pixels(inst, width, height, settings) < _min_pixels(settings, width, height) \
                    and grow < 30:
                grow *= 1.25
                inst.update(_place(grow * frac * width * height,
                                   look["aspect"] * (0.8 + 0.4 * aspect_jitter), cx, cy, width, height))
        instances.append(inst)
    # Paint order: repeated instances at the bottom, then each class's first instance,
    # large before small so small ones stay visible; the main instance goes on top, so
    # the class that chose the context is never hidden (it keeps its labelled pixels).
    def by_size(ks):
        return sorted(ks, key=lambda k: -instances[k]["half_w"] * instances[k]["half_h"])

    order = by_size(range(n_classes, n_instances)) + by_size(range(1, n_classes)) + [0]
    instances = [instances[k] for k in order]
    return dict(index=index, id=image_id(index), width=width, height=height, main=main,
                classes=classes, context=context, preferred=context == preferred,
                partnered=partnered, instances=instances)


def _place(area, aspect, cx, cy, width, height):
    """Half extents and centre of an object of `area` px and `aspect` at relative (cx, cy)."""
    half_w = 0.5 * np.sqrt(area * aspect)
    half_h = 0.5 * np.sqrt(area / aspect)
    scale = min(1.0, 0.5 * width / half_w, 0.5 * height / half_h)  # fit the frame
    half_w, half_h = half_w * scale, half_h * scale
    # Up to 30% of the half-extent may leave the frame: truncated objects, as in VOC.
    margin_x, margin_y = 0.7 * half_w, 0.7 * half_h
    return dict(half_w=float(half_w), half_h=float(half_h),
                cx=float(margin_x + cx * max(width - 2 * margin_x, 0.0)),
                cy=float(margin_y + cy * max(height - 2 * margin_y, 0.0)))


def _min_pixels(settings, width, height):
    return max(settings["min_visible_frac"] * width * height, 1)


def _object_uv(inst, width, height):
    """Object coordinates (u, v) of every pixel centre: the object spans [-1, 1]^2."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    a = np.deg2rad(inst["angle"])
    dx, dy = x - inst["cx"], y - inst["cy"]
    u = (dx * np.cos(a) + dy * np.sin(a)) / inst["half_w"]
    v = (-dx * np.sin(a) + dy * np.cos(a)) / inst["half_h"]
    return (-u if inst["flip"] else u), v


def _void_kernel(settings):
    return np.ones((settings["void_width"] + 1,) * 2, np.uint8)  # k-wide window: k-1 px band


def _labelled_pixels(inst, width, height, settings):
    """Pixels of an unoccluded instance that stay labelled after the void band."""
    mask, _ = shape_mask(APPEARANCE[CLASSES[inst["cls"]]]["shape"], *_object_uv(inst, width, height))
    mask = mask.astype(np.uint8)
    if settings["void_width"] > 0:
        mask = cv2.erode(mask, _void_kernel(settings))
    return int(mask.sum())


# ---------------------------------------------------------------- object silhouettes


def _disc(u, v, cu, cv, r):
    return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def _box(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _segment(u, v, a, b, width):
    """Pixels within `width` of the segment a-b (a thick line)."""
    (ua, va), (ub, vb) = a, b
    du, dv = ub - ua, vb - va
    t = np.clip(((u - ua) * du + (v - va) * dv) / (du * du + dv * dv), 0, 1)
    return (u - ua - t * du) ** 2 + (v - va - t * dv) ** 2 <= width * width


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1


def _quadruped(u, v, body_v, leg_top, neck, head, tail):
    body = _ellipse(u, v, 0.1, body_v, 0.7, 0.32)
    legs = np.zeros_like(body)
    for x in (-0.45, -0.25, 0.35, 0.55):
        legs |= _box(u, v, x - 0.07, x + 0.07, leg_top, 1.0)
    neck_mask = _segment(u, v, (-0.45, body_v), neck, 0.14)
    head_mask = _ellipse(u, v, head[0], head[1], 0.24, 0.17)
    tail_mask = _segment(u, v, (0.75, body_v - 0.1), tail, 0.05)
    return body | legs | neck_mask | head_mask | tail_mask, head_mask


def shape_mask(shape, u, v):
    """Silhouette in object coordinates u, v in [-1, 1] (v down).

    Returns (mask, part): `part` marks a sub-region painted in the part colour (wheels,
    head, sail, pot, screen stand...) so that objects read as a family, not just a blob.
    """
    none = np.zeros(u.shape, dtype=bool)
    if shape == "plane":
        body = _ellipse(u, v, 0.0, 0.0, 1.0, 0.16)
        wing = (np.abs(u - 0.05) <= 0.22 - 0.12 * np.abs(v)) & (np.abs(v) <= 0.95)
        tail = (u >= -0.95) & (u <= -0.7) & (np.abs(v) <= 0.38)
        return body | wing | tail, _box(u, v, -0.95, -0.7, -0.38, 0.38) & tail
    if shape == "bicycle":
        wheels = none.copy()
        for cu in (-0.55, 0.55):
            r2 = (u - cu) ** 2 + (v - 0.35) ** 2
            wheels |= (r2 <= 0.42 ** 2) & (r2 >= 0.3 ** 2)
        frame = (_segment(u, v, (-0.55, 0.35), (-0.05, -0.35), 0.07)
                 | _segment(u, v, (-0.05, -0.35), (0.55, 0.35), 0.07)
                 | _segment(u, v, (-0.25, -0.35), (0.3, -0.35), 0.07)
                 | _segment(u, v, (0.3, -0.35), (0.4, -0.75), 0.07)
                 | _segment(u, v, (0.25, -0.8), (0.55, -0.8), 0.07))
        return wheels | frame, wheels
    if shape == "bird":
        wings = _segment(u, v, (-0.95, -0.55), (0.0, 0.25), 0.2) | _segment(u, v, (0.0, 0.25), (0.95, -0.55), 0.2)
        head = _disc(u, v, 0.0, 0.35, 0.22)
        return wings | head, head
    if shape == "boat":
        hull = (v >= 0.3) & (v <= 1.0) & (np.abs(u) <= 1.0 - 0.35 * (v - 0.3) / 0.7)
        sail = (v >= -1.0) & (v < 0.3) & (u >= -0.05) & (u <= -0.05 + 0.75 * (v + 1.0) / 1.3)
        mast = _box(u, v, -0.12, -0.05, -1.0, 0.3)
        return hull | sail | mast, sail
    if shape == "bottle":
        body = _box(u, v, -1.0, 1.0, -0.15, 1.0) | _ellipse(u, v, 0.0, -0.15, 1.0, 0.35)
        neck = _box(u, v, -0.38, 0.38, -0.88, -0.2)
        cap = _box(u, v, -0.42, 0.42, -1.0, -0.85)
        return body | neck | cap, cap
    if shape == "bus":
        body = _box(u, v, -1.0, 1.0, -0.85, 0.75)
        wheels = _disc(u, v, -0.6, 0.75, 0.2) | _disc(u, v, 0.6, 0.75, 0.2)
        return body | wheels, wheels & ~body
    if shape == "car":
        body = _box(u, v, -1.0, 1.0, -0.05, 0.6)
        cabin = (v >= -0.75) & (v < -0.05) & (np.abs(u + 0.05) <= 0.55 - 0.3 * (-0.05 - v))
        wheels = _disc(u, v, -0.6, 0.6, 0.3) | _disc(u, v, 0.6, 0.6, 0.3)
        return body | cabin | wheels, wheels
    if shape == "cat":
        head = _disc(u, v, 0.0, 0.15, 0.8)
        ears = none.copy()
        for side in (-1, 1):
            ears |= (v >= -1.0) & (v <= -0.35) & (np.abs(u - side * 0.5) <= 0.3 * (v + 1.0) / 0.65)
        muzzle = _ellipse(u, v, 0.0, 0.45, 0.3, 0.2)
        return head | ears, muzzle
    if shape == "chair":
        back = _box(u, v, 0.45, 0.7, -1.0, 0.1)
        seat = _box(u, v, -0.7, 0.7, -0.05, 0.15)
        legs = _box(u, v, -0.7, -0.52, 0.1, 1.0) | _box(u, v, 0.52, 0.7, 0.1, 1.0)
        return back | seat | legs, back
    if shape == "cow":
        return _quadruped(u, v, -0.05, 0.2, (-0.7, -0.2), (-0.8, -0.15), (0.95, 0.4))
    if shape == "horse":
        return _quadruped(u, v, -0.2, 0.0, (-0.7, -0.75), (-0.85, -0.75), (0.95, 0.35))
    if shape == "dog":
        mask, head = _quadruped(u, v, 0.05, 0.3, (-0.65, -0.3), (-0.75, -0.35), (0.95, -0.5))
        ear = _ellipse(u, v, -0.62, -0.3, 0.1, 0.2)
        return mask | ear, head | ear
    if shape == "table":
        top = _box(u, v, -1.0, 1.0, -0.75, -0.5)
        legs = _box(u, v, -0.9, -0.75, -0.5, 1.0) | _box(u, v, 0.75, 0.9, -0.5, 1.0)
        return top | legs, legs
    if shape == "motorbike":
        wheels = _disc(u, v, -0.6, 0.45, 0.38) | _disc(u, v, 0.6, 0.45, 0.38)
        body = _ellipse(u, v, 0.0, 0.0, 0.6, 0.3)
        seat = _box(u, v, -0.4, 0.15, -0.45, -0.25)
        bar = _segment(u, v, (0.45, -0.05), (0.6, -0.6), 0.07)
        return wheels | body | seat | bar, wheels | seat
    if shape == "person":
        head = _disc(u, v, 0.0, -0.72, 0.28)
        torso = _ellipse(u, v, 0.0, -0.05, 0.62, 0.45)
        legs = _box(u, v, -0.42, -0.08, 0.2, 1.0) | _box(u, v, 0.08, 0.42, 0.2, 1.0)
        arms = _segment(u, v, (-0.55, -0.25), (-0.85, 0.35), 0.12) | _segment(u, v, (0.55, -0.25), (0.85, 0.35), 0.12)
        return head | torso | legs | arms, head
    if shape == "plant":
        r = np.hypot(u, v + 0.3)
        phi = np.arctan2(v + 0.3, u)
        leaves = r <= 0.55 + 0.18 * np.cos(7 * phi)
        pot = (v >= 0.35) & (v <= 1.0) & (np.abs(u) <= 0.55 - 0.2 * (v - 0.35) / 0.65)
        return leaves | pot, pot
    if shape == "sheep":
        wool = _ellipse(u, v, 0.15, -0.1, 0.8, 0.5)
        for k in range(10):  # scalloped fleece edge
            a = 2 * np.pi * k / 10
            wool |= _disc(u, v, 0.15 + 0.72 * np.cos(a), -0.1 + 0.45 * np.sin(a), 0.2)
        head = _ellipse(u, v, -0.8, -0.3, 0.2, 0.24)
        legs = _box(u, v, -0.35, -0.22, 0.3, 1.0) | _box(u, v, 0.5, 0.63, 0.3, 1.0)
        return wool | head | legs, head | (legs & ~wool)
    if shape == "sofa":
        back = _box(u, v, -0.85, 0.85, -0.8, 0.1)
        seat = _box(u, v, -1.0, 1.0, 0.05, 0.65)
        arms = _box(u, v, -1.0, -0.75, -0.35, 0.65) | _box(u, v, 0.75, 1.0, -0.35, 0.65)
        feet = _box(u, v, -0.9, -0.75, 0.6, 0.85) | _box(u, v, 0.75, 0.9, 0.6, 0.85)
        return back | seat | arms | feet, arms | feet
    if shape == "train":
        body = _box(u, v, -1.0, 0.75, -0.8, 0.7) | ((u > 0.75) & (v >= -0.8 + 1.5 * (u - 0.75) / 0.25 * 0.5) & (v <= 0.7) & (u <= 1.0))
        skirt = _box(u, v, -1.0, 1.0, 0.55, 0.8)
        return body | skirt, skirt
    if shape == "tv":
        frame = _box(u, v, -1.0, 1.0, -1.0, 0.55)
        stand = _box(u, v, -0.15, 0.15, 0.55, 0.8) | _box(u, v, -0.5, 0.5, 0.8, 1.0)
        return frame | stand, stand
    raise ValueError(f"unknown toyvoc shape {shape!r}")


def _object_colors(base, rng):
    """Jitter a class colour: shared brightness change plus a small per-channel shift."""
    base = np.asarray(base, dtype=np.float32)
    return np.clip(base * rng.uniform(0.8, 1.15) + rng.uniform(-18, 18, size=3), 0, 255)


def _texture(kind, u, v, c1, c2, rng):
    """HxWx3 colours of a texture in object coordinates (so it rotates with the object)."""
    angle = rng.uniform(0, np.pi)
    along = u * np.cos(angle) + v * np.sin(angle)
    if kind == "solid":
        shade = 1.08 - 0.12 * (v + 1)  # lit from above
        return np.clip(c1[None, None] * shade[..., None], 0, 255)
    if kind == "stripes":
        t = (np.sin(along * np.pi * rng.uniform(3.0, 4.5)) > 0).astype(np.float32)
    elif kind == "checker":
        f = rng.uniform(2.5, 4.0)
        t = ((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float32)
    elif kind == "dots":
        f = rng.uniform(3.0, 4.5)
        t = ((((u * f) % 1 - 0.5) ** 2 + ((v * f) % 1 - 0.5) ** 2) < 0.09).astype(np.float32)
    elif kind == "spots":
        field = cv2.GaussianBlur(rng.standard_normal(u.shape).astype(np.float32), (0, 0), 3)
        t = (field > 0.35 * field.std()).astype(np.float32)
    elif kind == "noise":
        field = cv2.GaussianBlur(rng.standard_normal(u.shape).astype(np.float32), (0, 0), 1.2)
        t = np.clip(0.5 + field / (4 * field.std() + 1e-6), 0, 1)
    elif kind == "gradient":
        t = np.clip((u + 1) / 2, 0, 1) ** 2
    elif kind == "grain":
        t = 0.5 + 0.5 * np.sin(v * rng.uniform(12, 18) + 1.5 * np.sin(u * rng.uniform(3, 6)))
    elif kind == "windows":  # a band of dark windows on the upper half
        f = rng.uniform(3.5, 5.0)
        t = (((u * f) % 1 > 0.25) & (v > -0.65) & (v < -0.05)).astype(np.float32)
    elif kind == "screen":  # dark bezel around a bright, noisy screen
        inner = _box(u, v, -0.82, 0.82, -0.82, 0.38)
        glow = 0.8 + 0.2 * np.sin(v * rng.uniform(20, 30))
        t = inner * glow
    else:
        raise ValueError(f"unknown toyvoc texture {kind!r}")
    t = t[..., None]
    return c1[None, None] * (1 - t) + c2[None, None] * t


# ---------------------------------------------------------------- backgrounds


def _smooth_noise(rng, h, w, sigma, sx=None):
    field = rng.standard_normal((h, w)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=sx or sigma, sigmaY=sigma)
    return field / (field.std() + 1e-6)


def _rotated(h, w, angle):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def make_background(context, h, w, rng):
    """HxWx3 float image of one context texture, with random colour/geometry jitter."""
    def jitter(rgb, amount=15):
        return np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, size=3)

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    if context == "sky":
        top, bottom = jitter((70, 135, 225)), jitter((185, 215, 245))
        t = (y / h)[..., None]
        img[:] = top * (1 - t) + bottom * t
        clouds = np.clip(_smooth_noise(rng, h, w, 6, 12) - 0.6, 0, 1)[..., None]
        img = img * (1 - clouds) + 250 * clouds
    elif context == "water":
        img[:] = jitter((25, 80, 135))
        period = rng.uniform(5, 9)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * y / period + 1.2 * np.sin(x / rng.uniform(6, 12) + phase))
        img += (22 * wave + 6 * _smooth_noise(rng, h, w, 1))[..., None]
        img += 60 * (wave > 0.92)[..., None]  # glints
    elif context == "rails":
        along, across = _rotated(h, w, rng.uniform(-0.35, 0.35))
        img[:] = jitter((125, 115, 100))
        img += 20 * rng.standard_normal((h, w, 1)).astype(np.float32)  # gravel
        spacing = rng.uniform(9, 13)
        sleepers = ((along + rng.uniform(0, spacing)) % spacing) < 0.45 * spacing
        centre, gauge = rng.uniform(0.35, 0.65) * h, rng.uniform(0.22, 0.32) * h
        bed = np.abs(across - centre) < 0.8 * gauge
        img[sleepers & bed] = jitter((85, 55, 35), 8)
        for rail in (centre - gauge / 2, centre + gauge / 2):
            img[np.abs(across - rail) < 1.6] = jitter((195, 195, 205), 8)
            img[np.abs(across - rail - 1.6) < 0.6] = (90, 90, 95)
    elif context == "road":
        along, across = _rotated(h, w, rng.uniform(-0.3, 0.3))
        img[:] = jitter((75, 75, 80), 10)
        img += 8 * rng.standard_normal((h, w, 1)).astype(np.float32)
        centre = rng.uniform(0.35, 0.65) * h
        dashes = (np.abs(across - centre) < 1.5) & ((along % 20) < 11)
        img[dashes] = (235, 235, 225)
        img[np.abs(across - centre + 0.42 * h) < 1.2] = (230, 200, 40)
        img[np.abs(across - centre - 0.42 * h) < 1.2] = (230, 200, 40)
    elif context == "grass":
        img[:] = jitter((65, 145, 45))
        blades = _smooth_noise(rng, h, w, 2.5, 0.6)
        img += 25 * blades[..., None] * np.array([0.6, 1.0, 0.4], np.float32)
    elif context == "floor":
        plank = rng.uniform(8, 13)
        rows = np.floor((y + rng.uniform(0, plank)) / plank).astype(np.int64)
        tones = rng.uniform(-20, 20, size=rows.max() + 2)
        base = jitter((160, 110, 65))
        grain = 10 * np.sin(x * rng.uniform(0.25, 0.45) + 2.5 * np.sin(y * 0.7 + rows))
        img[:] = base + (tones[rows] + grain)[..., None]
        img[((y + rng.uniform(0, plank)) % plank) < 1.0] = base * 0.45
    elif context == "room":
        wall = jitter(((230, 215, 180), (190, 215, 195), (195, 205, 230))[int(rng.integers(3))])
        img[:] = wall
        img += 10 * (((x + rng.uniform(0, 10)) % 10) < 4)[..., None]  # wallpaper stripes
        skirting = int(h * rng.uniform(0.75, 0.85))
        img[skirting:] = jitter((120, 90, 70), 10)
        img[skirting:skirting + 2] = 245
        left, right = sorted(rng.uniform(0.1, 0.9, size=2) * w)  # a window or picture frame
        top = rng.uniform(0.1, 0.3) * h
        frame = _box(x, y, left, right, top, top + 0.3 * h)
        img[frame] = jitter((150, 190, 225), 20)
        img[frame & ~_box(x, y, left + 2, right - 2, top + 2, top + 0.3 * h - 2)] = (95, 70, 55)
    elif context == "snow":
        img[:] = jitter((242, 244, 248), 5)
        drifts = np.clip(_smooth_noise(rng, h, w, 3, 14), 0, None)  # wind-blown, horizontal
        img -= 35 * drifts[..., None] * np.array([1.0, 0.95, 0.85], np.float32)
        img += 7 * rng.standard_normal((h, w, 1)).astype(np.float32)  # crystalline grain
    elif context == "sand":
        img[:] = jitter((220, 190, 135))
        along, _ = _rotated(h, w, rng.uniform(0, np.pi))
        img += (10 * np.sin(along * rng.uniform(0.5, 0.8)) + 6 * _smooth_noise(rng, h, w, 0.7))[..., None]
    elif context == "forest":
        blend = (_smooth_noise(rng, h, w, 3) > 0)[..., None]
        img[:] = np.where(blend, jitter((30, 85, 35)), jitter((55, 120, 45)))
        for _ in range(int(rng.integers(2, 5))):
            trunk_x, half = rng.uniform(0, w), rng.uniform(2, 4)
            img[np.abs(x - trunk_x) < half] = jitter((85, 55, 30), 10)
    else:
        raise ValueError(f"unknown toyvoc context {context!r}")
    return img


# ---------------------------------------------------------------- rendering


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
        u, v = _object_uv(inst, w, h)
        mask, part = shape_mask(APPEARANCE[CLASSES[inst["cls"]]]["shape"], u, v)
        shapes.append((u, v, mask, part & mask))

    # VOC marks object borders as void: a band `void_width` px wide on every boundary
    # between two instances or an instance and the background. An instance counts as
    # visible by its labelled pixels, so every kept class shows in the label map.
    keep = list(range(len(shapes)))
    min_pixels = _min_pixels(settings, w, h)
    kernel = _void_kernel(settings)
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
                            np.random.default_rng([settings["seed"], plan["index"], _BACKGROUND]))
    labels = np.zeros((h, w), np.uint8)
    objects = np.zeros((h, w), np.uint8)
    kept = []
    for k in keep:
        inst = plan["instances"][k]
        look = APPEARANCE[CLASSES[inst["cls"]]]
        rng = np.random.default_rng([settings["seed"], plan["index"], _LOOK, k])
        c1, c2, c3 = (_object_colors(c, rng) for c in look["colors"])
        u, v, mask, part = shapes[k]
        paint = _texture(look["texture"], u, v, c1, c2, rng)
        paint[part] = c3 * (1.08 - 0.06 * (v[part, None] + 1))
        image[mask] = paint[mask]
        labels[mask] = inst["cls"] + 1
        vis = owner == k
        objects[vis] = len(kept) + 1
        ys, xs = np.nonzero(vis)
        kept.append(dict(inst, visible_pixels=visible[k],
                         bbox=[int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1],
                         truncated=bool(xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1)))
    noise = np.random.default_rng([settings["seed"], plan["index"], _BACKGROUND, 1])
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


def _write_jpeg(path, image, quality):
    Path(path).write_bytes(jpeg_bytes(image, quality, path))


def summarize(settings, records, splits):
    """Measured statistics of the generated images (all splits together)."""
    n = len(records)
    s = settings["context_strength"]
    cooccurrence = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    class_context = np.zeros((NUM_CLASSES, len(CONTEXTS)), np.int64)
    single_per_class = np.zeros(NUM_CLASSES, np.int64)
    n_single = n_preferred = n_partner_images = n_partner_present = n_dropped = 0
    for rec in records:
        present = [CLASSES.index(c) for c in rec["classes"]]
        for i in present:
            class_context[i, CONTEXTS.index(rec["context"])] += 1
            for j in present:
                cooccurrence[i, j] += 1
        if len(present) == 1:
            n_single += 1
            single_per_class[present[0]] += 1
        n_preferred += rec["context"] == PREFERRED_CONTEXT[rec["main_class"]]
        partners = PARTNERS.get(rec["main_class"], ())
        if partners and len(rec["classes"]) >= 2:
            n_partner_images += 1
            n_partner_present += any(p in rec["classes"] for p in partners)
        n_dropped += rec["dropped_instances"]
    voc_val = set(splits["voc_val"])
    train_aug = sorted((set(splits["voc_train"]) | set(splits["sbd_train"]) | set(splits["sbd_val"])) - voc_val)
    return {
        "n_images": n,
        "split_counts": {**{name: len(ids) for name, ids in splits.items()}, "train_aug": len(train_aug)},
        "single_label_fraction": n_single / n,
        "multi_label_fraction": 1 - n_single / n,
        "preferred_context_fraction": n_preferred / n,
        "expected_preferred_context_fraction": s + (1 - s) / len(CONTEXTS),
        "partner_fraction_multilabel": n_partner_present / max(n_partner_images, 1),
        "dropped_instances": n_dropped,
        "classes": list(CLASSES),
        "contexts": list(CONTEXTS),
        "preferred_context": PREFERRED_CONTEXT,
        "partners": {k: list(v) for k, v in PARTNERS.items()},
        "class_counts": np.diag(cooccurrence).tolist(),
        "single_label_counts": single_per_class.tolist(),
        "cooccurrence": cooccurrence.tolist(),
        "class_context_counts": class_context.tolist(),
    }


def generate(out_root, settings):
    """Write a ToyVOC tree under `out_root` and return its summary statistics.

    out_root/VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,SegmentationObject,
                                ImageSets/Segmentation}
    out_root/benchmark_RELEASE/dataset/{train,val}.txt   (SBD-like extra ids, no PNGs)
    out_root/toyvoc_test_gt/SegmentationClass/<id>.png   (test ground truth, kept out of
                                                         VOC2012 as in the real release)
    out_root/toyvoc_meta.json                            (per-image records + summary)
    The tree is built in a temporary directory next to out_root and renamed into place.
    """
    check_settings(settings)
    out_root = Path(out_root)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    splits = split_ids(settings)
    with_mask = set(splits["voc_train"]) | set(splits["voc_val"])
    test_ids = set(splits["voc_test"])
    membership = {}
    for name, ids in splits.items():
        for i in ids:
            membership.setdefault(i, []).append(name)
    n_images = sum(settings[k] for k in ("n_train", "n_val", "n_test", "n_sbd_train", "n_sbd_val"))

    tmp = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.", suffix=".part"))
    try:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                    "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        (tmp / "benchmark_RELEASE" / "dataset").mkdir(parents=True)
        (tmp / "toyvoc_test_gt" / "SegmentationClass").mkdir(parents=True)
        pal = palette()
        records = []
        for index in range(n_images):
            plan = plan_image(settings, index)
            image, labels, objects, kept = render_image(settings, plan)
            iid = plan["id"]
            _write_jpeg(voc / "JPEGImages" / f"{iid}.jpg", image, settings["jpeg_quality"])
            (voc / "Annotations" / f"{iid}.xml").write_text(annotation_xml(plan, kept))
            if iid in with_mask:
                save_png(voc / "SegmentationClass" / f"{iid}.png", labels, pal)
                save_png(voc / "SegmentationObject" / f"{iid}.png", objects, pal)
            elif iid in test_ids:
                save_png(tmp / "toyvoc_test_gt" / "SegmentationClass" / f"{iid}.png", labels, pal)
            present = sorted({inst["cls"] for inst in kept})
            records.append({
                "id": iid, "splits": membership[iid], "width": plan["width"], "height": plan["height"],
                "classes": [CLASSES[c] for c in present],
                "main_class": CLASSES[plan["main"]],
                "context": CONTEXTS[plan["context"]],
                "preferred_context": bool(plan["preferred"]),
                "partnered": bool(plan["partnered"]),
                "dropped_instances": len(plan["instances"]) - len(kept),
                "instances": [{"class": CLASSES[inst["cls"]], "bbox": inst["bbox"],
                               "visible_pixels": inst["visible_pixels"]} for inst in kept],
            })
        for name, file in (("voc_train", "train"), ("voc_val", "val"), ("voc_test", "test")):
            (voc / "ImageSets" / "Segmentation" / f"{file}.txt").write_text("".join(f"{i}\n" for i in splits[name]))
        for name, file in (("sbd_train", "train"), ("sbd_val", "val")):
            (tmp / "benchmark_RELEASE" / "dataset" / f"{file}.txt").write_text("".join(f"{i}\n" for i in splits[name]))
        summary = summarize(settings, records, splits)
        save_json(tmp / "toyvoc_meta.json", {"settings": dict(settings), "summary": summary, "images": records})
        if out_root.exists():  # replace a previous tree, never leave a half-written one
            old = Path(tempfile.mkdtemp(dir=out_root.parent, prefix=f".{out_root.name}.", suffix=".old"))
            os.replace(out_root, old / "tree")
            os.replace(tmp, out_root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary

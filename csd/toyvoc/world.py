"""The synthetic world: classes, contexts, the shortcuts between them, and what each image
holds (its plan). `context_strength` s sets how often the shortcuts hold (s = 0 is the
unbiased control), `single_label_fraction` the share of single-label images (CSD's source
domain).

Determinism: every image draws from its own generators seeded by (seed, image index,
stream), so the output does not depend on generation order, and the geometry stream never
sees s, so objects and their positions are the same for every context_strength.
"""


import cv2
import numpy as np

from csd.data.voc import CLASSES, NUM_CLASSES
from csd.runtime.config import section
from csd.toyvoc.shapes import shape_mask

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

# Random streams per image (see module docstring).
STREAM_LABELS, STREAM_GEOMETRY, STREAM_BACKGROUND, STREAM_LOOK = 0, 1, 2, 3


def check_settings(settings):
    """The schema's checks of dataset.toyvoc (csd.runtime.config.section: a missing key is a
    KeyError, a mistyped or out-of-range one a ValueError naming it), then those between
    keys, which a schema cannot state."""
    s = section(settings, "dataset.toyvoc")
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

    Label draws (stream STREAM_LABELS) always consume the same numbers whatever s is, and only
    their comparison with s changes, so s flips decisions without reshuffling the rest.
    """
    s = settings["context_strength"]
    rng = np.random.default_rng([settings["seed"], index, STREAM_LABELS])
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

    geo = np.random.default_rng([settings["seed"], index, STREAM_GEOMETRY])
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
        inst.update(place(frac * width * height, look["aspect"] * (0.8 + 0.4 * aspect_jitter),
                           cx, cy, width, height))
        if k < n_classes:
            # Each class's first instance is grown until, unoccluded, the void band leaves
            # it enough labelled pixels (thin chairs and bicycles in small images).
            grow = 1.0
            while _labelled_pixels(inst, width, height, settings) < min_object_pixels(settings, width, height) \
                    and grow < 30:
                grow *= 1.25
                inst.update(place(grow * frac * width * height,
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


def place(area, aspect, cx, cy, width, height):
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


def min_object_pixels(settings, width, height):
    return max(settings["min_visible_frac"] * width * height, 1)


def object_uv(inst, width, height):
    """Object coordinates (u, v) of every pixel centre: the object spans [-1, 1]^2."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    a = np.deg2rad(inst["angle"])
    dx, dy = x - inst["cx"], y - inst["cy"]
    u = (dx * np.cos(a) + dy * np.sin(a)) / inst["half_w"]
    v = (-dx * np.sin(a) + dy * np.cos(a)) / inst["half_h"]
    return (-u if inst["flip"] else u), v


def void_kernel(settings):
    return np.ones((settings["void_width"] + 1,) * 2, np.uint8)  # k-wide window: k-1 px band


def _labelled_pixels(inst, width, height, settings):
    """Pixels of an unoccluded instance that stay labelled after the void band."""
    mask, _ = shape_mask(APPEARANCE[CLASSES[inst["cls"]]]["shape"], *object_uv(inst, width, height))
    mask = mask.astype(np.uint8)
    if settings["void_width"] > 0:
        mask = cv2.erode(mask, void_kernel(settings))
    return int(mask.sum())

"""Objects' looks: each class's silhouette, its colours and its texture."""


import cv2
import numpy as np


def _disc(u, v, cu, cv, r):
    return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def box(u, v, u0, u1, v0, v1):
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
        legs |= box(u, v, x - 0.07, x + 0.07, leg_top, 1.0)
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
        return body | wing | tail, box(u, v, -0.95, -0.7, -0.38, 0.38) & tail
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
        mast = box(u, v, -0.12, -0.05, -1.0, 0.3)
        return hull | sail | mast, sail
    if shape == "bottle":
        body = box(u, v, -1.0, 1.0, -0.15, 1.0) | _ellipse(u, v, 0.0, -0.15, 1.0, 0.35)
        neck = box(u, v, -0.38, 0.38, -0.88, -0.2)
        cap = box(u, v, -0.42, 0.42, -1.0, -0.85)
        return body | neck | cap, cap
    if shape == "bus":
        body = box(u, v, -1.0, 1.0, -0.85, 0.75)
        wheels = _disc(u, v, -0.6, 0.75, 0.2) | _disc(u, v, 0.6, 0.75, 0.2)
        return body | wheels, wheels & ~body
    if shape == "car":
        body = box(u, v, -1.0, 1.0, -0.05, 0.6)
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
        back = box(u, v, 0.45, 0.7, -1.0, 0.1)
        seat = box(u, v, -0.7, 0.7, -0.05, 0.15)
        legs = box(u, v, -0.7, -0.52, 0.1, 1.0) | box(u, v, 0.52, 0.7, 0.1, 1.0)
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
        top = box(u, v, -1.0, 1.0, -0.75, -0.5)
        legs = box(u, v, -0.9, -0.75, -0.5, 1.0) | box(u, v, 0.75, 0.9, -0.5, 1.0)
        return top | legs, legs
    if shape == "motorbike":
        wheels = _disc(u, v, -0.6, 0.45, 0.38) | _disc(u, v, 0.6, 0.45, 0.38)
        body = _ellipse(u, v, 0.0, 0.0, 0.6, 0.3)
        seat = box(u, v, -0.4, 0.15, -0.45, -0.25)
        bar = _segment(u, v, (0.45, -0.05), (0.6, -0.6), 0.07)
        return wheels | body | seat | bar, wheels | seat
    if shape == "person":
        head = _disc(u, v, 0.0, -0.72, 0.28)
        torso = _ellipse(u, v, 0.0, -0.05, 0.62, 0.45)
        legs = box(u, v, -0.42, -0.08, 0.2, 1.0) | box(u, v, 0.08, 0.42, 0.2, 1.0)
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
        legs = box(u, v, -0.35, -0.22, 0.3, 1.0) | box(u, v, 0.5, 0.63, 0.3, 1.0)
        return wool | head | legs, head | (legs & ~wool)
    if shape == "sofa":
        back = box(u, v, -0.85, 0.85, -0.8, 0.1)
        seat = box(u, v, -1.0, 1.0, 0.05, 0.65)
        arms = box(u, v, -1.0, -0.75, -0.35, 0.65) | box(u, v, 0.75, 1.0, -0.35, 0.65)
        feet = box(u, v, -0.9, -0.75, 0.6, 0.85) | box(u, v, 0.75, 0.9, 0.6, 0.85)
        return back | seat | arms | feet, arms | feet
    if shape == "train":
        body = box(u, v, -1.0, 0.75, -0.8, 0.7) | ((u > 0.75) & (v >= -0.8 + 1.5 * (u - 0.75) / 0.25 * 0.5) & (v <= 0.7) & (u <= 1.0))
        skirt = box(u, v, -1.0, 1.0, 0.55, 0.8)
        return body | skirt, skirt
    if shape == "tv":
        frame = box(u, v, -1.0, 1.0, -1.0, 0.55)
        stand = box(u, v, -0.15, 0.15, 0.55, 0.8) | box(u, v, -0.5, 0.5, 0.8, 1.0)
        return frame | stand, stand
    raise ValueError(f"unknown toyvoc shape {shape!r}")


def object_colors(base, rng):
    """Jitter a class colour: shared brightness change plus a small per-channel shift."""
    base = np.asarray(base, dtype=np.float32)
    return np.clip(base * rng.uniform(0.8, 1.15) + rng.uniform(-18, 18, size=3), 0, 255)


def paint_texture(kind, u, v, c1, c2, rng):
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
        inner = box(u, v, -0.82, 0.82, -0.82, 0.38)
        glow = 0.8 + 0.2 * np.sin(v * rng.uniform(20, 30))
        t = inner * glow
    else:
        raise ValueError(f"unknown toyvoc texture {kind!r}")
    t = t[..., None]
    return c1[None, None] * (1 - t) + c2[None, None] * t

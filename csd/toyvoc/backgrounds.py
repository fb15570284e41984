"""Backgrounds: one procedural texture per context (sky, water, rails, ...)."""


import cv2
import numpy as np

from csd.toyvoc.shapes import box


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
        frame = box(x, y, left, right, top, top + 0.3 * h)
        img[frame] = jitter((150, 190, 225), 20)
        img[frame & ~box(x, y, left + 2, right - 2, top + 2, top + 0.3 * h - 2)] = (95, 70, 55)
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

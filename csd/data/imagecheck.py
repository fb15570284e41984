"""Full-decode checks of a dataset's images, run once by build_splits before any training.

A truncated JPEG fails to decode. A JPEG damaged in the middle usually still decodes (into
garbage): libjpeg only warns ("Corrupt JPEG data: ..."), on the process's stderr, which
neither Pillow nor OpenCV turn into an error. So the JPEGs are decoded with OpenCV while file
descriptor 2 is captured; only when the batch produced warnings are the images decoded again
one at a time, to name the damaged ones (rare, so the common case stays parallel).
"""

import io
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np
from PIL import Image

# The 1/8-scale decode still reads every entropy-coded bit (libjpeg's warnings come from
# there) but skips most of the inverse DCT and colour conversion.
_DECODE_FLAG = cv2.IMREAD_REDUCED_GRAYSCALE_8
LABEL_MODES = ("P", "L")  # palette or grey label maps: index values, not colours


@contextmanager
def captured_stderr():
    """Collect what C libraries write to file descriptor 2 while the block runs (a list of
    lines, filled on exit)."""
    lines = []
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines())


def _decode_jpeg(path):
    """(problem or None, (width, height) or None) of one JPEG."""
    data = np.fromfile(path, np.uint8)
    if cv2.imdecode(data, _DECODE_FLAG) is None:
        return f"{path}: does not decode (truncated, empty or not an image)", None
    try:
        return None, Image.open(io.BytesIO(data.tobytes())).size
    except OSError as err:  # OpenCV reads formats Pillow's loader (the stages') does not
        return f"{path}: does not decode with Pillow ({err})", None


def check_jpegs(paths, workers=1):
    """({path: problem}, {path: (width, height)}) of the images at `paths`."""
    paths = list(paths)
    with ThreadPoolExecutor(max(1, workers)) as pool, captured_stderr() as warnings:
        results = dict(zip(paths, pool.map(_decode_jpeg, paths)))
    if warnings:
        for path in paths:  # name the images that warned: one decode each, serially
            if results[path][0] is None:
                with captured_stderr() as own:
                    _decode_jpeg(path)
                if own:
                    results[path] = (f"{path}: corrupt JPEG data ({own[0].strip()})",
                                     results[path][1])
        print("\n".join(warnings), file=sys.stderr)  # keep libjpeg's words in the log
    problems = {p: problem for p, (problem, _) in results.items() if problem}
    sizes = {p: size for p, (_, size) in results.items() if size}
    return problems, sizes


def _check_label_png(path, size):
    try:
        with Image.open(path) as image:
            image.load()
            mode, got = image.mode, image.size
    except (OSError, SyntaxError, ValueError) as err:
        return f"{path}: does not decode ({err})"
    if mode not in LABEL_MODES:
        return f"{path}: mode {mode}, not a label map ({' or '.join(LABEL_MODES)})"
    if size is not None and got != tuple(size):
        return f"{path}: {got[0]} x {got[1]}, its image is {size[0]} x {size[1]}"
    return None


def check_label_pngs(expected_sizes, workers=1):
    """{path: problem} of the label maps in `expected_sizes` ({png path: (width, height)
    of its image, or None when the image itself is unreadable})."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = pool.map(_check_label_png, expected_sizes, expected_sizes.values())
        return {path: problem for path, problem in zip(expected_sizes, found) if problem}

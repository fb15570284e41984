"""Time build_splits' validation on a toyvoc tree, and count which damaged JPEGs it names.

    python benchmarks/validate_splits.py [--images 10000] [--size 96 128] [--workers 1 2]
                                         [--tree DIR]

Generates a toyvoc tree (csd.toyvoc.world; `--images` listed images, two thirds VOC train/val
with ground-truth PNGs, one third SBD-only) in a temporary directory (`--tree DIR`: kept
there, and reused if it exists), then runs
build_splits on it with each `--workers` count and prints its wall seconds and the share
spent decoding images (csd.data.imagecheck). toyvoc's default image size (96-128 px) keeps
generation at ~20 ms per image; VOC's images are ~500x375 (`--size 375 500`, ~15x slower
to generate, so use fewer `--images`).

Then `--damaged` copies of one JPEG each get one kind of damage and check_jpegs runs on
them: the last lines say how many of each kind it names (a flipped bit in the entropy-coded
data often leaves a decodable image with a few garbage blocks and no libjpeg warning: only
a checksum would find those).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import csd.data.splits
from csd.data.imagecheck import check_jpegs
from csd.data.splits import build_splits
from csd.toyvoc.generate import generate

REPO = Path(__file__).resolve().parents[1]


def make_tree(root, images, size):
    settings = yaml.safe_load((REPO / "config/config.yaml").read_text())["dataset"]["toyvoc"]
    third = images // 3
    settings.update(n_train=third, n_val=third, n_test=0, n_sbd_train=images - 2 * third,
                    n_sbd_val=0, sbd_overlap=0, size_min=size[0], size_max=size[1])
    start = time.perf_counter()
    generate(root, settings)
    return time.perf_counter() - start


def timed_build(root, workers, out):
    """(total s, image decoding s) of one build_splits run."""
    spent = []
    inner = csd.data.splits._image_problems

    def image_problems(*args):
        start = time.perf_counter()
        try:
            return inner(*args)
        finally:
            spent.append(time.perf_counter() - start)

    csd.data.splits._image_problems = image_problems
    try:
        start = time.perf_counter()
        build_splits(root / "VOCdevkit/VOC2012", root / "benchmark_RELEASE/dataset", out,
                     {"expected_counts": None, "workers": workers})
        return time.perf_counter() - start, spent[0]
    finally:
        csd.data.splits._image_problems = inner


def damage(data, kind, rng):
    """One kind of damage at a random place after the start of the scan (SOS marker)."""
    scan = data.index(b"\xff\xda") + 20
    at = int(rng.integers(scan, len(data) - 600))
    if kind == "truncated":
        return data[:at]
    if kind == "bit flip":
        return data[:at] + bytes([data[at] ^ (1 << int(rng.integers(8)))]) + data[at + 1:]
    if kind == "64 random bytes":
        return data[:at] + rng.integers(0, 256, 64, dtype=np.uint8).tobytes() + data[at + 64:]
    return data[:at] + bytes(512) + data[at + 512:]  # "512 zero bytes"


def damage_counts(source, out, copies, workers):
    rng = np.random.default_rng(0)
    data = source.read_bytes()
    for kind in ("truncated", "bit flip", "64 random bytes", "512 zero bytes"):
        paths = []
        for index in range(copies):
            path = out / f"{kind.replace(' ', '_')}_{index}.jpg"
            path.write_bytes(damage(data, kind, rng))
            paths.append(path)
        problems, _ = check_jpegs(paths, workers)
        print(f"damaged JPEGs named: {kind}: {len(problems)} of {copies}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--damaged", type=int, default=200)
    parser.add_argument("--tree", type=Path, help="keep the toyvoc tree here (reused)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.tree or Path(tmp) / "toyvoc"
        if not root.exists():
            seconds = make_tree(root, args.images, args.size)
            print(f"toyvoc: {args.images} images of {args.size[0]}-{args.size[1]} px "
                  f"generated in {seconds:.0f} s")
        for workers in args.workers:
            total, decoding = timed_build(root, workers, Path(tmp) / f"splits{workers}")
            print(f"build_splits with {workers} workers: {total:.2f} s "
                  f"(decoding JPEGs and PNGs {decoding:.2f} s)")
        jpegs = (root / "VOCdevkit/VOC2012/JPEGImages").iterdir()
        jpeg = max(jpegs, key=lambda p: p.stat().st_size)  # the most scan data to damage
        damaged = Path(tmp) / "damaged"
        damaged.mkdir()
        damage_counts(jpeg, damaged, args.damaged, max(args.workers))


if __name__ == "__main__":
    main()

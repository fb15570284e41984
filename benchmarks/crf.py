"""Throughput of the IR-label stage (two dense CRFs per image) with 1 vs N worker processes.

    python benchmarks/crf.py [--images 40] [--workers 2]

Synthetic VOC-sized (500x375) images with a few coloured objects and matching CAM blobs
are written to a temporary directory; make_ir_labels runs on them serially and with a pool.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from csd.irn.ir_label import make_ir_labels
from csd.runtime.io import save_npz

# IRN's published values (method.md); the config holds the real ones.
CRF = {"gt_prob": 0.7, "gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 50,
       "bilateral_srgb": 5, "bilateral_compat": 10, "iterations": 10}


def make_data(root, n, seed=0):
    rng = np.random.default_rng(seed)
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    ids = [f"bench_{i:04d}" for i in range(n)]
    yy, xx = np.mgrid[:375, :500]
    for image_id in ids:
        image = np.empty((375, 500, 3), np.float32)
        image[:] = rng.integers(0, 255, 3)
        n_keys = int(rng.integers(1, 4))
        keys = np.sort(rng.choice(20, size=n_keys, replace=False))
        cams = []
        for _ in keys:
            cy, cx = rng.integers(50, 325), rng.integers(60, 440)
            ry, rx = rng.integers(30, 120, size=2)
            d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            image[d2 < 1] = rng.integers(0, 255, 3)
            cams.append(np.exp(-d2) + 0.1 * rng.random(d2.shape))
        image += rng.normal(0, 8, image.shape)  # sensor-like noise: a realistic lattice size
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        high_res = np.stack(cams)
        high_res = (high_res / high_res.max(axis=(1, 2), keepdims=True)).astype(np.float32)
        save_npz(root / "cams" / f"{image_id}.npz", keys=keys,
                 cam=high_res[:, ::4, ::4].copy(), high_res=high_res)
    return voc, ids


def cpu_seconds():
    # This process plus its finished children (the pool's workers once joined).
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        voc, ids = make_data(root, args.images)
        rates, cpu = {}, {}
        for workers in (1, args.workers):
            settings = {"conf_fg_thres": 0.30, "conf_bg_thres": 0.05, "workers": workers,
                        "crf": CRF}
            start, cpu_start = time.perf_counter(), cpu_seconds()
            make_ir_labels(voc, ids, [root / "cams"], root / f"out{workers}", settings)
            rates[workers] = len(ids) / (time.perf_counter() - start)
            cpu[workers] = (cpu_seconds() - cpu_start) / len(ids)
        # CPU s/image shows the pool's own cost; the wall-clock ratio also depends on
        # whatever else runs on the machine.
        for workers, rate in rates.items():
            # cores busy on average: below `workers` means the machine was shared.
            print(f"workers={workers}: {rate:.2f} images/s, {cpu[workers]:.2f} CPU s/image, "
                  f"{rate * cpu[workers]:.2f} cores busy")
        print(f"speed-up x{rates[args.workers] / rates[1]:.2f} with {args.workers} workers")
        same = all((root / "out1" / f"{i}.png").read_bytes()
                   == (root / f"out{args.workers}" / f"{i}.png").read_bytes() for i in ids)
        print(f"outputs identical: {same}")


if __name__ == "__main__":
    main()

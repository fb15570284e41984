"""Throughput of the sharded per-image stages: 1 shard vs 2 shards running side by side.

    python benchmarks/shards.py [--images 16] [--depth 50] [--stages make_cam make_sem_seg]

VOC-sized (500x375) synthetic images and CAMs (from benchmarks/crf.py), randomly
initialised networks (speed does not depend on the weights). Each shard is a separate
process with one torch thread, as Snakemake runs `shards` jobs side by side; the 2-shard
run gets the two halves of the image list (csd.runtime.runner.shard). Also printed: one shard
with two threads, which is what a 1-shard workflow run on 2 cores does.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from crf import make_data

from csd.cam.cam_net import CAMNet
from csd.data.voc import write_labels_csv
from csd.irn.edge_net import EdgeNet
from csd.runtime.io import save_torch

# One shard: run a stage on shard `index` of `count` with `threads` torch threads.
CHILD = """
import json, sys, torch
from csd.runtime.runner import shard
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
ids = shard(args["ids"], args["index"], args["count"])
if args["stage"] == "make_cam":
    from csd.cam.make_cam import make_cams
    make_cams(args["voc"], ids, args["labels"], args["cam_model"], args["out"],
              {{"scales": [1.0, 0.5, 1.5, 2.0], "flip": True}})
else:
    from csd.irn.make_sem_seg import make_sem_seg
    make_sem_seg(args["voc"], ids, [args["cams"]], args["irn_model"], args["out"],
                 {{"radius": 5, "beta": 10, "exp_times": 8, "bg_threshold": 0.25,
                  "pad_to_crop": True, "crop": 512}})
"""


def run_shards(stage, count, threads, common, out):
    """Wall seconds of `count` shard processes started together."""
    script = CHILD.format(repo=str(Path(__file__).resolve().parents[1]))
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(
        dict(common, stage=stage, index=i, count=count, threads=threads, out=str(out)))],
        stderr=subprocess.DEVNULL) for i in range(count)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"{stage}: a shard process failed ({codes})")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101])
    parser.add_argument("--stages", nargs="+", default=["make_cam", "make_sem_seg"],
                        choices=["make_cam", "make_sem_seg"])
    args = parser.parse_args()
    backbone = {"depth": args.depth, "pretrained": None, "strides": [2, 2, 2, 1],
                "frozen_stages": 0, "freeze_bn": True}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        voc, ids = make_data(root, args.images)  # also writes root/cams/<id>.npz
        labels = {}
        for image_id in ids:
            labels[image_id] = np.load(root / "cams" / f"{image_id}.npz")["keys"].tolist()
        write_labels_csv(root / "labels.csv", labels)
        torch.manual_seed(0)
        save_torch(root / "cam.pt", {"model": CAMNet(backbone).state_dict(),
                                     "settings": {"backbone": backbone}})
        save_torch(root / "irn.pt", {"model": EdgeNet(backbone, pretrained=None).state_dict(),
                                     "settings": {"backbone": backbone}})
        common = {"voc": str(voc), "ids": ids, "labels": str(root / "labels.csv"),
                  "cam_model": str(root / "cam.pt"), "irn_model": str(root / "irn.pt"),
                  "cams": str(root / "cams")}
        results = {}
        for stage in args.stages:
            rates = {}
            for label, count, threads in (("1 shard x 1 thread", 1, 1),
                                          ("2 shards x 1 thread", 2, 1),
                                          ("1 shard x 2 threads", 1, 2)):
                out = root / f"{stage}-{count}-{threads}"
                seconds = run_shards(stage, count, threads, common, out)
                rates[label] = len(ids) / seconds
                print(f"{stage}: {label}: {rates[label]:.2f} images/s "
                      f"({seconds:.1f} s for {len(ids)} images)")
            ratio = rates["2 shards x 1 thread"] / rates["1 shard x 1 thread"]
            print(f"{stage}: 2 shards / 1 shard = x{ratio:.2f}")
            results[stage] = ratio
        print(" ".join(f"{stage}_ratio={ratio:.2f}" for stage, ratio in results.items()))


if __name__ == "__main__":
    main()

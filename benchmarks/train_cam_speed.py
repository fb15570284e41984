"""train_cam's training speed on random images, fp32 against `auto`, on any device:

    python benchmarks/train_cam_speed.py [--device cuda] [--depth 50] [--crop 512]
        [--batch 16] [--steps 10] [--threads N]

IRN's real setting by default (ResNet-50 at output stride 16, 512-px crops, batch 16),
random weights and random images held in memory, so that the network alone is timed: the
stage's own loop (csd.runtime.training.fit) and step (csd.cam.train_cam.classification_step), one
epoch of `--steps` steps after one untimed warm-up step at each precision. Prints images
per second and the ratio.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from csd.cam.cam_net import CAMNet
from csd.cam.train_cam import classification_step, fit_classifier
from csd.runtime.precision import resolve


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n, crop, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, crop, crop, generator=generator)
        self.labels = (torch.rand(n, 20, generator=generator) < 0.15).float()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}


def images_per_second(args, precision, steps):
    settings = {"seed": 0, "batch_size": args.batch, "epochs": 1, "lr": 0.01,
                "classifier_lr_mult": 10, "weight_decay": 1e-4, "momentum": 0.9,
                "poly_power": 0.9, "num_workers": 0}
    backbone = {"depth": args.depth, "pretrained": None, "strides": [2, 2, 2, 1],
                "frozen_stages": 1, "freeze_bn": True}
    torch.manual_seed(0)
    model = CAMNet(backbone).to(args.device)
    dataset = RandomImages(steps * args.batch, args.crop)
    with tempfile.TemporaryDirectory() as tmp:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fit_classifier(model, dataset, classification_step(args.device), settings,
                       Path(tmp) / "m.pt", Path(tmp) / "h.json", args.device,
                       precision=precision)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return len(dataset) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
            else f"CPU, {torch.get_num_threads()} thread(s)")
    print(f"train_cam on {name}: ResNet-{args.depth}, {args.crop}-px crops, batch "
          f"{args.batch}, {args.steps} steps; auto = {resolve('auto', args.device)}")
    rates = {}
    for precision in ("fp32", "auto"):
        images_per_second(args, precision, 1)  # warm-up: kernels chosen, memory allocated
        rates[precision] = images_per_second(args, precision, args.steps)
        print(f"  {precision:<5} {rates[precision]:8.1f} images/s", flush=True)
    print(f"  ratio {rates['auto'] / rates['fp32']:.2f}x")


if __name__ == "__main__":
    main()

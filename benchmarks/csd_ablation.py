"""CSD ablations outside the DAG: one irn_csd classifier with overridden `csd` settings,
then its seeds, scored on the train split (never on val).

    python benchmarks/csd_ablation.py NAME '{"lambda_bg": 0}' [--config config/benchmark.yaml]
        [--seed 0] [--threads 2] [--set train_cam.epochs=10]

Needs the base method's round-0 pseudo masks of that seed (run the benchmark's `irn` first:
`snakemake --cores 2 --configfile config/benchmark.yaml results/benchmark/irn/seed0/mask/all`).
Writes benchmarks/out/csd_ablation/NAME/ (model, history, CAMs, seed_metrics.json) and
prints the seed mIoU, the best threshold's, background IoU and mean class accuracy.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from csd.cam.make_cam import make_cams
from csd.data.voc import read_ids
from csd.methods.csd.train import train_cam_csd
from csd.results.metrics import eval_seeds
from csd.runtime.config import check_config_files


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("csd", help="JSON object of csd settings to override")
    parser.add_argument("--config", default="config/benchmark.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[],
                        help="train_cam.KEY=JSON_VALUE, e.g. train_cam.epochs=10")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = check_config_files([REPO / args.config])
    settings = dict(config["train_cam"], seed=args.seed,
                    csd={**config["csd"], **json.loads(args.csd)})
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        if section != "train_cam":
            parser.error(f"--set {item}: only train_cam.KEY can be set")
        settings[name] = json.loads(value)

    data = Path(config["data_dir"])
    name = config["dataset"]["name"]
    root = data / name / "VOCdevkit/VOC2012"
    splits = data / "splits" / name
    masks = Path(config["results_dir"]) / "irn" / f"seed{args.seed}" / "mask/all"
    if not masks.is_dir():
        sys.exit(f"error: no round-0 masks at {masks} (run the irn pipeline of seed "
                 f"{args.seed} first)")
    out = REPO / "benchmarks/out/csd_ablation" / args.name
    out.mkdir(parents=True, exist_ok=True)
    train_cam_csd(root, read_ids(splits / "train_aug.txt"), splits / "labels.csv", masks,
                  out / "cam_model.pt", out / "cam_history.json", settings)
    make_cams(root, read_ids(splits / "train.txt"), splits / "labels.csv",
              out / "cam_model.pt", out / "cam", config["make_cam"])
    result = eval_seeds(root, read_ids(splits / "train.txt"), [out / "cam"],
                        out / "seed_metrics.json", config["eval_cam"])
    print(json.dumps({"name": args.name, "csd": json.loads(args.csd), "set": args.set,
                      "seed_miou": result["miou"], "best_miou": result["best_miou"],
                      "best_threshold": result["best_threshold"],
                      "background_iou": result["iou"]["background"],
                      "mean_acc": result["mean_acc"]}))


if __name__ == "__main__":
    main()

"""Where one run loses quality, stage by stage, on the train split (which has ground truth):

    python benchmarks/stage_ladder.py [--config config/benchmark.yaml [OVERLAY ...]] [--method irn]
        [--seed 0] [--workdir .] [--threads 2]

Prints, for a run with seeds and masks (its seed_metrics.json and its cam/all,
ir_label/all and mask/all directories; `snakemake --configfile CONFIG
RESULTS/METHOD/seedN/mask_metrics.json` makes them):
  seed mIoU                 the CAM seeds (eval_cam's seed_metrics.json)
  IR labels                 precision / recall of cam_to_ir_label's confident foreground
                            and background against the ground truth
  mask mIoU (trained edge)  the random walk on IRN's boundary map (the run's mask/all)
  mask mIoU (oracle edge)   the same walk on a boundary map drawn from the ground truth:
                            what a perfect edge network would give these CAMs
The oracle uses ground truth and is a diagnostic only, never part of the pipeline. It is a
coarse map (every 4x4 cell holding a label change or the void band), so a thin trained map
can beat it: it shows the CAMs under a walk that never leaks, not a ceiling.
Then, per (image, class) region binned by its area in stride-8 cells: seed and mask IoU
and their area against the true one (the seeds at eval_cam.bg_threshold, from high_res).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

from csd.data.voc import IGNORE, load_label_png, read_ids
from csd.irn.random_walk import propagate, sem_seg_from_rw
from csd.results.metrics import N_LABELS, confusion_matrix, scores, seed_labels
from csd.runtime.config import check_config_files
from csd.runtime.config import voc_root as csd_voc_root
from csd.runtime.io import load_json
from csd.runtime.store import load_cam_pack


def oracle_edge(gt):
    """A stride-4 boundary map from a ground-truth label map: 1 on every 4x4 cell that holds
    a label change or VOC's void band (which lies on object borders), else 0."""
    labels = torch.as_tensor(gt.astype(np.int64))
    change = torch.zeros(labels.shape, dtype=torch.bool)
    change[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    change[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    change[1:, :] |= labels[1:, :] != labels[:-1, :]
    change[:-1, :] |= labels[1:, :] != labels[:-1, :]
    change |= labels == IGNORE
    return F.max_pool2d(change[None, None].float(), 4, ceil_mode=True)[0, 0]


SIZE_BINS = (0, 8, 16, 32, 64, 128, np.inf)  # region area in stride-8 cells


def region_scores(gt, seed, mask, keys):
    """[(area in stride-8 cells, seed IoU, mask IoU, seed area / true, mask area / true)]
    for each labelled class of the image that the ground truth shows."""
    known = gt != IGNORE
    rows = []
    for label in np.asarray(keys) + 1:
        true = known & (gt == label)
        if not true.any():
            continue
        row = [true.sum() / 64.0]
        for pred in (known & (seed == label), known & (mask == label)):
            row.append((true & pred).sum() / (true | pred).sum())
        rows.append(row + [(known & (seed == label)).sum() / true.sum(),
                           (known & (mask == label)).sum() / true.sum()])
    return rows


def ir_label_scores(gt, ir):
    """Pixel counts for precision / recall of the confident fg (1..20) and bg (0) labels."""
    known = gt != IGNORE
    fg_gt, bg_gt = known & (gt > 0), known & (gt == 0)
    fg_ir, bg_ir = known & (ir > 0) & (ir != IGNORE), known & (ir == 0)
    return np.array([(fg_ir & (ir == gt)).sum(), fg_ir.sum(), fg_gt.sum(),
                     (bg_ir & bg_gt).sum(), bg_ir.sum(), bg_gt.sum()], np.int64)


def run_parser(doc):
    """The options that name one finished run (shared with walk_sweep.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--config", nargs="+", default=["config/benchmark.yaml"],
                        help="config files, later ones laid over earlier (as --configfile)")
    parser.add_argument("--method", default="irn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=".", help="the run's snakemake -d directory")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def splits_dir(config, workdir):
    """The run's split lists and labels.csv (build_splits' output directory)."""
    return Path(workdir) / config["data_dir"] / "splits" / config["dataset"]["name"]


def open_run(args):
    """(config, run directory, VOC root, train ids) of the run that `args` name."""
    torch.set_num_threads(args.threads)
    config = check_config_files([REPO / path for path in args.config])
    work = Path(args.workdir)
    run = work / config["results_dir"] / args.method / f"seed{args.seed}"
    ids = read_ids(splits_dir(config, work) / "train.txt")
    return config, run, work / csd_voc_root(config), ids


def main():
    args = run_parser(__doc__).parse_args()
    config, run, voc_root, ids = open_run(args)
    walk = config["make_sem_seg"]

    counts = np.zeros(6, np.int64)
    confusion = np.zeros((N_LABELS, N_LABELS), np.int64)
    trained = np.zeros((N_LABELS, N_LABELS), np.int64)
    regions = []
    for image_id in ids:
        gt = load_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
        counts += ir_label_scores(gt, load_label_png(run / "ir_label/all" / f"{image_id}.png"))
        pack = load_cam_pack([run / "cam/all"], image_id, fields=("keys", "cam", "high_res"))
        cams = torch.as_tensor(np.asarray(pack["cam"], np.float32))
        edge = oracle_edge(gt)[:cams.shape[1], :cams.shape[2]]
        rw = propagate(cams, edge, walk["radius"], walk["beta"], walk["exp_times"])
        mask = sem_seg_from_rw(rw, pack["keys"], gt.shape, walk["bg_threshold"])
        confusion += confusion_matrix(gt, mask)
        trained_mask = load_label_png(run / "mask/all" / f"{image_id}.png")
        trained += confusion_matrix(gt, trained_mask)
        seed = seed_labels(np.asarray(pack["high_res"]), pack["keys"],
                           config["eval_cam"]["bg_threshold"])
        regions += region_scores(gt, seed, trained_mask, pack["keys"])

    def pct(a, b):
        return 100.0 * a / b if b else float("nan")

    rows = [
        ("seed mIoU", load_json(run / "seed_metrics.json")["miou"]),
        ("IR label fg precision", pct(counts[0], counts[1])),
        ("IR label fg recall", pct(counts[0], counts[2])),
        ("IR label bg precision", pct(counts[3], counts[4])),
        ("IR label bg recall", pct(counts[3], counts[5])),
        ("mask mIoU (trained edge)", scores(trained)["miou"]),
        ("mask mIoU (oracle edge)", scores(confusion)["miou"]),
    ]
    print(f"stage ladder: {args.method} seed {args.seed}, {len(ids)} train images ({run})")
    print("| stage | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} |")
    regions = np.asarray(regions, np.float64).reshape(-1, 5)
    print(f"\nby region size ({len(regions)} regions; mean {regions[:, 0].mean():.1f}, "
          f"median {np.median(regions[:, 0]):.1f} stride-8 cells)")
    print("| cells | regions | seed IoU | mask IoU | seed area / true | mask area / true |")
    print("|---|---|---|---|---|---|")
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        sel = (regions[:, 0] >= low) & (regions[:, 0] < high)
        if sel.any():
            name = f"{low}-{high}" if np.isfinite(high) else f">= {low}"
            print(f"| {name} | {sel.sum()} | {100 * regions[sel, 1].mean():.1f} | "
                  f"{100 * regions[sel, 2].mean():.1f} | {np.median(regions[sel, 3]):.2f} | "
                  f"{np.median(regions[sel, 4]):.2f} |")


if __name__ == "__main__":
    main()

"""The random walk's settings on one run's train split (which has ground truth):

    python benchmarks/walk_sweep.py [--config config/benchmark.yaml [OVERLAY ...]]
        [--method irn] [--seed 0] [--workdir .] [--exp-times 2 3 4 5 8]
        [--bg-thresholds 0.15 0.2 0.25 0.3 0.35 0.4] [--oracle] [--images N]

Prints mask mIoU for every (make_sem_seg.exp_times, bg_threshold) pair, from the run's
stride-4 CAMs (cam/all) and its trained edge network (irn_model.pt), the edge map computed
once per image as make_sem_seg does; --oracle adds the same table on stage_ladder's
ground-truth edge map. The row of the run's own settings reproduces its mask_metrics.json.
Method settings are chosen here on train, never on val.
"""


import numpy as np
import torch
from stage_ladder import open_run, oracle_edge, run_parser

from csd.data.voc import load_image, load_label_png
from csd.irn.edge_net import load_irn
from csd.irn.make_sem_seg import edge_map
from csd.irn.random_walk import propagate, sem_seg_from_rw
from csd.results.metrics import N_LABELS, confusion_matrix, scores
from csd.runtime.store import load_cam_pack


def main():
    parser = run_parser(__doc__)
    parser.add_argument("--exp-times", type=int, nargs="+", default=[2, 3, 4, 5, 8])
    parser.add_argument("--bg-thresholds", type=float, nargs="+",
                        default=[0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--images", type=int, default=None, help="the first N train ids")
    args = parser.parse_args()
    config, run, voc_root, ids = open_run(args)
    ids = ids[:args.images]
    walk = config["make_sem_seg"]
    pad_to = config["train_irn"]["crop"] if walk["pad_to_crop"] else None
    model = load_irn(run / "irn_model.pt", torch.device("cpu"))
    sources = ("trained", "oracle") if args.oracle else ("trained",)
    confusion = {key: np.zeros((N_LABELS, N_LABELS), np.int64)
                 for key in np.ndindex(len(sources), len(args.exp_times), len(args.bg_thresholds))}

    for image_id in ids:
        gt = load_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
        pack = load_cam_pack([run / "cam/all"], image_id, fields=("keys", "cam"))
        cams = torch.as_tensor(np.asarray(pack["cam"], np.float32))
        edges = [edge_map(model, load_image(voc_root / "JPEGImages" / f"{image_id}.jpg"),
                          "cpu", pad_to)]
        if args.oracle:
            edges.append(oracle_edge(gt)[:cams.shape[1], :cams.shape[2]])
        for s, edge in enumerate(edges):
            for e, exp_times in enumerate(args.exp_times):
                rw = propagate(cams, edge, walk["radius"], walk["beta"], exp_times)
                for b, bg in enumerate(args.bg_thresholds):
                    mask = sem_seg_from_rw(rw, pack["keys"], gt.shape, bg)
                    confusion[s, e, b] += confusion_matrix(gt, mask)

    print(f"walk sweep: {args.method} seed {args.seed}, {len(ids)} train images ({run}); "
          f"radius {walk['radius']}, beta {walk['beta']}; mask mIoU")
    for s, source in enumerate(sources):
        print(f"\n{source} edge map\n")
        print("| exp_times \\ bg_threshold | "
              + " | ".join(f"{bg:.2f}" for bg in args.bg_thresholds) + " |")
        print("|---" * (len(args.bg_thresholds) + 1) + "|")
        for e, exp_times in enumerate(args.exp_times):
            print(f"| {exp_times} | " + " | ".join(
                f"{scores(confusion[s, e, b])['miou']:.2f}"
                for b in range(len(args.bg_thresholds))) + " |")


if __name__ == "__main__":
    main()

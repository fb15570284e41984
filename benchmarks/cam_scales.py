"""make_cam's scales on one run's train split (which has ground truth), with their cost:

    python benchmarks/cam_scales.py [--config config/benchmark.yaml [OVERLAY ...]]
        [--method irn] [--seed 0] [--workdir .] [--scales 1.0 1.5 2.0] [--images N]

Runs the run's trained classifier (cam_model.pt, of the method's kind: a CAMNet or an
MCTformer, loaded with make_cam's settings for that kind) once per image and scale (with
flips, as make_cam), then prints, for every subset of the scales, the seed mIoU at eval_cam's
threshold and at the best of its curve, and the CPU seconds per image that subset costs.
make_cam sums its scales' maps before normalising, so a subset's CAM is the sum of its
scales' maps. Method settings are chosen here on train, never on val.
"""

import itertools
import time

import numpy as np
from stage_ladder import open_run, run_parser, splits_dir

from csd.cam.make_cam import multiscale_cam, normalize_max
from csd.data.voc import load_image, load_label_png, load_labels_for
from csd.methods.registry import CLASSIFIERS, METHODS
from csd.results.metrics import N_LABELS, confusion_matrix, scores, seed_labels
from csd.runtime.runner import load


def main():
    parser = run_parser(__doc__)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--images", type=int, default=None, help="the first N train ids")
    args = parser.parse_args()
    config, run, voc_root, ids = open_run(args)
    ids = ids[:args.images]
    thresholds = sorted({config["eval_cam"]["bg_threshold"],
                         *config["eval_cam"]["curve_thresholds"]})
    kind = METHODS[args.method].classifier
    settings = {**config["make_cam"], **config.get(f"make_cam_{kind}", {})}  # as the workflow
    model = load(CLASSIFIERS[kind].interface).loader(settings)(run / "cam_model.pt", "cpu")
    flip = settings["flip"]
    labels = load_labels_for(splits_dir(config, args.workdir) / "labels.csv", ids)
    subsets = [c for r in range(1, len(args.scales) + 1)
               for c in itertools.combinations(range(len(args.scales)), r)]
    confusion = np.zeros((len(subsets), len(thresholds), N_LABELS, N_LABELS), np.int64)
    seconds = np.zeros(len(args.scales))

    for image_id in ids:
        image = load_image(voc_root / "JPEGImages" / f"{image_id}.jpg")
        gt = load_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
        keys = np.flatnonzero(labels[image_id] > 0).astype(np.int64)
        maps = []
        for i, scale in enumerate(args.scales):
            start = time.process_time()
            maps.append(multiscale_cam(model, image, keys, [scale], flip)[1])
            seconds[i] += time.process_time() - start
        for s, subset in enumerate(subsets):
            cams = normalize_max(sum(maps[i] for i in subset)).numpy()
            for t, threshold in enumerate(thresholds):
                confusion[s, t] += confusion_matrix(gt, seed_labels(cams, keys, threshold))

    default = thresholds.index(config["eval_cam"]["bg_threshold"])
    print(f"cam scales: {args.method} seed {args.seed}, {len(ids)} train images ({run}); "
          f"flip {flip}; seed mIoU")
    print(f"| scales | at {thresholds[default]:.2f} | best (threshold) | CPU s / image |")
    print("|---|---|---|---|")
    for s, subset in enumerate(subsets):
        miou = [scores(confusion[s, t])["miou"] for t in range(len(thresholds))]
        best = int(np.argmax(miou))
        cost = seconds[list(subset)].sum() / len(ids)
        print(f"| {', '.join(str(args.scales[i]) for i in subset)} | {miou[default]:.2f} | "
              f"{miou[best]:.2f} ({thresholds[best]:.2f}) | {cost:.3f} |")


if __name__ == "__main__":
    main()

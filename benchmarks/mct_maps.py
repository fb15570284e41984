"""What MCTformer's seeds are made of, on one run's train split (which has ground truth):

    python benchmarks/mct_maps.py [--config config/benchmark.yaml [OVERLAY ...]]
        [--method mct] [--seed 0] [--workdir .] [--images 60] [--figure maps.png]

For the run's trained MCTformer (cam_model.pt), the seed mIoU over a threshold curve of
each part of its class maps, every one through make_cam's scales, flips and max
normalisation: the class-to-patch attention (last cam_layers blocks), the patch CAM (conv
head), their product (the fused CAM) and each refined by the patch-to-patch attention (the
seeds are `fused + refine` with make_cam_mct's default settings). Then where each map puts
its mass: the share of a class map's sum that lies on that class's object, against the
share of the image the object covers (a map blind to the object scores the latter). With
--figure, the first images' maps are drawn beside the image and its ground truth.
"""

import numpy as np
import torch.nn.functional as F
from stage_ladder import open_run, run_parser, splits_dir

from csd.cam.make_cam import multiscale_cam, normalize_max
from csd.data.voc import IGNORE, load_image, load_label_png, load_labels_for
from csd.methods.mct.train_mct import load_mct
from csd.results.metrics import N_LABELS, confusion_matrix, scores, seed_labels

THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50)


def parts(model):
    """{name: tokens -> [B, 20, h, w]} for each part of the class maps."""
    def patch_cam(t):
        return F.relu(model.patch_cam(t, model.head.weight, model.head.bias))

    return {
        "attention": model.class_attention,
        "patch CAM": patch_cam,
        "fused": model.cam_from_features,
        "attention + refine": lambda t: model.refined(t, model.class_attention(t)),
        "patch CAM + refine": lambda t: model.refined(t, patch_cam(t)),
        "fused + refine": lambda t: model.refined(t, model.cam_from_features(t)),
    }


class Part:
    """A model whose cam() is one part of the MCTformer's maps (for multiscale_cam)."""

    def __init__(self, model, fn):
        self.model, self.fn = model, fn

    def cam(self, x):
        return self.fn(self.model.features(x))


def main():
    parser = run_parser(__doc__)
    parser.set_defaults(method="mct")
    parser.add_argument("--images", type=int, default=60, help="the first N train ids")
    parser.add_argument("--figure", default=None, help="a PNG of the first images' maps")
    args = parser.parse_args()
    config, run, voc_root, ids = open_run(args)
    ids = ids[:args.images]
    settings = {**config["make_cam"], **config.get("make_cam_mct", {})}
    model = load_mct(run / "cam_model.pt", cam_layers=settings["cam_layers"])
    labels = load_labels_for(splits_dir(config, args.workdir) / "labels.csv", ids)
    variants = parts(model)
    confusion = {k: np.zeros((len(THRESHOLDS), N_LABELS, N_LABELS), np.int64) for k in variants}
    on_object = {k: [] for k in variants}
    covered = []
    drawn = []
    for n, image_id in enumerate(ids):
        image = load_image(voc_root / "JPEGImages" / f"{image_id}.jpg")
        gt = load_label_png(voc_root / "SegmentationClass" / f"{image_id}.png")
        keys = np.flatnonzero(labels[image_id] > 0).astype(np.int64)
        known = gt != IGNORE
        maps = {}
        for name, fn in variants.items():
            high_res = normalize_max(multiscale_cam(Part(model, fn), image, keys,
                                                    settings["scales"], settings["flip"])[1])
            maps[name] = high_res = high_res.numpy()
            for t, threshold in enumerate(THRESHOLDS):
                confusion[name][t] += confusion_matrix(gt, seed_labels(high_res, keys,
                                                                       threshold))
            for k, cls in enumerate(keys):
                total = high_res[k][known].sum()
                if total > 0:
                    on_object[name].append(high_res[k][known & (gt == cls + 1)].sum() / total)
        covered += [(known & (gt == cls + 1)).sum() / known.sum() for cls in keys]
        if n < 4:
            drawn.append((image, gt, keys, maps))

    print(f"mct maps: {args.method} seed {args.seed}, {len(ids)} train images ({run}); "
          f"scales {settings['scales']}, cam_layers {settings['cam_layers']}")
    print("| map | " + " | ".join(f"{t:.2f}" for t in THRESHOLDS) + " | mass on object |")
    print("|---|" + "---|" * (len(THRESHOLDS) + 1))
    for name in variants:
        miou = [scores(confusion[name][t])["miou"] for t in range(len(THRESHOLDS))]
        print(f"| {name} | " + " | ".join(f"{m:.1f}" for m in miou) +
              f" | {np.mean(on_object[name]):.2f} |")
    print(f"| (object's share of the image) | | | | | | | | {np.mean(covered):.2f} |")
    if args.figure:
        draw(drawn, list(variants), args.figure)


def draw(drawn, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from csd.data.voc import palette

    colours = np.asarray(palette(), np.uint8).reshape(-1, 3)
    fig, axes = plt.subplots(len(drawn), 2 + len(names),
                             figsize=(2 * (2 + len(names)), 2 * len(drawn)), squeeze=False)
    for row, (image, gt, keys, maps) in zip(axes, drawn):
        row[0].imshow(image)
        row[1].imshow(colours[gt])
        for ax, name in zip(row[2:], names):
            ax.imshow(maps[name][0], vmin=0, vmax=1, cmap="jet")
        for ax in row:
            ax.axis("off")
    for ax, title in zip(axes[0], ["image", "ground truth", *names]):
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()

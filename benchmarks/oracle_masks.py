"""Ground-truth round-0 masks for the toyvoc benchmark: the generator's own label maps for
every train_aug image (SBD-part images included, whose masks the dataset does not ship), in
the format of a run's `mask/all`, so CSD or CDA can be trained on them as an oracle.

    python benchmarks/oracle_masks.py OUT_DIR [--config config/benchmark.yaml]

Renders each image again from its plan (the generator is deterministic), so the label maps
are exactly those of the JPEGs the classifiers see; the void band is kept as 255.
"""

import argparse
from pathlib import Path

from csd.data.voc import palette, read_ids
from csd.runtime.config import check_config_files
from csd.runtime.io import save_png
from csd.toyvoc.render import render_image
from csd.toyvoc.world import check_settings, plan_image


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--config", default="config/benchmark.yaml")
    args = parser.parse_args()
    config = check_config_files([Path(args.config)])
    settings = config["dataset"]["toyvoc"]
    check_settings(settings)
    ids = read_ids(Path(config["data_dir"]) / "splits" / "toyvoc" / "train_aug.txt")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pal = palette()
    for iid in ids:
        index = int(iid.split("_")[1])
        _, labels, _, _ = render_image(settings, plan_image(settings, index))
        save_png(out / f"{iid}.png", labels, pal)
    print(f"{len(ids)} ground-truth masks in {out}")


if __name__ == "__main__":
    main()

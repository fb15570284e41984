from pathlib import Path

from csd.runner import job
from csd.splits import build_splits

with job(snakemake):
    build_splits(snakemake.params.voc_root, snakemake.params.sbd_root,
                 Path(snakemake.output.stats).parent,
                 dict(snakemake.params.settings, workers=snakemake.threads))

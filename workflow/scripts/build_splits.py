from pathlib import Path

from csd.data.splits import build_splits
from csd.runtime.runner import job

with job(snakemake):
    build_splits(snakemake.params.voc_root, snakemake.params.sbd_root,
                 Path(snakemake.output.stats).parent,
                 dict(snakemake.params.settings, workers=snakemake.threads))

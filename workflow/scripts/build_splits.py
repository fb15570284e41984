import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.runner import log_to
from csd.splits import build_splits

with log_to(snakemake.log[0]):
    build_splits(snakemake.params.voc_root, snakemake.params.sbd_root,
                 Path(snakemake.output.stats).parent, snakemake.params.settings)

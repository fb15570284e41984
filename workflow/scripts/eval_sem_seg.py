import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.metrics import eval_masks
from csd.runner import job
from csd.voc import read_ids

with job(snakemake):
    eval_masks(snakemake.params.voc_root, read_ids(snakemake.input.ids, snakemake.params.allow_empty), [snakemake.input.masks],
               snakemake.output[0], snakemake.params.settings)

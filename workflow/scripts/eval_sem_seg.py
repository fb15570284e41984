from csd.data.voc import read_ids
from csd.results.metrics import eval_masks
from csd.runtime.runner import job

with job(snakemake):
    ids = read_ids(snakemake.input.ids, snakemake.params.allow_empty)
    eval_masks(snakemake.params.voc_root, ids, [snakemake.input.masks],
               snakemake.output[0], snakemake.params.settings)

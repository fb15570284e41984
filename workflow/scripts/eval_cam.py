from csd.metrics import eval_seeds
from csd.runner import job
from csd.voc import read_ids

with job(snakemake):
    eval_seeds(snakemake.params.voc_root, read_ids(snakemake.input.ids), [snakemake.input.cams],
               snakemake.output[0], snakemake.params.settings)

from csd.data.voc import read_ids
from csd.results.metrics import eval_seeds
from csd.runtime.runner import job

with job(snakemake):
    eval_seeds(snakemake.params.voc_root, read_ids(snakemake.input.ids), [snakemake.input.cams],
               snakemake.output[0], snakemake.params.settings)

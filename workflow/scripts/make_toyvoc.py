from csd.runner import job
from csd.toyvoc import generate

with job(snakemake):
    generate(snakemake.output[0], snakemake.params.settings)

from csd.runtime.runner import job
from csd.toyvoc.generate import generate

with job(snakemake):
    generate(snakemake.output[0], snakemake.params.settings)

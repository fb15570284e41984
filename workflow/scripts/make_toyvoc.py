import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.runner import job
from csd.toyvoc import generate

with job(snakemake):
    generate(snakemake.output[0], snakemake.params.settings)

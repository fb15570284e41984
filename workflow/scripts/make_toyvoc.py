import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.runner import log_to
from csd.toyvoc import generate

with log_to(snakemake.log[0]):
    generate(snakemake.output[0], snakemake.params.settings)

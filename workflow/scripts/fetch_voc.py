import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.download import fetch_voc
from csd.runner import job

with job(snakemake):
    fetch_voc(snakemake.output[0], snakemake.params.settings)

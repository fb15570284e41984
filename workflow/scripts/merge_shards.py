import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.runner import job
from csd.store import merge_shards

with job(snakemake):
    merge_shards(snakemake.input.shards, snakemake.output[0])

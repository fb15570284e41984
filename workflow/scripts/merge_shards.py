from csd.runtime.runner import job
from csd.runtime.store import merge_shards

with job(snakemake):
    merge_shards(snakemake.input.shards, snakemake.output[0])

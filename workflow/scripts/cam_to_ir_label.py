from csd.io import resumable_outputs
from csd.ir_label import make_ir_labels
from csd.runner import job, shard
from csd.voc import read_ids

with job(snakemake), resumable_outputs(snakemake) as (out,):
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_ir_labels(snakemake.params.voc_root, ids, [snakemake.input.cams], out,
                   snakemake.params.settings)

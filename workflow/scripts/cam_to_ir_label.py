from csd.data.voc import read_ids
from csd.irn.ir_label import make_ir_labels
from csd.runtime.io import resumable_outputs
from csd.runtime.runner import job, shard

with job(snakemake), resumable_outputs(snakemake) as (out,):
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_ir_labels(snakemake.params.voc_root, ids, [snakemake.input.cams], out,
                   snakemake.params.settings)

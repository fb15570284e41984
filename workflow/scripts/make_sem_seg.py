from csd.device import claim_device
from csd.io import resumable_outputs
from csd.make_sem_seg import make_sem_seg
from csd.runner import job, shard
from csd.voc import read_ids

with job(snakemake), resumable_outputs(snakemake) as (out,):
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_sem_seg(snakemake.params.voc_root, ids, [snakemake.input.cams], snakemake.input.model,
                 out, snakemake.params.settings,
                 device=claim_device(snakemake.params.lock_dir),
                 precision=snakemake.params.precision)

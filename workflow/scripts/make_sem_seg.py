from csd.data.voc import read_ids
from csd.irn.make_sem_seg import make_sem_seg
from csd.runtime.device import claim_device
from csd.runtime.io import resumable_outputs
from csd.runtime.runner import job, shard

with job(snakemake), resumable_outputs(snakemake) as (out,):
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_sem_seg(snakemake.params.voc_root, ids, [snakemake.input.cams], snakemake.input.model,
                 out, snakemake.params.settings,
                 device=claim_device(snakemake.params.lock_dir),
                 precision=snakemake.params.precision)

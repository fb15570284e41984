import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.device import claim_device
from csd.make_sem_seg import make_sem_seg
from csd.runner import job, shard
from csd.voc import read_ids

with job(snakemake):
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_sem_seg(snakemake.params.voc_root, ids, [snakemake.input.cams], snakemake.input.model,
                 snakemake.output[0], snakemake.params.settings,
                 device=claim_device(snakemake.params.lock_dir))

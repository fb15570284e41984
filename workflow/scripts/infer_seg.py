from csd.device import claim_device
from csd.infer_seg import infer_deeplab
from csd.io import resumable_outputs
from csd.runner import job, shard
from csd.voc import read_ids

with job(snakemake), resumable_outputs(snakemake) as (raw, crf):
    ids = shard(read_ids(snakemake.input.ids, snakemake.params.allow_empty),
                *snakemake.params.shard)
    infer_deeplab(snakemake.params.voc_root, ids, snakemake.input.model, raw, crf,
                  snakemake.params.settings,
                  device=claim_device(snakemake.params.lock_dir),
                  precision=snakemake.params.precision)

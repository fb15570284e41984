from csd.data.voc import read_ids
from csd.runtime.device import claim_device
from csd.runtime.io import resumable_outputs
from csd.runtime.runner import job, shard
from csd.seg.infer_seg import infer_deeplab

with job(snakemake), resumable_outputs(snakemake) as (raw, crf):
    ids = shard(read_ids(snakemake.input.ids, snakemake.params.allow_empty),
                *snakemake.params.shard)
    infer_deeplab(snakemake.params.voc_root, ids, snakemake.input.model, raw, crf,
                  snakemake.params.settings,
                  device=claim_device(snakemake.params.lock_dir),
                  precision=snakemake.params.precision)

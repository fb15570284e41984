from csd.data.voc import read_ids
from csd.runtime.device import claim_device
from csd.runtime.runner import job
from csd.seg.train_seg import train_deeplab

with job(snakemake):
    train_deeplab(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.masks,
                  snakemake.output.model, snakemake.output.history, snakemake.params.settings,
                  device=claim_device(snakemake.params.lock_dir),
                  precision=snakemake.params.precision)

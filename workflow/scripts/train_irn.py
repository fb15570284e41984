from csd.data.voc import read_ids
from csd.irn.train_irn import train_irn
from csd.runtime.device import claim_device
from csd.runtime.runner import job

with job(snakemake):
    train_irn(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.ir_labels,
              snakemake.output.model, snakemake.output.history, snakemake.params.settings,
              device=claim_device(snakemake.params.lock_dir),
              precision=snakemake.params.precision)

from csd.device import claim_device
from csd.runner import job
from csd.train_irn import train_irn
from csd.voc import read_ids

with job(snakemake):
    train_irn(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.ir_labels,
              snakemake.output.model, snakemake.output.history, snakemake.params.settings,
              device=claim_device(snakemake.params.lock_dir),
              precision=snakemake.params.precision)

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.device import claim_device
from csd.runner import job, optional_input
from csd.train_irn import train_irn
from csd.voc import read_ids

with job(snakemake):
    train_irn(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.ir_labels,
              snakemake.output.model, snakemake.output.history, snakemake.params.settings,
              cam_model=optional_input(snakemake.input.cam_model),
              device=claim_device(snakemake.params.lock_dir),
              precision=snakemake.params.precision)

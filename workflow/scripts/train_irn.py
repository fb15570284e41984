import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.device import claim_device
from csd.runner import job
from csd.train_irn import train_irn
from csd.voc import read_ids

with job(snakemake):
    # no cam_model input where IRN's backbone does not come from the classifier (MCTformer)
    cam_model = snakemake.input.cam_model[0] if len(snakemake.input.cam_model) else None
    train_irn(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.ir_labels,
              snakemake.output.model, snakemake.output.history, snakemake.params.settings,
              cam_model=cam_model, device=claim_device(snakemake.params.lock_dir))

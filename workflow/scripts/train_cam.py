import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.copy_paste import train_cam_cda
from csd.decoupling import train_cam_csd
from csd.device import claim_device
from csd.runner import job
from csd.train_cam import train_cam
from csd.voc import read_ids

args = (snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.labels)
outputs = (snakemake.output.model, snakemake.output.history, snakemake.params.settings)
with job(snakemake):
    device = claim_device(snakemake.params.lock_dir)
    regime = snakemake.params.regime
    if regime is None:
        train_cam(*args, *outputs, device=device)
    else:  # CSD / CDA: round 1 on the base method's round-0 pseudo masks
        trainer = {"csd": train_cam_csd, "cda": train_cam_cda}[regime]
        trainer(*args, snakemake.input.round0[0], *outputs, device=device)

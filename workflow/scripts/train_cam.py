import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.copy_paste import train_cam_cda
from csd.decoupling import train_cam_csd
from csd.device import claim_device
from csd.runner import job
from csd.train_cam import CAM_CLASSIFIER, train_cam
from csd.train_mct import MCT_CLASSIFIER, train_mct
from csd.voc import read_ids

args = (snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.labels)
outputs = (snakemake.output.model, snakemake.output.history, snakemake.params.settings)
with job(snakemake):
    device = claim_device(snakemake.params.lock_dir)
    regime = snakemake.params.regime
    mct = snakemake.params.classifier == "mct"
    if regime is None:
        (train_mct if mct else train_cam)(*args, *outputs, device=device)
    elif regime == "csd":  # round 1 on the base method's round-0 pseudo masks
        train_cam_csd(*args, snakemake.input.round0[0], *outputs, device=device,
                      classifier=MCT_CLASSIFIER if mct else CAM_CLASSIFIER)
    else:  # CDA (ResNet classifier only)
        train_cam_cda(*args, snakemake.input.round0[0], *outputs, device=device)

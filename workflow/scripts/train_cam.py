from csd.device import claim_device
from csd.runner import job
from csd.voc import read_ids

# Each branch imports its own trainer: the rule's code identity (classifier_code) counts
# only the method's modules.
args = (snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.input.labels)
outputs = (snakemake.output.model, snakemake.output.history, snakemake.params.settings)
precision = snakemake.params.precision
with job(snakemake):
    device = claim_device(snakemake.params.lock_dir)
    regime = snakemake.params.regime
    mct = snakemake.params.classifier == "mct"
    if regime is None and mct:
        from csd.train_mct import train_mct

        train_mct(*args, *outputs, device=device, precision=precision)
    elif regime is None:
        from csd.train_cam import train_cam

        train_cam(*args, *outputs, device=device, precision=precision)
    elif regime == "csd":  # round 1 on the base method's round-0 pseudo masks
        from csd.decoupling import train_cam_csd

        if mct:
            from csd.train_mct import MCT_CLASSIFIER as classifier
        else:
            from csd.train_cam import CAM_CLASSIFIER as classifier
        train_cam_csd(*args, snakemake.input.round0[0], *outputs, device=device,
                      classifier=classifier, precision=precision)
    else:  # CDA (ResNet classifier only)
        from csd.copy_paste import train_cam_cda

        train_cam_cda(*args, snakemake.input.round0[0], *outputs, device=device,
                      precision=precision)

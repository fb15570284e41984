from csd.device import claim_device
from csd.pretrain import pretrain_backbone
from csd.runner import job

with job(snakemake):
    pretrain_backbone(snakemake.output.backbone, snakemake.output.model,
                      snakemake.output.history, snakemake.params.settings,
                      benchmark_seed=snakemake.params.benchmark_seed,
                      device=claim_device(snakemake.params.lock_dir),
                      precision=snakemake.params.precision)

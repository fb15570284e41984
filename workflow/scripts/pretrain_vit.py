from csd.runtime.device import claim_device
from csd.runtime.runner import job
from csd.toyvoc.pretrain import pretrain_vit

with job(snakemake):
    pretrain_vit(snakemake.output.vit, snakemake.output.model, snakemake.output.history,
                 snakemake.params.settings, benchmark_seed=snakemake.params.benchmark_seed,
                 device=claim_device(snakemake.params.lock_dir),
                 precision=snakemake.params.precision)

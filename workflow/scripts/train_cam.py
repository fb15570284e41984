from csd.data.voc import read_ids
from csd.runtime.device import claim_device
from csd.runtime.runner import job, load

# The method's trainer and classifier come from the registry (csd.methods.registry) as
# params; the rule's code identity counts their modules (classifier_code in common.smk).
params = snakemake.params
round0 = list(snakemake.input.round0)  # the base method's pseudo masks (round-1 methods)
with job(snakemake):
    train = load(params.trainer)
    extra = {"classifier": load(params.classifier)} if round0 else {}
    train(params.voc_root, read_ids(snakemake.input.ids), snakemake.input.labels, *round0,
          snakemake.output.model, snakemake.output.history, params.settings,
          device=claim_device(params.lock_dir), precision=params.precision, **extra)

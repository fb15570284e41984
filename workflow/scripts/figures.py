from csd.results.figures import per_class_bars, training_curves
from csd.runtime.runner import job

with job(snakemake):
    per_class_bars(snakemake.input.per_class, snakemake.output.per_class)
    training_curves(snakemake.params.histories, snakemake.output.curves)

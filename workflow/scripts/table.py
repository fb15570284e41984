import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../..")
from csd.runner import log_to
from csd.table import write_table

with log_to(snakemake.log[0]):
    literature = snakemake.input.literature[0] if snakemake.input.literature else None
    write_table(snakemake.params.runs, literature, dict(snakemake.output))

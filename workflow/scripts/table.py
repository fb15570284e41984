from pathlib import Path

from csd.results.table import write_table
from csd.runtime.runner import log_to

with log_to(snakemake.log[0]):
    published = snakemake.params.literature  # a relative path is in the repository
    literature = published and Path(snakemake.scriptdir, "../..", published["path"])
    write_table(snakemake.params.runs, literature, dict(snakemake.output))

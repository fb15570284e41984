from pathlib import Path

from csd.data.download import fetch_voc
from csd.runtime.io import save_json
from csd.runtime.runner import job

# The config, not params: only the archives' identity (params.archives) may rerun this rule;
# where they come from and where they are kept may change freely.
settings = snakemake.config["dataset"]["voc"]
record = Path(snakemake.output.record)
with job(snakemake):
    fetch_voc(record.parent, settings)
    save_json(record, snakemake.params.archives)  # last: the tree is complete

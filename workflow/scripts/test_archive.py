from csd.data.voc import pack_test_archive, read_ids
from csd.runtime.runner import job

with job(snakemake):
    ids = read_ids(snakemake.input.ids, snakemake.params.allow_empty)
    pack_test_archive(snakemake.input.preds, ids, snakemake.output[0])

from csd.voc import pack_test_archive
from csd.runner import job
from csd.voc import read_ids

with job(snakemake):
    ids = read_ids(snakemake.input.ids, snakemake.params.allow_empty)
    pack_test_archive(snakemake.input.preds, ids, snakemake.output[0])

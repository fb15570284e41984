from csd.data.voc import read_ids
from csd.results.figures import overlays
from csd.runtime.runner import job

with job(snakemake):
    ids = read_ids(snakemake.input.ids)[: snakemake.params.n_images]
    overlays(snakemake.params.voc_root, ids, [snakemake.input.cams], [snakemake.input.masks],
             snakemake.input.seg_model, snakemake.output[0], snakemake.params.settings)

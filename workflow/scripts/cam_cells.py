from csd.cam_cells import cam_cells
from csd.runner import job
from csd.voc import read_ids

with job(snakemake):
    cam_cells(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.params.settings,
              snakemake.output[0])

from csd.cam.cam_cells import cam_cells
from csd.data.voc import read_ids
from csd.runtime.runner import job

with job(snakemake):
    cam_cells(snakemake.params.voc_root, read_ids(snakemake.input.ids), snakemake.params.settings,
              snakemake.output[0])

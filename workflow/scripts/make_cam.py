from functools import partial

from csd.device import claim_device
from csd.io import resumable_outputs
from csd.make_cam import make_cams
from csd.runner import job, shard
from csd.train_cam import load_cam_net
from csd.voc import read_ids

settings = snakemake.params.settings
with job(snakemake), resumable_outputs(snakemake) as (out,):
    if snakemake.params.classifier == "mct":
        from csd.train_mct import load_mct

        load = partial(load_mct, cam_layers=settings["cam_layers"], refine=settings["refine"])
    else:
        load = load_cam_net
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_cams(snakemake.params.voc_root, ids, snakemake.input.labels, snakemake.input.model,
              out, settings, device=claim_device(snakemake.params.lock_dir), load=load,
              precision=snakemake.params.precision)

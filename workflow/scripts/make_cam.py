from csd.cam.make_cam import make_cams
from csd.data.voc import read_ids
from csd.runtime.device import claim_device
from csd.runtime.io import resumable_outputs
from csd.runtime.runner import job, load, shard

settings = snakemake.params.settings
with job(snakemake), resumable_outputs(snakemake) as (out,):
    classifier = load(snakemake.params.classifier)  # the method's kind (registry)
    ids = shard(read_ids(snakemake.input.ids), *snakemake.params.shard)
    make_cams(snakemake.params.voc_root, ids, snakemake.input.labels, snakemake.input.model,
              out, settings, device=claim_device(snakemake.params.lock_dir),
              load=classifier.loader(settings), precision=snakemake.params.precision)

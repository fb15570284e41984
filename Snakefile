# CSD / IRN weakly-supervised semantic segmentation, from the VOC download to the results.
#   snakemake --cores 8 --resources gpu=2                       (PASCAL VOC, config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml           (built-in synthetic benchmark)
#   snakemake ... masks       every method and seed up to its pseudo masks, without DeepLab
from snakemake.utils import min_version

from csd.runtime.config import load_config_file, validate_config

min_version("9.19")


# The published defaults; --configfile files given on the command line override keys of it.
# Read by csd.runtime.config first: Snakemake's own message for a YAML error names no file or line.
load_config_file(f"{workflow.basedir}/config/config.yaml")


configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


validate_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/irn.smk"
include: "workflow/rules/seg.smk"
include: "workflow/rules/results.smk"


rule all:
    input:
        final_targets(),
    default_target: True


localrules:
    masks,


rule masks:
    input:
        f"{SPLITS}/stats.json",
        f"{RESULTS}/masks_table.csv",

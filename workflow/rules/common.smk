# Paths and helpers shared by every rule file.
from pathlib import Path

REPO = Path(workflow.basedir)
DATA = config["data_dir"]
RESULTS = config["results_dir"]
DATASET = config["dataset"]["name"]
SPLITS = f"{DATA}/splits/{DATASET}"
# One run of the pipeline = one method trained with one seed.
RUN = f"{RESULTS}/{{method}}/seed{{seed}}"
LOGS = "logs"
ENV = "../../envs/csd.yaml"  # relative to workflow/rules/


wildcard_constraints:
    method="|".join(config["methods"]),
    seed=r"\d+",
    shard=r"\d+",


def pkg(*modules):
    """Package modules a stage runs, declared as inputs so that editing them reruns it."""
    return [str(REPO / "csd" / f"{m}.py") for m in modules]


def dataset_dir():
    """The directory a data rule produces, or the user's extracted VOC tree."""
    voc = config["dataset"]["voc"]
    if DATASET == "voc" and voc["voc_root"]:
        return voc["voc_root"]
    return f"{DATA}/{DATASET}"


def voc_root():
    voc = config["dataset"]["voc"]
    if DATASET == "voc" and voc["voc_root"]:
        return voc["voc_root"]
    return f"{DATA}/{DATASET}/VOCdevkit/VOC2012"


def sbd_root():
    voc = config["dataset"]["voc"]
    if DATASET == "voc" and voc["voc_root"]:
        return voc["sbd_root"]
    return f"{DATA}/{DATASET}/benchmark_RELEASE/dataset"


def final_targets():
    return [f"{SPLITS}/stats.json"]

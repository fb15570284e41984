# Paths and helpers shared by every rule file.
import shutil
from pathlib import Path

from csd.runtime.codehash import code_version
from csd.runtime.config import voc_root as csd_voc_root
from csd.data.download import archive_ids, md5sum
from csd.methods.registry import CLASSIFIERS, METHODS

REPO = Path(workflow.basedir)
DATA = config["data_dir"]
RESULTS = config["results_dir"]
DATASET = config["dataset"]["name"]
SPLITS = f"{DATA}/splits/{DATASET}"
# One run of the pipeline = one method trained with one seed.
RUN = f"{RESULTS}/{{method}}/seed{{seed}}"
LOGS = config["logs_dir"]
ENV = "../../envs/csd.yaml"  # relative to workflow/rules/
# Torch jobs claim Snakemake's `gpu` resource only where an NVIDIA driver is installed: on a
# CPU-only machine the claim would run them one at a time even where job_threads leaves
# cores for a second (profiles/slurm sets gpu: 1 for these rules itself).
GPU = 1 if shutil.which("nvidia-smi") else 0


# Methods and classifier kinds: csd/methods/registry.py (each declared once there).


def classifier_of(w):
    return METHODS[w.method].classifier


def for_classifier(section, kind):
    """A config section with the keys of `<section>_<kind>` (if there is one) laid over it."""
    return {**config[section], **config.get(f"{section}_{kind}", {})}


wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",
    shard=r"\d+",


def code_of(script, *modules):
    """A rule's code identity, as a param: the hash of workflow/scripts/<script>.py and of the
    csd modules it runs (those it imports; `modules`, dotted names, that it loads from a
    registry reference; and their csd imports), comments and docstrings left out
    (csd/runtime/codehash.py). Not file inputs: those would rerun every stage on a comment
    edit or on new file dates."""
    return code_version(REPO / "csd", modules, [REPO / "workflow" / "scripts" / f"{script}.py"])


def dataset_input():
    """What build_splits reads: the download's record (fetch_voc), the synthetic tree, or
    the user's extracted VOC tree."""
    voc = config["dataset"]["voc"]
    if DATASET == "voc" and voc["voc_root"]:
        return voc["voc_root"]
    if DATASET == "voc":
        return f"{DATA}/voc/fetched.json"
    return f"{DATA}/{DATASET}"


def voc_root():
    return csd_voc_root(config)


def sbd_root():
    voc = config["dataset"]["voc"]
    if DATASET == "voc" and voc["voc_root"]:
        return voc["sbd_root"]
    return f"{DATA}/{DATASET}/benchmark_RELEASE/dataset"


def has_test_split():
    """Whether the dataset has a test split (toyvoc: n_test > 0; VOC: test_split fetched)."""
    if DATASET == "toyvoc":
        return config["dataset"]["toyvoc"]["n_test"] > 0
    return config["dataset"]["voc"]["test_split"]


def may_be_empty(split):
    """Whether the configuration allows a split to list no images (dataset.allow_empty)."""
    return split in config["dataset"]["allow_empty"]


def final_targets():
    overlays = [f"{RESULTS}/figures/overlays_{method}_seed{config['seeds'][0]}.png"
                for method in config["methods"]]
    return [f"{SPLITS}/stats.json", f"{RESULTS}/cam_cells.json", f"{RESULTS}/table.csv",
            f"{RESULTS}/figures/per_class_iou.png", *overlays]


# Training stages with a per-epoch history (loss, lr): the report's training curves.
HISTORIES = {"train_cam": "cam_history.json", "train_irn": "irn_history.json",
             "train_seg": "seg_history.json"}


def histories():
    return [
        {"method": method, "seed": seed, "stage": stage,
         "path": f"{RESULTS}/{method}/seed{seed}/{name}"}
        for stage, name in HISTORIES.items()
        for method in config["methods"]
        for seed in config["seeds"]
    ]


def classifier_settings(w):
    """The classifier's training settings for a method (train_cam or train_mct): the run's
    seed, plus the method's own section (so that a CSD setting reruns only the CSD runs)."""
    kind = classifier_of(w)
    settings = dict(config[CLASSIFIERS[kind].settings], seed=int(w.seed))
    regime = METHODS[w.method].regime
    if regime:
        settings[regime] = for_classifier(regime, kind)
    return settings


def classifier_code(w):
    """train_cam's code: the modules that train the method's classifier (its own, and its
    classifier kind's), not those of the other methods."""
    return code_of("train_cam", METHODS[w.method].module, CLASSIFIERS[classifier_of(w)].module)


def resnet_stage_settings(stage):
    """A params function: the settings of a ResNet stage after the CAMs (train_irn,
    train_seg) with the run's seed."""
    return lambda w: dict(config[stage], seed=int(w.seed))


# The procedural pretraining's backbone file (workflow/rules/pretrain.smk): a stage uses it
# by naming this path as its `backbone.pretrained`.
PRETRAINED = f"{DATA}/pretrain/resnet{config['pretrain_backbone']['depth']}.pth"
_VIT = config["pretrain_vit"]["model"]
# pretrain_vit's DeiT-format file, for train_mct.model.pretrained.
PRETRAINED_VIT = (f"{DATA}/pretrain/vit_e{_VIT['embed_dim']}_d{_VIT['depth']}"
                  f"_p{_VIT['patch_size']}.pth")
# toyvoc keys that only size the benchmark's splits: not part of the pretraining world.
SPLIT_SIZES = ("n_train", "n_val", "n_test", "n_sbd_train", "n_sbd_val", "sbd_overlap")


def pretrain_settings(stage):
    """A pretraining stage's settings; its world is the benchmark's toyvoc world (the same
    context ties) with the stage's `world` laid over it (its own generator seed)."""
    settings = {k: v for k, v in config[stage].items() if k not in ("threads", "precision")}
    world = {k: v for k, v in config["dataset"]["toyvoc"].items() if k not in SPLIT_SIZES}
    settings["world"] = {**world, **settings["world"]}
    return settings


def weights_file(pretrained):
    """[path] when a `pretrained` setting names a file (PRETRAINED or the user's own), so
    that Snakemake makes or checks it first and reruns the stage when it changes."""
    return [pretrained] if pretrained not in (None, "none", "imagenet") else []


def pretrained_input(stage):
    """An input function: the weights file a ResNet stage after the CAMs starts from."""
    def inputs(w):
        return weights_file(resnet_stage_settings(stage)(w)["backbone"]["pretrained"])

    return inputs


def classifier_pretrained(w):
    """An input function: the weights file a method's classifier starts from."""
    section = config[CLASSIFIERS[classifier_of(w)].settings]
    return weights_file(section.get("backbone", section.get("model"))["pretrained"])


def round0_masks(w):
    """The base method's train_aug pseudo masks that CSD and CDA train on (none for irn)."""
    base = METHODS[w.method].base
    return [f"{RESULTS}/{base}/seed{w.seed}/mask/all"] if base else []


# Job order when cores are short (Snakemake starts the ready jobs of highest priority first):
# the longest chain first. Round 1 (CSD, CDA) waits on its base method's pseudo masks, so a
# base run's stages up to its masks go first (2), then every other run's (1), then DeepLab
# and its inference (0), which nothing but the table waits on. No output changes.
BASES = {METHODS[m].base for m in config["methods"]} - {None}
MASK_KINDS = ("cam", "ir_label", "mask")


def run_priority(mask_stage):
    """The priority of a run's jobs: `mask_stage`, whether the rule is one of the stages
    from the classifier to the pseudo masks (a function of the wildcards for merge_shards)."""

    def priority(w):
        if not (mask_stage(w) if callable(mask_stage) else mask_stage):
            return 0
        return 2 if w.method in BASES else 1

    return priority


# Per-image stages run as `shards` jobs each (several GPUs or SLURM nodes share a stage);
# merge_shards joins their outputs into one directory that later stages read.
SHARDED = {"cam": "make_cam", "ir_label": "cam_to_ir_label", "mask": "make_sem_seg",
           "pred_val": "infer_seg", "pred_val_crf": "infer_seg", "pred_test": "infer_seg",
           "pred_test_crf": "infer_seg"}


def shard_dirs(kind):
    def inputs(w):
        count = config[SHARDED[kind]]["shards"]
        return [f"{RESULTS}/{w.method}/seed{w.seed}/{kind}/shards/{i}" for i in range(count)]

    return inputs


def shard_of(stage):
    return lambda w: (int(w.shard), config[stage]["shards"])


def threads_setting(stage=None):
    """The configured torch threads of a stage's jobs: its own `threads` where it has one,
    else `job_threads` (None: all of --cores). A param of those rules: outputs depend on
    the thread count, so changing the setting reruns them (--cores alone never does)."""
    own = config.get(stage, {}).get("threads") if stage else None
    return own if own is not None else config["job_threads"]


def precision_of(stage):
    """A stage's precision setting (csd.runtime.precision): its own `precision`, else the global
    one. A param of the torch rules, so a new setting reruns what it changes; `auto` is
    resolved by the job on the machine it runs on."""
    own = config[stage].get("precision")
    return own if own is not None else config["precision"]


def job_threads(stage=None):
    """Torch threads of one training or inference job: threads_setting, at most --cores;
    None gives a job all of them (one heavy job at a time)."""
    wanted = threads_setting(stage)
    return workflow.cores if wanted is None else min(wanted, workflow.cores)


def shard_threads(stage):
    """Split a job's threads among a stage's shards, so that they run side by side
    (SLURM runs set their own threads in profiles/slurm)."""
    return max(1, job_threads() // config[stage]["shards"])


# The results tables (workflow/rules/results.smk): `table` for the whole pipeline,
# `masks_table` for the runs up to their pseudo masks (the `masks` target, no DeepLab).
TABLES = {"table": ("seed", "mask", "val", "val_crf"), "masks_table": ("seed", "mask")}


def table_runs(w):
    """One entry per method and seed: its metrics files, classifier benchmark and the
    training histories that record each stage's precision."""
    kinds = TABLES[w.table]
    stages = [stage for stage in HISTORIES if stage != "train_seg" or "val" in kinds]
    return [
        {
            "method": method,
            "seed": seed,
            "metrics": {
                kind: f"{RESULTS}/{method}/seed{seed}/{kind}_metrics.json" for kind in kinds
            },
            "histories": {
                stage: f"{RESULTS}/{method}/seed{seed}/{HISTORIES[stage]}" for stage in stages
            },
            "train_tsv": f"{LOGS}/benchmark/{method}/seed{seed}/train_cam.tsv",
            "test_archive": f"{RESULTS}/{method}/seed{seed}/test_archive.tar.gz"
            if has_test_split() and "val" in kinds
            else None,
        }
        for method in config["methods"]
        for seed in config["seeds"]
    ]


def literature(w):
    """The published-numbers CSV, as a param: its path as configured (a relative one is in
    the repository: the script resolves it, so that a copy of the checkout changes nothing)
    and its md5, which reruns the table when the file changes. Not an input, whose file
    date would rerun the table after a fresh checkout."""
    path = config["table"]["literature"]
    if not path:
        return None
    if not (REPO / path).is_file():
        raise FileNotFoundError(f"table.literature: no file {REPO / path}")
    return {"path": path, "md5": md5sum(REPO / path)}


def table_inputs(w):
    return [
        path
        for run in table_runs(w)
        for path in [*run["metrics"].values(), *run["histories"].values(), run["train_tsv"],
                     run["test_archive"]]
        if path
    ]

# Procedural pretraining: the synthetic benchmark's stand-in for ImageNet weights. Its
# backbone file is used by setting a stage's `backbone.pretrained` to PRETRAINED (see
# pretrained_input in common.smk); one job serves every method and seed of a run.


rule pretrain_backbone:
    output:
        backbone=PRETRAINED,
        model=f"{DATA}/pretrain/pretrain_model.pt",
        history=f"{DATA}/pretrain/pretrain_history.json",
    params:
        code=code_of("pretrain_backbone"),
        threads=threads_setting("pretrain_backbone"),
        settings=pretrain_settings("pretrain_backbone"),
        benchmark_seed=config["dataset"]["toyvoc"]["seed"] if DATASET == "toyvoc" else None,
        precision=precision_of("pretrain_backbone"),
        lock_dir=config["gpu_lock_dir"],
    threads: job_threads("pretrain_backbone")
    resources:
        gpu=GPU,
    log:
        f"{LOGS}/pretrain/pretrain_backbone.log",
    benchmark:
        f"{LOGS}/benchmark/pretrain/pretrain_backbone.tsv"
    conda:
        ENV
    script:
        "../scripts/pretrain_backbone.py"


# The same for MCTformer's ViT: its file is used by setting train_mct.model.pretrained to
# PRETRAINED_VIT (classifier_pretrained in common.smk makes it an input of train_cam).
rule pretrain_vit:
    output:
        vit=PRETRAINED_VIT,
        model=f"{DATA}/pretrain/pretrain_vit_model.pt",
        history=f"{DATA}/pretrain/pretrain_vit_history.json",
    params:
        code=code_of("pretrain_vit"),
        threads=threads_setting("pretrain_vit"),
        settings=pretrain_settings("pretrain_vit"),
        benchmark_seed=config["dataset"]["toyvoc"]["seed"] if DATASET == "toyvoc" else None,
        precision=precision_of("pretrain_vit"),
        lock_dir=config["gpu_lock_dir"],
    threads: job_threads("pretrain_vit")
    resources:
        gpu=GPU,
    log:
        f"{LOGS}/pretrain/pretrain_vit.log",
    benchmark:
        f"{LOGS}/benchmark/pretrain/pretrain_vit.tsv"
    conda:
        ENV
    script:
        "../scripts/pretrain_vit.py"

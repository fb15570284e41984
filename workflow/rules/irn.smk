# IRN (ResNet): classifier -> CAM seeds -> CRF inter-pixel relation labels -> IRN ->
# random-walk pseudo masks, with seed and mask evaluation on the train split.


# Hard-linking shard outputs together takes no compute: never a SLURM job.
localrules:
    merge_shards,


rule train_cam:
    output:
        model=f"{RUN}/cam_model.pt",
        history=f"{RUN}/cam_history.json",
    input:
        ids=f"{SPLITS}/train_aug.txt",
        labels=f"{SPLITS}/labels.csv",
        round0=round0_masks,
        pretrained=classifier_pretrained,
    params:
        code=classifier_code,
        threads=threads_setting(),
        voc_root=voc_root(),
        trainer=lambda w: METHODS[w.method].trainer,
        classifier=lambda w: CLASSIFIERS[classifier_of(w)].interface,
        settings=classifier_settings,
        precision=lambda w: precision_of(CLASSIFIERS[classifier_of(w)].settings),
        lock_dir=config["gpu_lock_dir"],
    threads: job_threads()
    resources:
        gpu=GPU,
    priority: run_priority(True)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/train_cam.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/train_cam.tsv"
    conda:
        ENV
    script:
        "../scripts/train_cam.py"


rule make_cam:
    output:
        temp(directory(f"{RUN}/cam/shards/{{shard}}")),
    input:
        model=f"{RUN}/cam_model.pt",
        ids=f"{SPLITS}/train_aug.txt",
        labels=f"{SPLITS}/labels.csv",
    params:
        code=lambda w: code_of("make_cam", CLASSIFIERS[classifier_of(w)].module),
        threads=threads_setting(),
        voc_root=voc_root(),
        settings=lambda w: for_classifier("make_cam", classifier_of(w)),
        classifier=lambda w: CLASSIFIERS[classifier_of(w)].interface,
        shard=shard_of("make_cam"),
        precision=precision_of("make_cam"),
        lock_dir=config["gpu_lock_dir"],
    threads: shard_threads("make_cam")
    resources:
        gpu=GPU,
    priority: run_priority(True)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/make_cam.{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/make_cam.{{shard}}.tsv"
    conda:
        ENV
    script:
        "../scripts/make_cam.py"


rule merge_shards:
    output:
        directory(f"{RUN}/{{kind}}/all"),
    input:
        shards=lambda w: shard_dirs(w.kind)(w),
    wildcard_constraints:
        kind="|".join(SHARDED),
    params:
        code=code_of("merge_shards"),
    priority: run_priority(lambda w: w.kind in MASK_KINDS)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/merge_{{kind}}.log",
    conda:
        ENV
    script:
        "../scripts/merge_shards.py"


rule eval_cam:
    output:
        f"{RUN}/seed_metrics.json",
    input:
        cams=f"{RUN}/cam/all",
        ids=f"{SPLITS}/train.txt",
    params:
        code=code_of("eval_cam"),
        voc_root=voc_root(),
        settings=config["eval_cam"],
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/eval_cam.log",
    conda:
        ENV
    script:
        "../scripts/eval_cam.py"


rule cam_to_ir_label:
    output:
        temp(directory(f"{RUN}/ir_label/shards/{{shard}}")),
    input:
        cams=f"{RUN}/cam/all",
        ids=f"{SPLITS}/train_aug.txt",
    params:
        code=code_of("cam_to_ir_label"),
        voc_root=voc_root(),
        settings=config["cam_to_ir_label"],
        shard=shard_of("cam_to_ir_label"),
    threads: config["cam_to_ir_label"]["workers"]
    priority: run_priority(True)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/cam_to_ir_label.{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/cam_to_ir_label.{{shard}}.tsv"
    conda:
        ENV
    script:
        "../scripts/cam_to_ir_label.py"


rule train_irn:
    output:
        model=f"{RUN}/irn_model.pt",
        history=f"{RUN}/irn_history.json",
    input:
        ir_labels=f"{RUN}/ir_label/all",
        pretrained=pretrained_input("train_irn"),
        ids=f"{SPLITS}/train_aug.txt",
    params:
        code=code_of("train_irn"),
        threads=threads_setting(),
        voc_root=voc_root(),
        settings=resnet_stage_settings("train_irn"),
        precision=precision_of("train_irn"),
        lock_dir=config["gpu_lock_dir"],
    threads: job_threads()
    resources:
        gpu=GPU,
    priority: run_priority(True)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/train_irn.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/train_irn.tsv"
    conda:
        ENV
    script:
        "../scripts/train_irn.py"


rule make_sem_seg:
    output:
        temp(directory(f"{RUN}/mask/shards/{{shard}}")),
    input:
        cams=f"{RUN}/cam/all",
        model=f"{RUN}/irn_model.pt",
        ids=f"{SPLITS}/train_aug.txt",
    params:
        code=code_of("make_sem_seg"),
        threads=threads_setting(),
        voc_root=voc_root(),
        # the edge network's input is padded to the crop it was trained on
        settings={**config["make_sem_seg"], "crop": config["train_irn"]["crop"]},
        shard=shard_of("make_sem_seg"),
        precision=precision_of("make_sem_seg"),
        lock_dir=config["gpu_lock_dir"],
    threads: shard_threads("make_sem_seg")
    resources:
        gpu=GPU,
    priority: run_priority(True)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/make_sem_seg.{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/make_sem_seg.{{shard}}.tsv"
    conda:
        ENV
    script:
        "../scripts/make_sem_seg.py"


rule eval_sem_seg:
    output:
        f"{RUN}/mask_metrics.json",
    input:
        masks=f"{RUN}/mask/all",
        ids=f"{SPLITS}/train.txt",
    params:
        code=code_of("eval_sem_seg"),
        voc_root=voc_root(),
        settings=config["eval_sem_seg"],
        allow_empty=False,  # train is never empty (build_splits)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/eval_sem_seg.log",
    conda:
        ENV
    script:
        "../scripts/eval_sem_seg.py"

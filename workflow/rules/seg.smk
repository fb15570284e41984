# Segmentation: DeepLab trained on each run's train_aug pseudo masks, multi-scale + CRF
# inference on val (mIoU with and without CRF) and on test (the evaluation-server archive).


# Packing the test predictions into a tar: no SLURM job for that.
localrules:
    test_archive,


rule train_seg:
    output:
        model=f"{RUN}/seg_model.pt",
        history=f"{RUN}/seg_history.json",
    input:
        masks=f"{RUN}/mask/all",
        ids=f"{SPLITS}/train_aug.txt",
        pretrained=pretrained_input("train_seg"),
    params:
        code=code_of("train_seg"),
        threads=threads_setting(),
        voc_root=voc_root(),
        settings=resnet_stage_settings("train_seg"),
        precision=precision_of("train_seg"),
        lock_dir=config["gpu_lock_dir"],
    threads: job_threads()
    resources:
        gpu=GPU,
    priority: run_priority(False)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/train_seg.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/train_seg.tsv"
    conda:
        ENV
    script:
        "../scripts/train_seg.py"


rule infer_seg:
    output:
        raw=temp(directory(f"{RUN}/pred_{{split}}/shards/{{shard}}")),
        crf=temp(directory(f"{RUN}/pred_{{split}}_crf/shards/{{shard}}")),
    input:
        model=f"{RUN}/seg_model.pt",
        ids=f"{SPLITS}/{{split}}.txt",
    params:
        code=code_of("infer_seg"),
        threads=threads_setting(),
        voc_root=voc_root(),
        settings=config["infer_seg"],
        shard=shard_of("infer_seg"),
        precision=precision_of("infer_seg"),
        lock_dir=config["gpu_lock_dir"],
        allow_empty=lambda w: may_be_empty(w.split),
    wildcard_constraints:
        split="val|test",
    threads: shard_threads("infer_seg")
    resources:
        gpu=GPU,
    priority: run_priority(False)
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/infer_seg_{{split}}.{{shard}}.log",
    benchmark:
        f"{LOGS}/benchmark/{{method}}/seed{{seed}}/infer_seg_{{split}}.{{shard}}.tsv"
    conda:
        ENV
    script:
        "../scripts/infer_seg.py"


rule eval_seg:
    output:
        f"{RUN}/{{variant}}_metrics.json",
    input:
        masks=f"{RUN}/pred_{{variant}}/all",
        ids=f"{SPLITS}/val.txt",
    params:
        code=code_of("eval_sem_seg"),
        voc_root=voc_root(),
        settings=config["eval_sem_seg"],
        allow_empty=may_be_empty("val"),
    wildcard_constraints:
        variant="val|val_crf",
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/eval_seg_{{variant}}.log",
    conda:
        ENV
    script:
        "../scripts/eval_sem_seg.py"


rule test_archive:
    output:
        f"{RESULTS}/{{method}}/seed{{seed}}/test_archive.tar.gz",
    input:
        preds=f"{RUN}/pred_test_crf/all",
        ids=f"{SPLITS}/test.txt",
    params:
        code=code_of("test_archive"),
        allow_empty=may_be_empty("test"),
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/test_archive.log",
    conda:
        ENV
    script:
        "../scripts/test_archive.py"

# Data: the real VOC 2012 + SBD download, the synthetic benchmark, and the split lists.


localrules:
    fetch_voc,


rule fetch_voc:
    output:
        directory(f"{DATA}/voc"),
    input:
        code=pkg("download"),
    params:
        settings=config["dataset"]["voc"],
    log:
        f"{LOGS}/data/fetch_voc.log",
    conda:
        ENV
    script:
        "../scripts/fetch_voc.py"


rule make_toyvoc:
    output:
        directory(f"{DATA}/toyvoc"),
    input:
        code=pkg("toyvoc"),
    params:
        settings=config["dataset"]["toyvoc"],
    log:
        f"{LOGS}/data/make_toyvoc.log",
    benchmark:
        f"{LOGS}/benchmark/data/make_toyvoc.tsv"
    conda:
        ENV
    script:
        "../scripts/make_toyvoc.py"


rule build_splits:
    output:
        train_aug=f"{SPLITS}/train_aug.txt",
        train=f"{SPLITS}/train.txt",
        val=f"{SPLITS}/val.txt",
        labels=f"{SPLITS}/labels.csv",
        stats=f"{SPLITS}/stats.json",
        **({"test": f"{SPLITS}/test.txt"} if has_test_split() else {}),
    input:
        data=dataset_dir(),
        code=pkg("splits"),
    params:
        voc_root=voc_root(),
        sbd_root=sbd_root(),
        settings={"expected_counts": config["dataset"]["voc"]["expected_counts"]
                  if DATASET == "voc" else None, "test_split": has_test_split(),
                  "allow_empty": config["dataset"]["allow_empty"]},
    # decoding every image once; within --cores also on SLURM (the test node has 2 CPUs)
    threads: min(4, workflow.cores)
    log:
        f"{LOGS}/data/build_splits.log",
    conda:
        ENV
    script:
        "../scripts/build_splits.py"

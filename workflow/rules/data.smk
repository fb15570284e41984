# Data: the real VOC 2012 + SBD download, the synthetic benchmark, and the split lists.


localrules:
    fetch_voc,
    cam_cells,


# Its output is a record of which archives (by md5) are in data/voc, not the directory: the
# archives alone decide whether it reruns (no code param), and a rerun does not delete the
# tree (Snakemake removes a job's outputs first); fetch_voc skips what is extracted already.
rule fetch_voc:
    output:
        record=f"{DATA}/voc/fetched.json",
    params:
        archives=archive_ids(config["dataset"]["voc"]),
    log:
        f"{LOGS}/data/fetch_voc.log",
    conda:
        ENV
    script:
        "../scripts/fetch_voc.py"


rule make_toyvoc:
    output:
        directory(f"{DATA}/toyvoc"),
    params:
        code=code_of("make_toyvoc"),
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
        data=dataset_input(),
    params:
        code=code_of("build_splits"),
        voc_root=voc_root(),
        sbd_root=sbd_root(),
        settings={"expected_counts": config["dataset"]["voc"]["expected_counts"]
                  if DATASET == "voc" else None, "test_split": has_test_split(),
                  "allow_empty": config["dataset"]["allow_empty"]},
    # decoding every image once; within --cores also on SLURM (the test node has 2 CPUs)
    threads: min(4, job_threads())
    log:
        f"{LOGS}/data/build_splits.log",
    conda:
        ENV
    script:
        "../scripts/build_splits.py"


# CAM cells per object at the ResNet classifier's training scale and output stride, from
# the train split's instance masks: is the CAM grid fine enough to take objects' shapes?
rule cam_cells:
    output:
        f"{RESULTS}/cam_cells.json",
    input:
        ids=f"{SPLITS}/train.txt",
        data=dataset_input(),
    params:
        code=code_of("cam_cells"),
        voc_root=voc_root(),
        settings={"resize_long": config["train_cam"]["resize_long"],
                  "crop": config["train_cam"]["crop"],
                  "strides": config["train_cam"]["backbone"]["strides"]},
    log:
        f"{LOGS}/data/cam_cells.log",
    conda:
        ENV
    script:
        "../scripts/cam_cells.py"

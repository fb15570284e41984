# Data: the real VOC 2012 + SBD download, the synthetic benchmark, and the split lists.


localrules:
    fetch_voc,
    cam_cells,


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
                  if DATASET == "voc" else None, "test_split": has_test_split()},
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
        data=dataset_dir(),
        code=pkg("cam_cells"),
    params:
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

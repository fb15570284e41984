# The results table: every configured method and seed, next to the published numbers.
# `table` covers the whole pipeline; `masks_table` the runs up to their pseudo masks (the
# `masks` target: a method comparison without DeepLab, whose columns stay empty there).


localrules:
    table,
    figures,


rule table:
    output:
        table=f"{RESULTS}/{{table}}.csv",
        long=f"{RESULTS}/{{table}}_long.csv",
        per_class=f"{RESULTS}/{{table}}_per_class.csv",
        markdown=f"{RESULTS}/{{table}}.md",
        html=report(f"{RESULTS}/{{table}}.html", category="Results", labels={"figure": "{table}"}),
    input:
        runs=table_inputs,
    wildcard_constraints:
        table="|".join(TABLES),
    params:
        code=code_of("table"),
        runs=table_runs,
        literature=literature,
    log:
        f"{LOGS}/{{table}}.log",
    conda:
        ENV
    script:
        "../scripts/table.py"


rule figures:
    output:
        per_class=report(
            f"{RESULTS}/figures/per_class_iou.png",
            category="Results",
            labels={"figure": "per-class IoU"},
        ),
        curves=report(
            f"{RESULTS}/figures/training_curves.png",
            category="Training",
            labels={"figure": "loss and lr per epoch"},
        ),
    input:
        per_class=f"{RESULTS}/table_per_class.csv",
        histories=lambda w: [h["path"] for h in histories()],
    params:
        code=code_of("figures"),
        histories=lambda w: histories(),
    log:
        f"{LOGS}/figures.log",
    conda:
        ENV
    script:
        "../scripts/figures.py"


rule overlays:
    output:
        report(
            f"{RESULTS}/figures/overlays_{{method}}_seed{{seed}}.png",
            category="Overlays",
            labels={"method": "{method}", "seed": "{seed}"},
        ),
    input:
        cams=f"{RUN}/cam/all",
        masks=f"{RUN}/mask/all",
        seg_model=f"{RUN}/seg_model.pt",
        ids=f"{SPLITS}/train.txt",
    params:
        code=code_of("overlays"),
        voc_root=voc_root(),
        n_images=config["report"]["overlay_images"],
        settings={"bg_threshold": config["eval_cam"]["bg_threshold"],
                  "infer_seg": config["infer_seg"]},
    log:
        f"{LOGS}/{{method}}/seed{{seed}}/overlays.log",
    conda:
        ENV
    script:
        "../scripts/overlays.py"

# The results table: every configured method and seed, next to the published numbers.


localrules:
    table,


rule table:
    output:
        table=f"{RESULTS}/table.csv",
        long=f"{RESULTS}/table_long.csv",
        per_class=f"{RESULTS}/table_per_class.csv",
        markdown=f"{RESULTS}/table.md",
        html=f"{RESULTS}/table.html",
    input:
        runs=table_inputs,
        literature=literature(),
        code=pkg("table"),
    params:
        runs=table_runs,
    log:
        f"{LOGS}/table.log",
    conda:
        ENV
    script:
        "../scripts/table.py"

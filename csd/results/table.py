"""The results table: reproduced runs (mean and std over seeds) next to published numbers.

`results/table.csv` starts with a fixed set of columns (a contract for users' scripts,
LEADING_COLUMNS); mIoU in percent; `source` is `reproduced` or `paper`. Next to it: a
long-form CSV (one row per method and seed), a per-class IoU CSV, and the table as
Markdown and HTML. Stages not run yet leave their columns empty.
"""

import json
from pathlib import Path

import pandas as pd

from csd.runtime.io import atomic_path

LEADING_COLUMNS = ["method", "source", "n_seeds", "seed_miou", "seed_miou_std", "mask_miou",
                   "mask_miou_std", "val_miou", "val_miou_std", "val_crf_miou",
                   "val_crf_miou_std", "test_archive"]
# metrics file key in a run -> column stem in the table
METRICS = {"seed": "seed_miou", "mask": "mask_miou", "val": "val_miou",
           "val_crf": "val_crf_miou"}


def read_metrics(path):
    data = json.loads(Path(path).read_text())
    if "miou" not in data:
        raise ValueError(f"{path}: a metrics file needs 'miou'")
    return data


def train_cpu_seconds(benchmark_tsv):
    """CPU seconds of a training job from Snakemake's benchmark file (robust to other jobs
    sharing the machine, unlike wall time)."""
    frame = pd.read_csv(benchmark_tsv, sep="\t")
    if "cpu_time" not in frame.columns:
        raise ValueError(f"{benchmark_tsv}: no cpu_time column (a Snakemake benchmark file?)")
    return float(frame["cpu_time"].iloc[-1])


def run_precision(histories):
    """The precision a run's training stages used, from their histories ({stage: path}):
    one value when all agree, else `stage:precision` pairs; None when none records it."""
    used = {}
    for stage, path in histories.items():
        records = json.loads(Path(path).read_text())
        if records and "precision" in records[-1]:
            used[stage] = records[-1]["precision"]
    if len(set(used.values())) <= 1:
        return next(iter(used.values()), None)
    return " ".join(f"{stage}:{precision}" for stage, precision in used.items())


def long_table(runs):
    """runs: [{"method", "seed", "metrics": {kind: path}, "histories": {stage: path},
    "train_tsv": path or None, "test_archive": path or None}] -> (long frame, per-class
    frame). Metrics kinds a run does not list (no DeepLab) leave their columns empty."""
    rows, per_class = [], []
    for run in runs:
        row = {"method": run["method"], "seed": int(run["seed"])}
        for kind, path in run["metrics"].items():
            data = read_metrics(path)
            row[METRICS[kind]] = data["miou"]
            for name, iou in data.get("iou", {}).items():
                per_class.append({"method": run["method"], "seed": int(run["seed"]),
                                  "kind": kind, "class": name, "iou": iou})
        if run.get("train_tsv"):
            row["train_cpu_s"] = train_cpu_seconds(run["train_tsv"])
        row["precision"] = run_precision(run.get("histories", {}))
        row["test_archive"] = run.get("test_archive")
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(per_class)


def summary_table(long, literature=None, baseline="irn"):
    """Mean and sample std over seeds per method, in the order methods first appear, then
    the literature rows (source=paper). `train_cpu_ratio`: the method's mean classifier
    training CPU time over the baseline's."""
    rows = []
    base_time = None
    if "train_cpu_s" in long and baseline in set(long["method"]):
        base_time = long.loc[long["method"] == baseline, "train_cpu_s"].mean()
    for method, group in long.groupby("method", sort=False):
        row = {"method": method, "source": "reproduced", "n_seeds": len(group)}
        for column in METRICS.values():
            values = group[column] if column in group else pd.Series(dtype=float)
            row[column] = values.mean() if values.notna().any() else None
            row[f"{column}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else None
        archives = [a for a in group.get("test_archive", []) if isinstance(a, str)]
        row["test_archive"] = ";".join(archives) or None
        precisions = [p for p in group.get("precision", []) if isinstance(p, str)]
        row["precision"] = ";".join(dict.fromkeys(precisions)) or None
        if "train_cpu_s" in group:
            row["train_cpu_s"] = group["train_cpu_s"].mean()
            if base_time:
                row["train_cpu_ratio"] = row["train_cpu_s"] / base_time
        rows.append(row)
    table = pd.DataFrame(rows)
    if literature is not None and len(literature):
        paper = literature.assign(source="paper")
        table = pd.concat([table, paper], ignore_index=True)
    table["n_seeds"] = table["n_seeds"].astype("Int64")  # paper rows have none
    extra = [c for c in table.columns if c not in LEADING_COLUMNS]
    return table.reindex(columns=LEADING_COLUMNS + extra)


def load_literature(path):
    """Published numbers: a CSV with `method` and any of the table's columns (plus notes)."""
    frame = pd.read_csv(path)
    if "method" not in frame.columns:
        raise ValueError(f"{path}: the literature CSV needs a 'method' column")
    return frame


def write_table(runs, literature_csv, out):
    """Write out["table"] (CSV), out["long"], out["per_class"], out["markdown"], out["html"]."""
    long, per_class = long_table(runs)
    literature = load_literature(literature_csv) if literature_csv else None
    table = summary_table(long, literature)
    for key, frame in (("table", table), ("long", long), ("per_class", per_class)):
        with atomic_path(out[key]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.2f")
    with atomic_path(out["markdown"]) as tmp:
        Path(tmp).write_text(table.astype(object).where(table.notna(), None)
                             .to_markdown(index=False, floatfmt=".2f", missingval="") + "\n")
    with atomic_path(out["html"]) as tmp:
        Path(tmp).write_text(table.to_html(index=False, float_format="{:.2f}".format, na_rep=""))
    return table

"""Each rule's share of a run's time, from Snakemake's rule benchmark files:

    python benchmarks/stage_times.py logs/benchmark/benchmark

(the `benchmark/` folder under the run's `logs_dir`). Prints one row per rule: jobs, wall
seconds summed over its jobs, their share of the summed wall time, CPU seconds and the
largest max RSS. Jobs run side by side, so the summed wall time exceeds the elapsed time.
"""

import argparse
from pathlib import Path

import pandas as pd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("benchmark_dir", type=Path)
    args = parser.parse_args()
    files = sorted(args.benchmark_dir.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"{args.benchmark_dir}: no rule benchmark files (*.tsv)")
    rows = []
    for path in files:
        frame = pd.read_csv(path, sep="\t")
        rule = path.stem.split(".")[0]
        rows.append({"rule": rule, "wall_s": frame["s"].sum(),
                     "cpu_s": pd.to_numeric(frame["cpu_time"], errors="coerce").sum(),
                     "max_rss_mb": pd.to_numeric(frame["max_rss"], errors="coerce").max()})
    table = pd.DataFrame(rows).groupby("rule").agg(
        jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"),
        max_rss_mb=("max_rss_mb", "max")).sort_values("wall_s", ascending=False)
    table.insert(2, "share_pct", 100 * table["wall_s"] / table["wall_s"].sum())
    print(table.round(1).to_markdown())  # tabulate comes with snakemake
    print(f"total wall s (summed over jobs): {table['wall_s'].sum():.0f}")


if __name__ == "__main__":
    main()

"""Wall time of the tiny synthetic config (tests/conftest.py's TINY): locally at --cores 1
and --cores 2, and through a one-node SLURM cluster (tests/workflow/slurm_cluster.py; needs root and
Debian's slurmctld/slurmd/slurm-client, installed with apt if missing).

    python benchmarks/scaleout.py [--methods irn] [--skip-slurm]

Each run starts from an empty working directory (toyvoc generation included). Prints one
line per run, the number of SLURM jobs, whether the SLURM run's metrics equal the local
--cores 2 run's, and a last line `cores2_speedup=<x> slurm_over_local=<y> slurm_jobs=<n>`.
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import TINY, snakemake, write_config
from tests.workflow.slurm_cluster import (
    SlurmCluster,
    install,
    snakemake_on_slurm,
    submitted_jobs,
)

METRICS = ("seed", "mask", "val", "val_crf")


def metrics(work, methods):
    """{(method, kind): mIoU} of a finished run."""
    return {(method, kind): json.loads(
        (work / f"results/{method}/seed0/{kind}_metrics.json").read_text())["miou"]
        for method in methods for kind in METRICS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["irn"])
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_config(root / "tiny.yaml", dict(TINY, methods=args.methods))
        seconds = {}
        for cores in (1, 2):
            work = root / f"local{cores}"
            work.mkdir()
            start = time.perf_counter()
            snakemake(work, "--cores", str(cores), configs=[config])
            seconds[f"local --cores {cores}"] = time.perf_counter() - start
            print(f"local --cores {cores}: {seconds[f'local --cores {cores}']:.1f} s")
        line = f"cores2_speedup={seconds['local --cores 1'] / seconds['local --cores 2']:.2f}"
        if not args.skip_slurm:
            reason = install()
            if reason:
                sys.exit(f"no SLURM: {reason}")
            cluster = SlurmCluster(root / "cluster")
            work = root / "slurm"
            work.mkdir()
            try:
                cluster.start()
                start = time.perf_counter()
                proc = snakemake_on_slurm(cluster, work, config)
                seconds["slurm"] = time.perf_counter() - start
            finally:
                cluster.stop()
            if proc.returncode != 0:
                sys.exit(f"SLURM run failed:\n{proc.stderr[-4000:]}")
            jobs = submitted_jobs(proc, work)
            same = metrics(work, args.methods) == metrics(root / "local2", args.methods)
            print(f"slurm: {seconds['slurm']:.1f} s, {len(jobs)} SLURM jobs "
                  f"{dict(collections.Counter(jobs.values()))}, metrics equal to local "
                  f"--cores 2: {same}")
            line += (f" slurm_over_local={seconds['slurm'] / seconds['local --cores 2']:.2f}"
                     f" slurm_jobs={len(jobs)}")
    print(f"load average after: {os.getloadavg()}")
    print(line)


if __name__ == "__main__":
    main()

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir, *args, configs=(), check=True, timeout=1800, env=None, snakefile=None):
    """Run the repository's workflow in `workdir` in a subprocess (as a user would)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile or REPO / "Snakefile"),
           "-d", str(workdir)]
    for config in configs:
        cmd += ["--configfile", str(config)]
    cmd += list(args)
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def write_config(path, overrides):
    Path(path).write_text(yaml.safe_dump(overrides, sort_keys=False))
    return path


@pytest.fixture
def repo():
    return REPO

"""Snakemake-level checks: lint, dry runs of the shipped configs."""

import re

import pytest

from tests.conftest import REPO, snakemake


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


@pytest.mark.parametrize("configs, expected_rules", [
    ([], {"fetch_voc", "build_splits"}),
    ([REPO / "config/demo.yaml"], {"make_toyvoc", "build_splits"}),
])
def test_dry_run_of_shipped_configs(tmp_path, configs, expected_rules):
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", configs=configs)
    table = proc.stdout + proc.stderr
    for rule in expected_rules:
        assert rule in table, table
    if configs:  # the demo never downloads
        assert "fetch_voc" not in table
    # one classifier per method (irn, irn_csd, irn_cda, mct, mct_csd) and seed
    assert re.search(r"^train_cam\s+5\s*$", table, re.M), table


def test_dry_run_of_the_benchmark_runs_three_methods_on_three_seeds(tmp_path):
    proc = snakemake(tmp_path, "-n", configs=[REPO / "config/demo.yaml",
                                              REPO / "config/benchmark.yaml"])
    text = proc.stdout + proc.stderr
    assert re.search(r"^train_cam\s+9\s*$", text, re.M), text
    for method in ("irn", "irn_csd", "irn_cda"):
        for seed in (0, 1, 2):
            assert f"results/{method}/seed{seed}/mask_metrics.json" in text


def test_stage_code_inputs_follow_imports(tmp_path):
    from csd.runner import module_closure

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "stage.py").write_text("import os\nfrom pkg.helper import f\nfrom pkg import util\n")
    (pkg / "helper.py").write_text("import pkg.deep\n")
    (pkg / "util.py").write_text("")
    (pkg / "deep.py").write_text("")
    (pkg / "unused.py").write_text("")
    names = [p.rsplit("/", 1)[1] for p in module_closure(pkg, ["stage"])]
    assert names == ["deep.py", "helper.py", "stage.py", "util.py"]
    real = [p.rsplit("/", 1)[1] for p in module_closure(REPO / "csd", ["make_sem_seg"])]
    assert {"make_sem_seg.py", "random_walk.py", "irn.py", "backbone.py"} <= set(real)
    assert "train_cam.py" not in real

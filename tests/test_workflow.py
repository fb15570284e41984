"""Snakemake-level checks: lint, dry runs of the shipped configs."""

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

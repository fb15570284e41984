"""The config contract: published defaults validate, mistakes fail naming the key."""

import copy
import re
import tomllib

import pytest
import yaml

from csd.config import ConfigError, validate_config
from tests.conftest import REPO, snakemake, write_config

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def base_config():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def merged(overrides):
    """config.yaml deep-updated with `overrides`, as Snakemake merges --configfile files."""
    def update(dst, src):
        for key, value in src.items():
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                update(dst[key], value)
            else:
                dst[key] = value
        return dst
    return update(base_config(), copy.deepcopy(overrides))


def test_published_demo_and_benchmark_configs_validate():
    validate_config(base_config(), SCHEMA)
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    validate_config(merged(demo), SCHEMA)
    benchmark = yaml.safe_load((REPO / "config/benchmark.yaml").read_text())
    config = merged({**demo, **benchmark})
    validate_config(config, SCHEMA)
    assert config["seeds"] == [0, 1, 2]
    assert config["methods"] == ["irn", "irn_csd", "irn_cda"]


@pytest.mark.parametrize("overrides, key, words", [
    ({"dataset": {"toyvoc": {"context_strenght": 0.5}}}, "dataset.toyvoc", "context_strenght"),
    ({"dataset": {"toyvoc": {"context_strength": 1.5}}}, "dataset.toyvoc.context_strength",
     "maximum"),
    ({"dataset": {"toyvoc": {"n_train": "many"}}}, "dataset.toyvoc.n_train", "not of type"),
    ({"dataset": {"name": "coco"}}, "dataset.name", "coco"),
    ({"seeds": [0, -1]}, "seeds.1", "minimum"),
    ({"dataset": {"allow_empty": ["train"]}}, "dataset.allow_empty.0", "'train' is not one of"),
    ({"dataset": {"voc": {"archives": {"sbd": {"md5": "xyz"}}}}},
     "dataset.voc.archives.sbd.md5", "xyz"),
])
def test_bad_values_name_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(merged(overrides), SCHEMA)
    message = str(err.value)
    assert re.search(rf"^\s+{re.escape(key)}: ", message, re.M), message
    assert words in message


def test_snakemake_stops_before_any_job_naming_the_key(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"dataset": {"toyvoc": {"void_width": -3}}})
    proc = snakemake(tmp_path, "-n", configs=[bad], check=False)
    assert proc.returncode != 0
    assert "dataset.toyvoc.void_width" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs/csd.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    normalise = lambda reqs: sorted(r.split("#")[0].replace(" ", "") for r in reqs)
    assert normalise(pip) == normalise(project["dependencies"])

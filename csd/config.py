"""Config validation with errors that name the key, before any job starts."""

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    pass


def load_config(repo, *overrides):
    """config/config.yaml of `repo` deep-updated with each override file in turn, as
    `snakemake --configfile` merges them (for scripts that run outside the DAG)."""
    from snakemake.utils import update_config

    config = yaml.safe_load((Path(repo) / "config/config.yaml").read_text())
    for path in overrides:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def validate_config(config, schema_path):
    """Check `config` against the JSON schema; fill defaults via Snakemake's validator.

    Every violation is reported on one line as `key.path: message`, so a typo in a nested
    key is found without reading a schema dump.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(Draft202012Validator(schema).iter_errors(config),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                 for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    from snakemake.utils import validate

    validate(config, str(schema_path), set_default=True)
    return config

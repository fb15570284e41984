"""Config validation with errors that name the key, before any job starts."""

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    pass


def choice(value, key, options):
    """A settings value that must be one of `options`; the error names the key."""
    if value not in options:
        raise ValueError(f"settings '{key}' must be {' or '.join(options)}, got {value!r}")
    return value


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
    from csd.methods.registry import METHODS

    unknown = [m for m in config.get("methods", []) if m not in METHODS]
    if unknown:
        raise ConfigError(f"invalid configuration:\n  methods: unknown {unknown} (known: "
                          f"{', '.join(METHODS)}; csd/methods/registry.py)")
    from snakemake.utils import validate

    validate(config, str(schema_path), set_default=True)
    return config


def load_config_file(path):
    """A YAML config file as a dict. A missing file, a YAML syntax error (with its line and
    column) or a file that is not a mapping of keys -> ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        # e.g. an unclosed bracket is found at the end; its context says where it opened
        context = (f" ({err.context} at line {err.context_mark.line + 1})"
                   if err.context and err.context_mark else "")
        raise ConfigError(f"{path}, line {mark.line + 1}, column {mark.column + 1}: "
                          f"YAML error: {err.problem or err.context}{context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML error: {err}") from None
    if data is None:  # an empty file overrides nothing
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, not a "
                          f"{type(data).__name__}")
    return data


def check_config_files(paths, repo=Path(__file__).resolve().parents[2]):
    """The configuration `snakemake --configfile PATHS...` would run with (config/config.yaml
    deep-updated by each file, as Snakemake merges them), validated; ConfigError otherwise."""
    from snakemake.utils import update_config

    config = load_config_file(repo / "config" / "config.yaml")
    for path in paths:
        update_config(config, load_config_file(path))
    return validate_config(config, repo / "workflow" / "schemas" / "config.schema.yaml")


def main(argv=None):
    """`python -m csd.runtime.config [FILE...]`: check config files before a run, one line per
    problem (Snakemake itself reports a missing or malformed --configfile without its name
    or line)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    try:
        check_config_files(paths)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"ok: config/config.yaml{''.join(f' + {p}' for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def voc_root(config):
    """The VOC2012 directory a run reads, relative to its work directory unless absolute:
    dataset.voc.voc_root for an existing VOC tree, else the one fetch_voc or make_toyvoc
    writes under data_dir."""
    dataset = config["dataset"]["name"]
    voc = config["dataset"]["voc"]
    if dataset == "voc" and voc["voc_root"]:
        return voc["voc_root"]
    return f"{config['data_dir']}/{dataset}/VOCdevkit/VOC2012"

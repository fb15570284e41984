"""Config validation with errors that name the key, before any job starts."""

from copy import deepcopy
from functools import lru_cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


@lru_cache(maxsize=None)
def _schema():
    return yaml.safe_load(SCHEMA.read_text())


def _resolve(node, root):
    """A schema node with a local `$ref` replaced by what it names (its own keys laid over)."""
    while "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def section_schema(path):
    """The schema of a config section, by its dotted path (train_cam, infer_seg.crf,
    dataset.toyvoc), its `$ref`s resolved at the top."""
    root = _schema()
    node = root
    for key in path.split("."):
        node = _resolve(node, root).get("properties", {}).get(key)
        if node is None:
            raise KeyError(f"the schema ({SCHEMA.name}) has no section '{path}'")
    return _resolve(node, root)


@lru_cache(maxsize=None)
def _section_check(path):
    """(required keys without a schema default, a validator of the section's types and
    ranges that lets undeclared keys pass), built once per section."""
    root = _schema()
    schema = deepcopy(section_schema(path))
    properties = schema.get("properties", {})
    optional = {k for k, v in properties.items() if "default" in _resolve(v, root)}
    required = [k for k in schema.get("required", []) if k not in optional]
    schema.pop("additionalProperties", None)
    schema["required"] = []
    schema["$defs"] = root.get("$defs", {})
    return required, Draft202012Validator(schema)


def _problems(validator, instance, prefix=()):
    """One line per violation, `key.path: message`, sorted by key."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [f"  {'.'.join([*prefix, *map(str, e.absolute_path)]) or '(top level)'}: {e.message}"
            for e in errors]


def section(settings, path, nested=()):
    """`settings`, checked against the schema's section `path` (the one declaration of its
    keys, their types and ranges): a stage function is called without Snakemake too, so it
    names what is wrong itself. A required key without a schema default that is missing is a
    KeyError naming it; a value of the wrong type or out of range a ConfigError naming its
    key. Keys the section does not declare pass: the workflow adds some (the run's `seed`,
    a method's own section, the `<section>_<kind>` overlay). `nested`: sections that must be
    in `settings` under their own name (a method's), each checked against its own schema."""
    for name in nested:
        if name not in settings:
            raise KeyError(f"settings '{path}' lacks keys {[name]}")
        section(settings[name], name)
    required, validator = _section_check(path)
    missing = [k for k in required if k not in settings]
    if missing:
        raise KeyError(f"settings '{path}' lacks keys {missing}")
    problems = _problems(validator, settings, [path])
    if problems:
        raise ConfigError(f"invalid settings '{path}':\n" + "\n".join(problems))
    return settings


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
    problems = _problems(Draft202012Validator(schema), config)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))
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


def check_config_files(paths, repo=SCHEMA.parents[2]):
    """The configuration `snakemake --configfile PATHS...` would run with (config/config.yaml
    deep-updated by each file, as Snakemake merges them), validated; ConfigError otherwise."""
    from snakemake.utils import update_config

    config = load_config_file(repo / "config" / "config.yaml")
    for path in paths:
        update_config(config, load_config_file(path))
    return validate_config(config, repo / SCHEMA.relative_to(SCHEMA.parents[2]))


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

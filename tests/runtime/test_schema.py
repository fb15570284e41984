"""One declaration per setting: the schema (workflow/schemas/config.schema.yaml) holds every
key; each is read somewhere, and each key a stage reads through csd.runtime.config.section
is declared in the section it checks."""

import ast
import re

import pytest
import yaml

from csd.runtime.config import SCHEMA, ConfigError, section, section_schema
from tests.conftest import REPO

CODE = [*sorted((REPO / "csd").rglob("*.py")), *sorted((REPO / "workflow").rglob("*.py")),
        *sorted((REPO / "workflow" / "rules").glob("*.smk")), REPO / "Snakefile"]
# A key read as mapping["key"], mapping.get("key"), or named in a settings dict the rules
# build ({"key": ...}).
READ = re.compile(r"""\[\s*["'](\w+)["']\s*\]|\.get\(\s*["'](\w+)["']|["'](\w+)["']\s*:""")


def schema_keys(node, root, seen=()):
    """Every property name of a schema node, nested sections and $defs included."""
    keys = set()
    if isinstance(node, dict):
        for name, child in node.get("properties", {}).items():
            keys.add(name)
            keys |= schema_keys(child, root)
        for key in ("items", "additionalProperties"):
            keys |= schema_keys(node.get(key), root)
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/") and ref not in seen:
            keys |= schema_keys(root["$defs"][ref.split("/")[-1]], root, (*seen, ref))
    return keys


def read_keys():
    """The keys the code reads, and the sections it reads by name: a classifier kind's
    settings and a method's own section (the registry), a section overlaid per kind
    (for_classifier("make_cam", kind) reads make_cam and make_cam_mct)."""
    from csd.methods.registry import CLASSIFIERS, METHODS

    found = {kind.settings for kind in CLASSIFIERS.values()}
    for regime in {method.regime for method in METHODS.values()} - {None}:  # overlaid too
        found |= {regime, *(f"{regime}_{kind}" for kind in CLASSIFIERS)}
    for path in CODE:
        text = path.read_text()
        for match in READ.finditer(text):
            found |= {group for group in match.groups() if group}
        for overlaid in re.findall(r"""for_classifier\(\s*["'](\w+)["']""", text):
            found |= {overlaid, *(f"{overlaid}_{kind}" for kind in CLASSIFIERS)}
    return found


def test_every_schema_key_is_read_somewhere():
    root = yaml.safe_load(SCHEMA.read_text())
    unread = schema_keys(root, root) - read_keys()
    assert not unread, f"schema keys no code reads: {sorted(unread)}"


def section_reads():
    """(file, function, section path, keys the function reads from the checked mapping)."""
    for path in sorted((REPO / "csd").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for call in ast.walk(function):
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "section"
                        and len(call.args) >= 2 and isinstance(call.args[1], ast.Constant)):
                    target = ast.unparse(call.args[0])
                    keys = {node.slice.value for node in ast.walk(function)
                            if isinstance(node, ast.Subscript)
                            and ast.unparse(node.value) == target
                            and isinstance(node.slice, ast.Constant)}
                    yield path.name, function.name, call.args[1].value, keys


def test_every_key_read_through_the_helper_is_declared_in_its_section():
    reads = list(section_reads())
    assert len(reads) >= 12  # every stage checks its settings
    for name, function, path, keys in reads:
        declared = set(section_schema(path).get("properties", {}))
        assert keys <= declared, (name, function, path, sorted(keys - declared))


def test_section_names_the_missing_and_the_invalid_key():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings = dict(config["train_irn"], seed=0)
    assert section(settings, "train_irn") is settings
    with pytest.raises(KeyError, match=r"settings 'train_irn' lacks keys \['lr'\]"):
        section({k: v for k, v in settings.items() if k != "lr"}, "train_irn")
    with pytest.raises(ConfigError, match=r"train_irn\.radius: 0 is less than the minimum"):
        section(dict(settings, radius=0), "train_irn")
    with pytest.raises(ConfigError, match=r"train_irn\.backbone\.strides"):
        section(dict(settings, backbone=dict(settings["backbone"], strides=[2, 2])), "train_irn")
    # keys with a schema default may be left out (shards); keys the workflow adds pass
    section({"scales": [1.0], "flip": True, "cam_layers": 3}, "make_cam")
    with pytest.raises(KeyError, match=r"settings 'train_cam' lacks keys \['csd'\]"):
        section(dict(config["train_cam"], seed=0), "train_cam", nested=("csd",))
    with pytest.raises(ConfigError, match=r"csd\.reduction"):
        section(dict(config["train_cam"], seed=0, csd=dict(config["csd"], reduction="x")),
                "train_cam", nested=("csd",))
    with pytest.raises(KeyError, match="no section 'train_cam.nothing'"):
        section({}, "train_cam.nothing")

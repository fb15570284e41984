"""A rule's code identity (csd/runtime/codehash.py): the meaning of the code it runs, not its text."""

import os
import shutil

import pytest

from csd.runtime.codehash import code_version, module_closure, module_path
from tests.conftest import REPO


def package(root):
    """pkg/: stage imports helper (which imports deep) and util; unused is imported by no one."""
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "stage.py").write_text(
        '"""Stage."""\nimport os\nfrom pkg.helper import f\nfrom pkg import util\n\n\n'
        'def run(x):\n    """Run."""\n    return f(x) + util.K  # add\n')
    (pkg / "helper.py").write_text("import pkg.deep\n\n\ndef f(x):\n    return 2 * x\n")
    (pkg / "util.py").write_text("K = 1\n")
    (pkg / "deep.py").write_text("D = 0\n")
    (pkg / "unused.py").write_text("U = 0\n")
    script = root / "scripts" / "stage.py"
    script.parent.mkdir()
    script.write_text("import sys\nfrom pkg.util import K\n\nif K:\n    from pkg import unused\n")
    return pkg, script


def test_closure_follows_imports_and_the_scripts_top_level_ones(tmp_path):
    pkg, script = package(tmp_path)
    names = [p.rsplit("/", 1)[1] for p in module_closure(pkg, ["pkg.stage"])]
    assert names == ["deep.py", "helper.py", "stage.py", "util.py"]
    # a script's import inside a branch is the rule's choice: not followed
    assert [p.rsplit("/", 1)[1] for p in module_closure(pkg, [], [script])] == ["util.py"]
    real = [os.path.relpath(p, REPO) for p in module_closure(REPO / "csd",
                                                             ["csd.irn.make_sem_seg"])]
    assert {"csd/irn/make_sem_seg.py", "csd/irn/random_walk.py", "csd/irn/edge_net.py",
            "csd/cam/backbone.py"} <= set(real)
    assert "csd/cam/train_cam.py" not in real


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_comments_docstrings_and_layout_do_not_change_the_hash(tmp_path):
    pkg, script = package(tmp_path)
    before = code_version(pkg, ["pkg.stage"], [script])
    edit(pkg / "stage.py", "  # add", "  # add the constant")
    edit(pkg / "stage.py", '"""Run."""', '"""Run it,\n    twice."""\n    # why')
    edit(pkg / "stage.py", '"""Stage."""', "# a module comment instead of a docstring\n")
    edit(pkg / "helper.py", "def f", "# helper\n\n\n\ndef f")
    edit(pkg / "helper.py", "return 2 * x", "return (2 *\n            x)")  # layout
    edit(script, "import sys", "# the script\nimport sys  # for the path")
    assert code_version(pkg, ["pkg.stage"], [script]) == before


def test_a_code_edit_changes_the_hash_of_the_rules_that_run_it(tmp_path):
    pkg, script = package(tmp_path)
    stage, other = code_version(pkg, ["pkg.stage"], [script]), code_version(pkg, ["pkg.unused"])
    edit(pkg / "deep.py", "D = 0", "D = 1")  # imported by helper, imported by stage
    assert code_version(pkg, ["pkg.stage"], [script]) != stage
    assert code_version(pkg, ["pkg.unused"]) == other
    stage = code_version(pkg, ["pkg.stage"], [script])
    edit(script, "if K:", "if not K:")  # the script itself
    assert code_version(pkg, ["pkg.stage"], [script]) != stage
    stage = code_version(pkg, ["pkg.stage"], [script])
    edit(pkg / "stage.py", '"""Run."""\n    return',
         '"""Run."""\n    "a string, not the docstring"\n    return')
    assert code_version(pkg, ["pkg.stage"], [script]) != stage


def test_a_copy_with_new_file_dates_hashes_the_same(tmp_path):
    pkg, script = package(tmp_path / "a")
    before = code_version(pkg, ["pkg.stage"], [script])
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)
    copy = tmp_path / "b"
    os.utime(copy / "pkg" / "util.py", (1, 1))
    assert code_version(copy / "pkg", ["pkg.stage"], [copy / "scripts" / "stage.py"]) == before


def subpackages(root):
    """pkg/ with subpackages: a/stage.py imports b.helper by name, the b package, and a
    function of c.util; b/__init__.py is empty; c is never imported as a package."""
    pkg = root / "pkg"
    for sub in ("a", "b", "c"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Top."""\n')
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "b" / "__init__.py").write_text('"""B."""\nB = 1\n')
    (pkg / "c" / "__init__.py").write_text("")
    (pkg / "a" / "stage.py").write_text(
        "from pkg.b import helper\nfrom pkg.c.util import f\nimport pkg.b\n\n\n"
        "def run(x):\n    return helper.g(f(x)) + pkg.b.B\n")
    (pkg / "b" / "helper.py").write_text("from pkg.b.deep import D\n\n\ndef g(x):\n    return x + D\n")
    (pkg / "b" / "deep.py").write_text("D = 0\n")
    (pkg / "c" / "util.py").write_text("def f(x):\n    return x\n")
    (pkg / "c" / "other.py").write_text("O = 0\n")
    return pkg


def test_dotted_modules_resolve_to_files_and_subpackages(tmp_path):
    pkg = subpackages(tmp_path)
    assert module_path(pkg, "pkg.a.stage") == pkg / "a" / "stage.py"
    assert module_path(pkg, "pkg.b") == pkg / "b" / "__init__.py"
    assert module_path(pkg, "pkg") == pkg / "__init__.py"
    assert module_path(pkg, "pkg.c.util.f") is None  # a function, not a module
    with pytest.raises(ValueError, match="not a module of the package pkg"):
        module_path(pkg, "other.a")
    closure = [os.path.relpath(p, tmp_path) for p in module_closure(pkg, ["pkg.a.stage"])]
    # `from pkg.b import helper` names the b package and its helper submodule; the
    # function f of pkg.c.util is not a module; pkg.c and pkg.a's __init__ are not imported
    assert closure == ["pkg/a/stage.py", "pkg/b/__init__.py", "pkg/b/deep.py",
                       "pkg/b/helper.py", "pkg/c/util.py"]
    with pytest.raises(FileNotFoundError, match="no module pkg.a.missing"):
        module_closure(pkg, ["pkg.a.missing"])


def test_an_edit_in_a_subpackage_changes_the_hash_of_its_importers_only(tmp_path):
    pkg = subpackages(tmp_path)
    stage, other = code_version(pkg, ["pkg.a.stage"]), code_version(pkg, ["pkg.c.other"])
    edit(pkg / "b" / "deep.py", "D = 0", "D = 1")  # two levels down, in another subpackage
    assert code_version(pkg, ["pkg.a.stage"]) != stage
    assert code_version(pkg, ["pkg.c.other"]) == other
    stage = code_version(pkg, ["pkg.a.stage"])
    edit(pkg / "b" / "__init__.py", "B = 1", "B = 2")  # the package's own code
    assert code_version(pkg, ["pkg.a.stage"]) != stage
    # the same name and code in two subpackages: each counts by its path in the package
    (pkg / "c" / "deep.py").write_text("D = 1\n")
    assert (pkg / "b" / "deep.py").read_text() == (pkg / "c" / "deep.py").read_text()
    assert code_version(pkg, ["pkg.b.deep"]) != code_version(pkg, ["pkg.c.deep"])


def test_the_registry_names_modules_that_exist():
    from csd.methods.registry import CLASSIFIERS, METHODS

    package = REPO / "csd"
    for entry in [*METHODS.values(), *CLASSIFIERS.values()]:
        assert module_path(package, entry.module) is not None, entry
    assert module_closure(package, [m.module for m in METHODS.values()])

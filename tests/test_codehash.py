"""A rule's code identity (csd/codehash.py): the meaning of the code it runs, not its text."""

import os
import shutil

from csd.codehash import code_version, module_closure
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
    names = [p.rsplit("/", 1)[1] for p in module_closure(pkg, ["stage"])]
    assert names == ["deep.py", "helper.py", "stage.py", "util.py"]
    # a script's import inside a branch is the rule's choice: not followed
    assert [p.rsplit("/", 1)[1] for p in module_closure(pkg, [], [script])] == ["util.py"]
    real = [p.rsplit("/", 1)[1] for p in module_closure(REPO / "csd", ["make_sem_seg"])]
    assert {"make_sem_seg.py", "random_walk.py", "irn.py", "backbone.py"} <= set(real)
    assert "train_cam.py" not in real


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_comments_docstrings_and_layout_do_not_change_the_hash(tmp_path):
    pkg, script = package(tmp_path)
    before = code_version(pkg, ["stage"], [script])
    edit(pkg / "stage.py", "  # add", "  # add the constant")
    edit(pkg / "stage.py", '"""Run."""', '"""Run it,\n    twice."""\n    # why')
    edit(pkg / "stage.py", '"""Stage."""', "# a module comment instead of a docstring\n")
    edit(pkg / "helper.py", "def f", "# helper\n\n\n\ndef f")
    edit(pkg / "helper.py", "return 2 * x", "return (2 *\n            x)")  # layout
    edit(script, "import sys", "# the script\nimport sys  # for the path")
    assert code_version(pkg, ["stage"], [script]) == before


def test_a_code_edit_changes_the_hash_of_the_rules_that_run_it(tmp_path):
    pkg, script = package(tmp_path)
    stage, other = code_version(pkg, ["stage"], [script]), code_version(pkg, ["unused"])
    edit(pkg / "deep.py", "D = 0", "D = 1")  # imported by helper, imported by stage
    assert code_version(pkg, ["stage"], [script]) != stage
    assert code_version(pkg, ["unused"]) == other
    stage = code_version(pkg, ["stage"], [script])
    edit(script, "if K:", "if not K:")  # the script itself
    assert code_version(pkg, ["stage"], [script]) != stage
    stage = code_version(pkg, ["stage"], [script])
    edit(pkg / "stage.py", '"""Run."""\n    return',
         '"""Run."""\n    "a string, not the docstring"\n    return')
    assert code_version(pkg, ["stage"], [script]) != stage


def test_a_copy_with_new_file_dates_hashes_the_same(tmp_path):
    pkg, script = package(tmp_path / "a")
    before = code_version(pkg, ["stage"], [script])
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)
    copy = tmp_path / "b"
    os.utime(copy / "pkg" / "util.py", (1, 1))
    assert code_version(copy / "pkg", ["stage"], [copy / "scripts" / "stage.py"]) == before

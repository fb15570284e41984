"""A workflow rule's code identity: one hash of what it runs, read as code.

A rule runs its script in workflow/scripts/ and the package modules that script and the
rule's stage modules import, transitively. Each file counts by its syntax tree without
docstrings (comments, blank lines and layout are not in the tree), so that an edited
comment, a reformatting or a fresh copy of the checkout (new file dates) changes nothing,
and any other edit changes the hash of exactly the rules that run the file. The workflow
passes the hash as a rule param: Snakemake reruns a job whose params changed.
"""

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(statement):
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def _imported(nodes, package):
    """The modules of `package` that the import statements among `nodes` name."""
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == package:
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            found.append(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1] for a in node.names
                      if a.name.startswith(package + ".")]
    return tuple(found)


@lru_cache(maxsize=None)
def _read(path, package, stat_key):
    """(the code without docstrings, as the syntax tree gives it back, package modules
    imported anywhere, package modules imported at the top level). `stat_key` only keys
    the cache (an edited file is read again); the result depends on the content alone.
    ast.unparse rather than ast.dump: the dump's form changes with new Python versions
    (new node fields, 3.13's omitted defaults), which would rerun every stage."""
    tree = ast.parse(Path(path).read_text(), str(path))
    anywhere = _imported(ast.walk(tree), package)
    top = _imported(tree.body, package)
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED) and node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:]
    return ast.unparse(tree), anywhere, top


def _parsed(path, package):
    stat = Path(path).stat()
    return _read(str(path), package, (stat.st_mtime_ns, stat.st_size))


def module_closure(package_dir, modules, scripts=()):
    """Paths of the package modules `modules`, of those that `scripts` import at their top
    level (an import inside a branch is a choice the rule makes: name it in `modules`), and
    of every package module these import anywhere, transitively, sorted."""
    package_dir = Path(package_dir)
    package = package_dir.name
    todo = list(modules)
    for script in scripts:
        todo += _parsed(script, package)[2]
    seen = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = package_dir / f"{module}.py"
        if not path.exists():
            raise FileNotFoundError(f"no module {package}.{module} ({path})")
        seen.add(module)
        todo += _parsed(path, package)[1]
    return sorted(str(package_dir / f"{m}.py") for m in seen)


def code_version(package_dir, modules=(), scripts=()):
    """A short hex hash of `scripts` and of `module_closure(package_dir, modules, scripts)`:
    each file by folder and name (not by path: a copy of the checkout hashes the same) and
    by its code."""
    package = Path(package_dir).name
    digest = hashlib.sha256()
    files = [*map(Path, module_closure(package_dir, modules, scripts)),
             *sorted(map(Path, scripts))]
    for path in files:
        name = f"{path.parent.name}/{path.name}"
        digest.update(f"{name}\0{_parsed(path, package)[0]}\0".encode())
    return digest.hexdigest()[:16]

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
    """The modules of `package` that the import statements among `nodes` may name, as dotted
    names: `import p.a.b` and `from p.a.b import x` name p.a.b, and also p.a.b.x in case x is
    a submodule (a name that is not a module is dropped when it is resolved)."""
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module == package or (node.module or "").startswith(package + ".")):
            if node.module != package:
                found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith(package + ".")]
    return tuple(found)


def module_path(package_dir, module):
    """The file of a dotted module name of the package at `package_dir` (a module file, or a
    subpackage's __init__.py), or None where there is no such module."""
    package_dir = Path(package_dir)
    parts = module.split(".")
    if parts[0] != package_dir.name:
        raise ValueError(f"{module} is not a module of the package {package_dir.name}")
    base = package_dir.joinpath(*parts[1:])
    for path in ((base.parent / f"{base.name}.py") if parts[1:] else None,
                 base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


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
    """Paths of the package modules `modules` (dotted names, e.g. csd.irn.train_irn), of
    those that `scripts` import at their top level (an import inside a branch is a choice
    the rule makes: name it in `modules`), and of every package module these import
    anywhere, transitively, sorted. A name in `modules` must be a module; an imported name
    that is not one (a function of a module) is skipped. A package's __init__.py counts
    where it is imported from, not for each of its submodules."""
    package_dir = Path(package_dir)
    package = package_dir.name
    todo = [(module, True) for module in modules]
    for script in scripts:
        todo += [(module, False) for module in _parsed(script, package)[2]]
    seen = {}
    while todo:
        module, required = todo.pop()
        if module in seen:
            continue
        path = module_path(package_dir, module)
        if path is None:
            if required:
                raise FileNotFoundError(f"no module {module} in {package_dir}")
            continue
        seen[module] = path
        todo += [(m, False) for m in _parsed(path, package)[1]]
    return sorted(str(path) for path in seen.values())


def code_version(package_dir, modules=(), scripts=()):
    """A short hex hash of `scripts` and of `module_closure(package_dir, modules, scripts)`:
    each file by its path inside the package (a script by folder and name; not by absolute
    path: a copy of the checkout hashes the same) and by its code."""
    package_dir = Path(package_dir)
    package = package_dir.name
    digest = hashlib.sha256()
    modules = [Path(p) for p in module_closure(package_dir, modules, scripts)]
    names = [path.relative_to(package_dir.parent).as_posix() for path in modules]
    scripts = sorted(map(Path, scripts))
    names += [f"{path.parent.name}/{path.name}" for path in scripts]
    for name, path in zip(names, modules + scripts):
        digest.update(f"{name}\0{_parsed(path, package)[0]}\0".encode())
    return digest.hexdigest()[:16]

"""Glue for `workflow/scripts/`: send a job's output to its log, shard image lists."""

import os
import sys
from contextlib import contextmanager


@contextmanager
def log_to(path):
    """Redirect stdout/stderr (file descriptors too, for C extensions) to `path`."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextmanager
def job(smk):
    """Everything a workflow script does around its one call: log to the rule's log file and
    use the rule's threads for torch (its default, all cores, oversubscribes parallel jobs)."""
    import torch

    torch.set_num_threads(max(1, smk.threads))
    with log_to(smk.log[0] if smk.log else None):
        yield


def shard(ids, index, count):
    """The `index`-th of `count` interleaved shards of an id list (balanced image sizes)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} out of range for {count} shards")
    return list(ids)[index::count]


def module_closure(package_dir, modules):
    """Paths of the package modules `modules` and of every package module they import,
    transitively: what a stage runs, so that a rule can declare it as input code."""
    import ast
    from pathlib import Path

    package_dir = Path(package_dir)
    name = package_dir.name
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = package_dir / f"{module}.py"
        if not path.exists():
            raise FileNotFoundError(f"no module {name}.{module} ({path})")
        seen.add(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == name:
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(name + "."):
                todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names
                         if a.name.startswith(name + ".")]
    return sorted(str(package_dir / f"{m}.py") for m in seen)


def optional_input(files):
    """The single file of a rule input that may be empty (e.g. the classifier a backbone
    starts from, which MCTformer runs do not give), or None."""
    return files[0] if len(files) else None

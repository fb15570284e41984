"""Glue for `workflow/scripts/`: send a job's output to its log, shard image lists, load
registry references."""

import os
import sys
import traceback
from contextlib import contextmanager
from importlib import import_module


@contextmanager
def log_to(path):
    """Redirect stdout/stderr (file descriptors too, for C extensions) to `path`. An error
    is written there too before it propagates: the log of a failed job says why it failed
    (the interpreter prints it again, to the real stderr, once the streams are restored)."""
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
        except Exception:  # an error, not an exit or an interrupt
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def use_threads(threads):
    """Give torch `threads` intra-op threads (its default, all cores, oversubscribes
    parallel jobs) without importing it: a job that needs no torch (merges, evaluations)
    skips its ~2 s of import. A torch imported later starts with OMP_NUM_THREADS."""
    threads = max(1, int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


@contextmanager
def job(smk):
    """Everything a workflow script does around its one call: log to the rule's log file and
    use the rule's threads for torch."""
    use_threads(smk.threads)
    with log_to(smk.log[0] if smk.log else None):
        yield


def shard(ids, index, count):
    """The `index`-th of `count` interleaved shards of an id list (balanced image sizes)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} out of range for {count} shards")
    return list(ids)[index::count]


def load(reference):
    """The object a "module:attribute" reference names (a trainer or a classifier kind of
    csd.methods.registry, passed to a script as a param)."""
    module, _, attribute = reference.partition(":")
    return getattr(import_module(module), attribute)

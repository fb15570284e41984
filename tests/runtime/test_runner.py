"""csd.runtime.runner's job glue: the rule's threads reach torch, and the light jobs never import it."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python(code):
    """`code` in a fresh interpreter at the repo root, without the caller's thread setting."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def run_python(code):
    out = python(code)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_threads_reach_torch_imported_before_or_after_the_job_starts():
    after = ("import sys; from csd.runtime.runner import use_threads; use_threads(1); "
             "print('torch' in sys.modules); import torch; print(torch.get_num_threads())")
    assert run_python(after) == ["False", "1"]
    before = ("import torch; from csd.runtime.runner import use_threads; "
              "use_threads(1); print(torch.get_num_threads())")
    assert run_python(before) == ["1"]


def test_the_evaluation_and_merge_jobs_do_not_import_torch():
    modules = ["csd.runtime.runner", "csd.runtime.store", "csd.data.voc", "csd.results.metrics", "csd.data.splits", "csd.irn.ir_label",
               "csd.cam.cam_cells", "csd.results.table"]
    code = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    assert run_python(code) == ["False"]


def test_a_failing_job_writes_its_error_to_its_log_and_to_stderr(tmp_path):
    log = tmp_path / "job.log"
    code = ("from csd.runtime.runner import log_to\n"
            f"with log_to({str(log)!r}):\n"
            "    print('started')\n"
            "    raise ValueError('bad key train_cam.epochs')\n")
    out = python(code)
    assert out.returncode != 0
    text = log.read_text()
    assert "started" in text and "ValueError: bad key train_cam.epochs" in text
    assert "ValueError: bad key train_cam.epochs" in out.stderr

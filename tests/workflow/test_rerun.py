"""What Snakemake plans after a code edit, a copy of the checkout or a changed download.

The DAG's outputs are empty stand-ins recorded by `snakemake --touch`, which stores each
job's metadata (its params, and so its code identity) as a real run does: the rerun
decisions for the whole DAG in seconds, without running a stage. fetch_voc runs for real,
on tiny archives from a local mirror."""

import re
from contextlib import contextmanager
from functools import partial

import pytest

from tests.conftest import REPO, TINY, copy_repo, planned_jobs, snakemake, write_config
from tests.data.test_download import md5, voc_archives, voc_settings

pytestmark = pytest.mark.workflow

METHODS = ["irn", "irn_csd", "mct"]  # a base method, a method trained on its masks, a ViT


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    base = tmp_path_factory.mktemp("rerun")
    repo = copy_repo(REPO, base / "repo")
    work = base / "work"
    work.mkdir()
    config = write_config(base / "tiny.yaml", dict(TINY, methods=METHODS))
    run = partial(snakemake, work, configs=[config], snakefile=repo / "Snakefile")
    listed = run("-n", "-F").stdout
    for line in re.findall(r"^\s+(?:output|benchmark): (.*)$", listed, re.M):
        for name in line.split(", "):
            path = work / name
            if "." in path.name:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:  # the DAG's directory outputs (data/toyvoc, shards/0, cam/all) have no suffix
                path.mkdir(parents=True, exist_ok=True)
    run("--touch", "-F", "--cores", "1")
    return {"repo": repo, "work": work, "config": config, "run": run, "base": base}


def nothing_to_do(proc):
    return "Nothing to be done" in proc.stdout + proc.stderr


@contextmanager
def edited(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_text(text)


def test_a_code_edit_is_a_params_change(stand_in):
    run = stand_in["run"]
    assert nothing_to_do(run("-n"))
    metrics = stand_in["repo"] / "csd/results/metrics.py"
    with edited(metrics, "\nimport", "\n_EDITED = True\nimport"):
        # the repository's profile, and Snakemake's own default rerun triggers (all)
        for text in (run("-n").stdout, run("-n", "--workflow-profile", "none").stdout):
            rules = re.search(r"params have changed since last execution:\n\s+(.*)", text)
            assert rules and "eval_cam" in rules.group(1).split(", "), text[-3000:]


def test_comments_docstrings_and_new_file_dates_plan_nothing(stand_in):
    repo, run = stand_in["repo"], stand_in["run"]
    io, script = repo / "csd/runtime/io.py", repo / "workflow/scripts/eval_cam.py"
    first_line = io.read_text().splitlines()[0]
    with edited(io, first_line, f"{first_line[:-3]} (edited).\"\"\"\n# a new comment"), \
            edited(script, "import job\n", "import job  # a comment in a workflow script\n"):
        assert nothing_to_do(run("-n"))
    for path in [*repo.glob("csd/**/*.py"), *repo.glob("workflow/**/*"), *repo.glob("config/*")]:
        path.touch()
    assert nothing_to_do(run("-n"))
    # a copy of the checkout (new dates, another path) runs on the same results
    copy = copy_repo(repo, stand_in["base"] / "copy", fresh_dates=True)
    assert nothing_to_do(snakemake(stand_in["work"], "-n", configs=[stand_in["config"]],
                                   snakefile=copy / "Snakefile"))


@pytest.mark.parametrize("module, planned, not_planned, classifiers", [
    # the random walk (IRN's training and masks imports it): every method's IRN and masks,
    # then irn_csd's classifier (on irn's masks), not the CAMs of irn and mct
    ("irn/random_walk", {(rule, m) for rule in ("train_irn", "make_sem_seg") for m in METHODS},
     {(rule, m) for rule in ("make_cam", "cam_to_ir_label") for m in ("irn", "mct")},
     {"irn_csd"}),
    ("methods/csd/losses", {("train_cam", "irn_csd"), ("make_cam", "irn_csd")},  # CSD: its run
     {("make_cam", m) for m in ("irn", "mct")}, {"irn_csd"}),
    ("methods/mct/train_mct", {("train_cam", "mct"), ("make_cam", "mct")},  # MCTformer: its run
     {("make_cam", m) for m in ("irn", "irn_csd")}, {"mct"}),
])
def test_a_code_edit_plans_the_stages_that_run_it(stand_in, module, planned, not_planned,
                                                   classifiers):
    path = stand_in["repo"] / f"csd/{module}.py"
    with edited(path, "\nimport", "\n_EDITED = True\nimport"):
        jobs = planned_jobs(stand_in["run"]("-n"))
    assert planned <= jobs and not not_planned & jobs
    assert {m for rule, m in jobs if rule == "train_cam"} == classifiers
    assert not {rule for rule, _ in jobs} & {"make_toyvoc", "build_splits"}


def test_a_thin_script_edit_plans_its_rule(stand_in):
    script = stand_in["repo"] / "workflow/scripts/train_irn.py"
    with edited(script, "\nwith", "\n_EDITED = True\nwith"):
        jobs = planned_jobs(stand_in["run"]("-n"))
    assert {("train_irn", m) for m in METHODS} <= jobs
    # upstream of it, nothing (irn_csd trains on irn's masks, so its CAMs do rerun)
    assert not {(rule, m) for rule in ("train_cam", "make_cam", "cam_to_ir_label")
                for m in ("irn", "mct")} & jobs


def voc_config(tmp_path, blobs, **voc):
    """The tiny config on the VOC dataset, its archives copied from a local mirror."""
    voc = {**voc_settings("http://127.0.0.1:9", blobs, test_md5=md5(blobs["test"]),
                          mirror=str(tmp_path / "mirror"), test_split=False),
           "download_dir": str(tmp_path / "downloads"), **voc}
    path = tmp_path / f"voc{len(list(tmp_path.glob('voc*.yaml')))}.yaml"
    return write_config(path, dict(TINY, methods=["irn"], dataset={"name": "voc", "voc": voc}))


def test_only_another_archive_reruns_the_download_and_it_keeps_the_tree(stand_in, tmp_path):
    blobs = voc_archives(tmp_path / "mirror")
    work = tmp_path / "work"
    work.mkdir()
    run = partial(snakemake, work, snakefile=stand_in["repo"] / "Snakefile")
    record = "data/voc/fetched.json"
    config = voc_config(tmp_path, blobs)
    run("--cores", "1", record, configs=[config])
    data = work / "data/voc"
    jpeg = data / "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg"
    extracted_at = jpeg.stat().st_mtime_ns

    # Its code, the code it imports, its script: none makes it planned.
    repo = stand_in["repo"]
    with edited(repo / "csd/data/download.py", "\nimport", "\n_EDITED = True\nimport"), \
            edited(repo / "csd/runtime/io.py", "\nimport", "\n_EDITED = True\nimport"), \
            edited(repo / "workflow/scripts/fetch_voc.py", "\nwith", "\n_EDITED = True\nwith"):
        jobs = planned_jobs(run("-n", configs=[config]))
    assert ("build_splits", None) in jobs and ("fetch_voc", None) not in jobs
    # Nor where the archives come from or are kept.
    moved = voc_config(tmp_path, blobs, download_dir=str(tmp_path / "elsewhere"), mirror=None)
    assert nothing_to_do(run("-n", record, configs=[moved]))

    # Another archive (here: the test split's) does; the extracted tree stays as it is.
    (data / "mine.txt").write_text("kept")
    more = voc_config(tmp_path, blobs, test_split=True)
    assert ("fetch_voc", None) in planned_jobs(run("-n", record, configs=[more]))
    run("--cores", "1", record, configs=[more])
    assert (data / "VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt").exists()
    assert (data / "mine.txt").read_text() == "kept"  # not deleted by Snakemake
    assert jpeg.stat().st_mtime_ns == extracted_at  # not extracted again
    assert '"test"' in (data / "fetched.json").read_text()
    assert nothing_to_do(run("-n", record, configs=[more]))

"""Snakemake-level checks: lint, dry runs of the shipped configs."""

import re

import pytest
import yaml

from tests.conftest import REPO, planned_jobs, snakemake


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


@pytest.mark.parametrize("configs, expected_rules", [
    ([], {"fetch_voc", "build_splits"}),
    ([REPO / "config/demo.yaml"], {"make_toyvoc", "build_splits"}),
])
def test_dry_run_of_shipped_configs(tmp_path, configs, expected_rules):
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", configs=configs)
    table = proc.stdout + proc.stderr
    for rule in expected_rules:
        assert rule in table, table
    if configs:  # the demo never downloads
        assert "fetch_voc" not in table
    # one classifier per method (irn, irn_csd, irn_cda, mct, mct_csd) and seed
    assert re.search(r"^train_cam\s+5\s*$", table, re.M), table


def test_dry_run_of_the_benchmark_runs_five_methods_on_three_seeds(tmp_path):
    proc = snakemake(tmp_path, "-n", configs=[REPO / "config/benchmark.yaml"])
    text = proc.stdout + proc.stderr
    assert re.search(r"^train_cam\s+15\s*$", text, re.M), text
    # one pretraining of each network serves every method and seed
    assert re.search(r"^pretrain_backbone\s+1\s*$", text, re.M), text
    assert re.search(r"^pretrain_vit\s+1\s*$", text, re.M), text
    # its own directories: the demo (results/, data/, logs/) never overwrites it
    assert "results/benchmark/table.csv" in text
    assert "data/benchmark/splits/toyvoc/train_aug.txt" in text
    assert "logs/benchmark/irn/seed0/train_cam.log" in text
    for method in ("irn", "irn_csd", "irn_cda", "mct", "mct_csd"):
        for seed in (0, 1, 2):
            assert f"results/benchmark/{method}/seed{seed}/mask_metrics.json" in text


@pytest.mark.parametrize("job_threads, pretrain_threads, expected", [
    (None, None, {"pretrain_backbone": 2, "other": 2}),
    (1, None, {"pretrain_backbone": 1, "other": 1}),
    (1, 2, {"pretrain_backbone": 2, "other": 1}),
])
def test_job_threads_sets_the_threads_of_every_torch_job(tmp_path, job_threads,
                                                         pretrain_threads, expected):
    """null: a job takes all of --cores; a number caps it, so that jobs run side by side;
    pretrain_backbone.threads overrides it for the pretraining."""
    overlay = tmp_path / "threads.yaml"
    overlay.write_text(yaml.safe_dump({"job_threads": job_threads,
                                       "pretrain_backbone": {"threads": pretrain_threads}}))
    proc = snakemake(tmp_path, "-n", "--cores", "2",
                     configs=[REPO / "config/demo.yaml", overlay])
    text = proc.stdout + proc.stderr
    for rule in ("build_splits", "pretrain_backbone", "train_cam", "make_cam", "train_irn",
                 "make_sem_seg", "train_seg", "infer_seg"):
        block = re.split(rf"^(?:local)?rule {rule}:", text, flags=re.M)[1]
        block = block[:block.index("Shell command")]
        threads = re.search(r"threads: (\d+)", block)  # a dry run omits "threads: 1"
        assert (int(threads.group(1)) if threads else 1) == expected.get(
            rule, expected["other"]), (rule, block)


def job_priorities(text):
    """{(rule, wildcards): priority} from a dry run's job blocks (no line means 0)."""
    priorities = {}
    for block in re.split(r"\n\s*\n", text):
        name = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        wildcards = re.search(r"wildcards: (.*)", block)
        if name and wildcards:
            found = re.search(r"priority: (\d+)", block)
            priorities[name.group(1), wildcards.group(1)] = int(found.group(1)) if found else 0
    return priorities


def test_the_base_runs_masks_come_first_and_deeplab_last(tmp_path):
    """Round 1 (irn_csd, irn_cda) waits on irn's masks: with cores short, irn's stages up to
    its masks start before any other run's, and every run's mask stages before DeepLab."""
    proc = snakemake(tmp_path, "-n", configs=[REPO / "config/demo.yaml"])
    priorities = job_priorities(proc.stdout + proc.stderr)
    run = "method={}, seed=0"
    for method, expected in (("irn", 2), ("mct", 2), ("irn_csd", 1), ("irn_cda", 1),
                             ("mct_csd", 1)):
        for rule in ("train_cam", "train_irn"):
            assert priorities[rule, run.format(method)] == expected, (rule, method)
        assert priorities["make_cam", run.format(method) + ", shard=0"] == expected
        assert priorities["merge_shards", run.format(method) + ", kind=mask"] == expected
        assert priorities["merge_shards", run.format(method) + ", kind=pred_val"] == 0
        assert priorities["train_seg", run.format(method)] == 0


def test_dry_run_of_the_unbiased_control(tmp_path):
    configs = [REPO / "config/benchmark.yaml", REPO / "config/benchmark_control.yaml"]
    proc = snakemake(tmp_path, "-n", configs=configs)
    text = proc.stdout + proc.stderr
    assert re.search(r"^train_cam\s+1\s*$", text, re.M), text
    assert re.search(r"^pretrain_backbone\s+1\s*$", text, re.M), text
    assert "results/benchmark_control/irn/seed0/seed_metrics.json" in text
    assert "data/benchmark_control/pretrain/resnet18.pth" in text
    assert "results/benchmark/" not in text and "data/benchmark/" not in text
    # the control changes the benchmark's world, not its pretraining world
    benchmark, control = (yaml.safe_load(c.read_text()) for c in configs)
    assert control["dataset"]["toyvoc"]["context_strength"] == 0
    assert (control["pretrain_backbone"]["world"]["context_strength"]
            == benchmark["dataset"]["toyvoc"]["context_strength"])


def gpu_rules():
    """Rules that claim the `gpu` resource (`gpu=GPU`) in workflow/rules/*.smk."""
    rules = set()
    for path in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name, body = block.split(":", 1)
            if re.search(r"^\s+gpu=GPU,", body, re.M):
                rules.add(name.strip())
    return rules


def test_slurm_profile_gives_every_gpu_rule_a_gpu_and_matching_threads():
    import yaml

    assert gpu_rules() == {"pretrain_backbone", "pretrain_vit", "train_cam", "make_cam", "train_irn", "make_sem_seg", "train_seg",
                           "infer_seg"}
    for path in ("profiles/slurm/config.yaml", "tests/workflow/slurm_profile/config.yaml"):
        profile = yaml.safe_load((REPO / path).read_text())
        resources, threads = profile["set-resources"], profile["set-threads"]
        for rule in gpu_rules():
            assert resources[rule]["gpu"] == 1, (path, rule)
            assert resources[rule]["cpus_per_gpu"] == threads[rule], (path, rule)
            assert resources[rule]["mem_mb"] > 0
    user = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert user["executor"] == "slurm"
    assert {"slurm_partition", "slurm_account", "runtime", "mem_mb"} <= set(
        user["default-resources"])
    # Test-cluster settings stay out of the user profile (sacct status, account check).
    assert not {key for key in user if key in ("slurm-status-command", "slurm-no-account",
                                               "slurm-init-seconds-before-status-checks")}


def test_dry_run_with_the_slurm_profile(tmp_path):
    """What `snakemake --workflow-profile profiles/slurm` would submit: GPU rules on the GPU
    partition with one GPU and their set threads (a dry run does not show which rules are
    local: tests/workflow/test_slurm.py checks that on a real cluster)."""
    proc = snakemake(tmp_path, "-n", "--workflow-profile", str(REPO / "profiles/slurm"),
                     configs=[REPO / "config/demo.yaml"])
    text = proc.stdout + proc.stderr
    block = text[text.index("rule train_cam:"):]
    block = block[:block.index("Shell command")]
    assert "threads: 8" in block and "gpu=1" in block and "cpus_per_gpu=8" in block
    assert "slurm_partition=gpu" in block and "slurm_account=myproject" in block
    block = text[text.index("rule eval_cam:"):]
    block = block[:block.index("Shell command")]  # a CPU rule: the default resources
    assert "slurm_partition=cpu" in block and "mem_mb=8000" in block and "gpu" not in block


def test_every_rule_hashes_the_script_it_runs_as_its_code():
    """A rule's `code` param (common.smk, code_of) names the rule's own script; fetch_voc
    has none: its archives alone decide whether it reruns (tests/workflow/test_rerun.py)."""
    common = (REPO / "workflow/rules/common.smk").read_text()
    rules = 0
    for path in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name, body = block.split(":", 1)
            script = re.search(r'script:\s+"\.\./scripts/(\w+)\.py"', body).group(1)
            code = re.search(r"^ +code=(.*),$", body, re.M)
            rules += 1
            if name == "fetch_voc":
                assert code is None and "code_of" not in body
                continue
            expr = code.group(1)
            if re.fullmatch(r"\w+", expr):  # a function of common.smk
                expr = common[common.index(f"def {expr}("):].split("\ndef ", 1)[0]
            assert f'code_of("{script}"' in expr, (name, expr)
    assert rules >= 18


def test_an_empty_train_list_stops_the_run_in_build_splits(tmp_path):
    # Before any training (issue: an empty train.txt ran the whole DAG and died in overlays).
    from tests.conftest import write_config
    from tests.data.test_splits import make_dataset

    voc, sbd = make_dataset(tmp_path / "data")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("")
    config = write_config(tmp_path / "c.yaml", {"dataset": {"name": "voc", "voc": {
        "voc_root": str(voc), "sbd_root": str(sbd), "expected_counts": None}}})
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, "--cores", "1", configs=[config], check=False)
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert re.search(r"^  \S+/ImageSets/Segmentation/train.txt: the split lists no images$",
                     log, re.M), log
    splits = work / "data" / "splits"
    assert not splits.exists() or not any(splits.rglob("*.txt"))
    assert not (work / "results").exists()


def test_the_masks_target_runs_every_method_and_seed_to_its_masks_without_deeplab(tmp_path):
    proc = snakemake(tmp_path, "-n", "masks", configs=[REPO / "config/benchmark.yaml"])
    text = proc.stdout + proc.stderr
    jobs = planned_jobs(proc)
    assert not {rule for rule, _ in jobs} & {"train_seg", "infer_seg", "eval_seg", "test_archive"}, jobs
    for method in ("irn", "irn_csd", "irn_cda"):
        assert ("make_sem_seg", method) in jobs and ("train_cam", method) in jobs
        for seed in (0, 1, 2):
            assert f"results/benchmark/{method}/seed{seed}/mask_metrics.json" in text
    assert "results/benchmark/masks_table.csv" in text
    assert "results/benchmark/table.csv" not in text

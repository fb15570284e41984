"""GPU claiming: concurrent GPU jobs never share a device; a dead job frees its device."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from csd.runtime.device import claim_device

CLAIM = textwrap.dedent("""
    import sys, time
    from csd.runtime.device import claim_device
    claim_device({locks!r})
    sys.stdout.flush()
    time.sleep(float(sys.argv[1]))
""")


def start_claimer(tmp_path, seconds, gpus="2"):
    script = CLAIM.format(locks=str(tmp_path / "locks"))
    env = dict(os.environ, CSD_FAKE_GPUS=gpus)
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen([sys.executable, "-c", script, str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def claimed_index(line):
    match = re.search(r"claimed cuda:(\d+)", line)
    assert match, line
    return int(match.group(1))


def test_no_cuda_falls_back_to_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CSD_FAKE_GPUS", "0")
    lines = []
    assert claim_device(tmp_path / "locks", log=lines.append).type == "cpu"
    assert "cpu" in lines[0]


def test_claims_are_exclusive_and_released_when_the_job_dies(tmp_path):
    first = start_claimer(tmp_path, 60)
    first_line = first.stdout.readline()
    second = start_claimer(tmp_path, 60)
    second_line = second.stdout.readline()
    assert {claimed_index(first_line), claimed_index(second_line)} == {0, 1}
    third = start_claimer(tmp_path, 0)
    _, err = third.communicate(timeout=60)
    assert third.returncode != 0 and "all 2 GPUs" in err
    first.kill()  # the kernel drops a dead process's flock
    first.wait()
    fourth = start_claimer(tmp_path, 0)
    out, _ = fourth.communicate(timeout=60)
    assert claimed_index(out) == claimed_index(first_line)
    second.kill()
    second.wait()


def test_slurm_devices_are_used_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CSD_FAKE_GPUS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    lines = []
    # Simulated devices compute on the CPU; a real run gets cuda:0, SLURM's device 3.
    assert claim_device(tmp_path / "locks", log=lines.append).type == "cpu"
    assert lines == ["device: SLURM set CUDA_VISIBLE_DEVICES=3"]
    assert not (tmp_path / "locks").exists()  # no lock: SLURM already gave the device
    # Two jobs of one SLURM node each use their own device, even with both locks taken.
    holder = start_claimer(tmp_path, 60, gpus="1")
    try:
        assert claimed_index(holder.stdout.readline()) == 0
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
        claim_device(tmp_path / "locks", log=lines.append)
        assert lines[-1] == "device: SLURM set CUDA_VISIBLE_DEVICES=1"
    finally:
        holder.kill()
        holder.wait()


def test_slurm_job_without_a_gpu_falls_back_to_the_locks(tmp_path, monkeypatch):
    """A SLURM job that got no GPU (no CUDA_VISIBLE_DEVICES) claims one like a local job."""
    monkeypatch.setenv("CSD_FAKE_GPUS", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lines = []
    claim_device(tmp_path / "locks", log=lines.append)
    assert claimed_index(lines[0]) in (0, 1)
    assert (tmp_path / "locks" / f"gpu{claimed_index(lines[0])}.lock").exists()


def test_three_devices_a_dead_holder_frees_exactly_its_own(tmp_path):
    """CSD_FAKE_GPUS=3: three live jobs hold 0, 1, 2 (each lock names its holder); killing
    the holder of 1 lets the next job take 1 and only 1."""
    holders = []
    try:
        for _ in range(3):  # one at a time, so that each takes the lowest free device
            proc = start_claimer(tmp_path, 60, gpus="3")
            holders.append((claimed_index(proc.stdout.readline()), proc))
        assert [index for index, _ in holders] == [0, 1, 2]
        for index, proc in holders:  # a failed claim by a later job did not erase the pid
            assert (tmp_path / "locks" / f"gpu{index}.lock").read_text() == f"{proc.pid}\n"
        holders[1][1].kill()
        holders[1][1].wait()
        late = start_claimer(tmp_path, 60, gpus="3")
        holders.append((claimed_index(late.stdout.readline()), late))
        assert holders[-1][0] == 1
        again = start_claimer(tmp_path, 0, gpus="3")  # 0, 2 and now 1 are held
        _, err = again.communicate(timeout=60)
        assert again.returncode != 0 and "all 3 GPUs" in err
    finally:
        for _, proc in holders:
            proc.kill()
            proc.wait()


SNAKEFILE = textwrap.dedent("""
    rule all:
        input: expand("done/{i}.txt", i=range(4))

    rule gpu_job:
        output: "done/{i}.txt"
        resources: gpu=1
        run:
            import time
            from csd.runtime.device import claim_device
            lines = []
            claim_device("locks", log=lines.append)
            start = time.time()
            time.sleep(2)
            with open(output[0], "w") as f:
                f.write(f"{lines[0]}\\t{start}\\t{time.time()}\\n")
""")


@pytest.mark.workflow
def test_four_gpu_jobs_on_two_devices_never_share(tmp_path):
    """4 concurrent jobs with --resources gpu=2 (and cores for all 4): each job holds a
    distinct device for its whole life."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = dict(os.environ, CSD_FAKE_GPUS="2")
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources",
                           "gpu=2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spans = []
    for i in range(4):
        line, start, end = (tmp_path / f"done/{i}.txt").read_text().strip().split("\t")
        spans.append((claimed_index(line), float(start), float(end)))
    for a in range(4):
        for b in range(a + 1, 4):
            if spans[a][0] == spans[b][0]:
                assert spans[a][2] <= spans[b][1] or spans[b][2] <= spans[a][1], spans
    # Two devices were actually used side by side.
    assert {s[0] for s in spans} == {0, 1}

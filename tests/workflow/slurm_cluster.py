"""A one-node SLURM cluster from Debian's packages, for tests and benchmarks (needs root).

    cluster = SlurmCluster(tmp_dir, gpus=2)
    cluster.start()      # slurmctld -D and slurmd -D in the background, waits for `idle`
    ...                  # sbatch / snakemake --executor slurm
    cluster.stop()       # only the two daemons it started, by PID

The recipe (auth/none, no slurmdbd, fake GPU GRES on character devices, MinJobAge >= 3x the
executor's first status check) is /work/shared/spec/slurm-test.md's.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client"]
TOOLS = ["slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "srun"]


def install():
    """Install the SLURM daemons and clients with apt if missing; return None when they are
    there, else the reason they could not be installed."""
    if os.geteuid() != 0:
        return "not root: cannot install or run the SLURM daemons"
    if all(shutil.which(tool) for tool in TOOLS):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(cmd[:2])} failed: {error}"
        if proc.returncode != 0:
            return f"{' '.join(cmd[:2])} failed: {proc.stderr.strip()[-500:]}"
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    return f"installed {PACKAGES} but {missing} not on PATH" if missing else None


def free_port():
    """A TCP port nobody listens on now (two clusters on one machine must not share one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_memory_mb():
    """MemTotal minus 1 GiB, in MB: what slurmd must find to accept the node."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    def __init__(self, root, gpus=2, min_job_age=300):
        self.root = Path(root)
        self.gpus = gpus
        self.min_job_age = min_job_age
        self.host = socket.gethostname().split(".")[0]
        self.procs = []
        # The jobstep plugin drops SLURM_* (SLURM_CONF too) before its `srun` inside a job:
        # an `srun` first on PATH puts it back, so that nothing goes to /etc/slurm.
        self.env = dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"),
                        PATH=f"{self.root / 'bin'}:{os.environ['PATH']}")

    def write_config(self):
        root = self.root
        for sub in ("state", "spool", "log", "run", "bin"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        srun = root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={root / "slurm.conf"} exec '
                        f'{shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)
        devices = []
        for i in range(self.gpus):  # GRES files must be character devices (here: /dev/null's)
            device = Path(f"/dev/fakegpu{i}")
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))
            devices.append(device)
        conf = f"""
ClusterName=csdtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge={self.min_job_age}
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={node_memory_mb()} \
Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        (root / "slurm.conf").write_text(conf.lstrip())
        last = len(devices) - 1
        (root / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.host} Name=gpu File=/dev/fakegpu[0-{last}]\n")

    def state(self):
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True,
                              text=True, timeout=30)
        return proc.stdout.strip()

    def start(self, timeout=60):
        self.write_config()
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(self.root / "log" / f"{cmd[0]}.out", "w")
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited; see {self.root}/log:\n{self.logs()}")
            if self.state() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"node not idle after {timeout} s ({self.state()!r}):\n"
                           f"{self.logs()}")

    def job_ids(self):
        proc = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                              text=True, timeout=30)
        return proc.stdout.split()

    def logs(self):
        return "\n".join(p.read_text()[-2000:] for p in sorted((self.root / "log").iterdir()))

    def stop(self):
        """Cancel the jobs still on this cluster (all submitted through it), stop the daemons
        this object started (by PID), then reap them."""
        jobs = self.job_ids() if self.procs and self.procs[0].poll() is None else []
        if jobs:  # e.g. after a run killed by its timeout
            subprocess.run(["scancel", "--full", "--quiet", *jobs], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + 30  # slurmstepd must report to a live slurmd
            while self.job_ids() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def snakemake_on_slurm(cluster, workdir, config, limit=1200, snakefile=None):
    """Run the workflow on `cluster` with the user profile plus the test profile, bounded by
    `timeout -k 10 -s KILL` (Snakemake ignores SIGTERM while it waits on jobs)."""
    import sys

    repo = Path(__file__).resolve().parents[2]
    cmd = ["timeout", "-k", "10", "-s", "KILL", str(limit), sys.executable, "-m", "snakemake",
           "-s", str(snakefile or repo / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), "--profile", str(repo / "profiles/slurm"),
           "--workflow-profile", str(repo / "tests/workflow/slurm_profile")]
    return subprocess.run(cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True)


def submitted_jobs(proc, workdir):
    """{SLURM job id: rule} of a run: the ids Snakemake logged as submitted, and the rule of
    the SLURM log file each id left under .snakemake/slurm_logs/rule_<rule>/."""
    import re

    logged = set(re.findall(r"submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr))
    files = {path.stem: path.relative_to(Path(workdir) / ".snakemake/slurm_logs").parts[0]
             for path in Path(workdir, ".snakemake/slurm_logs").rglob("*.log")}
    if logged != set(files):
        raise AssertionError(f"job ids logged {sorted(logged)} != SLURM log files "
                             f"{sorted(files)}")
    return {job: rule.removeprefix("rule_") for job, rule in files.items()}

"""The slurm profile on a real single-node Slurm cluster (Debian packages; a private cluster of
scripts/slurm-local.sh in a temporary folder, stopped again at the end): the smoke workflow runs
as Slurm jobs, started with the README's literal `snakemake --profile slurm`, bundles the
re-simulation units into fewer submissions, gives the same data as the local run, and pre-trains
with DDP over two Slurm tasks (``training.devices: 2`` on CPU: one task per device, as on GPUs)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from conftest import REPO, snakemake
from slurm_local import private_cluster

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    # 8 CPUs offered even on a 2-core machine, so that the profile's own requests (pre-training
    # asks for 4 CPUs per task, here 2 tasks) run unchanged; GPUs are switched off through
    # RS3L_SLURM_GPUS below.
    with private_cluster(tmp_path_factory.mktemp("slurm"), env={"RS3L_SLURM_CPUS": "8"}) as cluster:
        yield cluster


def test_smoke_workflow_runs_as_slurm_jobs_and_matches_the_local_run(slurm_cluster, smoke_run, tmp_path,
                                                                     monkeypatch):
    results = tmp_path / "results"
    slurm_logs = tmp_path / "slurm_logs"
    # A fresh HOME with the profile installed as the README's setup installs it.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    res = subprocess.run(["bash", str(REPO / "scripts" / "install-profile.sh")], capture_output=True, text=True,
                         check=True)
    assert (home / ".config" / "snakemake" / "slurm").resolve() == REPO / "workflow" / "profiles" / "slurm", res.stdout
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    monkeypatch.setenv("PATH", slurm_cluster["PATH"])  # the job step's nested srun drops SLURM_CONF
    monkeypatch.setenv("RS3L_SLURM_GPUS", "0")  # no GPUs on this cluster
    # the smoke config with two-device DDP pre-training (CPU ranks, gloo): what a 2-GPU study does
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    # (batch 8: the smoke train split has 40 view pairs, about 20 per rank)
    cfg["training"].update(devices=2, accelerator="cpu", strategy="ddp", batch_size=8)
    configfile = tmp_path / "smoke_ddp.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    start = time.monotonic()
    res = snakemake(
        "--profile", "slurm",
        # what this one-node cluster without accounting needs; the profile's resources stay as they are
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-no-account",
        "--cores", "2",  # bundles run 2 units at a time (the profile's 8 would not fit this node)
        "--jobs", "4",
        "--slurm-keep-successful-logs", "--slurm-logdir", str(slurm_logs),
        results_dir=results, configfile=str(configfile), timeout=1500,
    )
    wall = time.monotonic() - start
    out = res.stdout + res.stderr
    assert "Using profile slurm" in out or "Using profiles slurm" in out, out[:2000]
    submissions = set(re.findall(r"SLURM jobid (\d+)", out))
    assert submissions, out[-3000:]
    # every generation and re-simulation ran inside a Slurm job; the units of each rule in one
    # bundled submission (6 resimulate, 2 generate)
    bundles = {}
    for rule, n in (("resimulate", 6), ("generate", 2)):
        logs = sorted((results / "logs" / rule).glob("*.log"))
        assert len(logs) == n
        jobs = set()
        for log in logs:
            m = re.search(r"running as Slurm job (\d+)", log.read_text())
            assert m, log
            jobs.add(m.group(1))
        assert len(jobs) == 1, (rule, jobs)
        assert jobs <= submissions
        bundles[rule] = jobs.pop()
    # units: every job of the run (Snakemake's job stats) but those it ran locally (localrule ...)
    stats = out[out.index("Job stats:"):]
    total = int(re.search(r"^total\s+(\d+)$", stats, re.M).group(1))
    units = total - len(re.findall(r"^localrule \w+:", out, re.M))
    assert len(submissions) < units, (len(submissions), units)
    info = subprocess.run(["scontrol", "show", "job", bundles["resimulate"]], capture_output=True, text=True).stdout
    bundle = " ".join(re.findall(r"(?:NumCPUs|TimeLimit|MinMemoryNode)=\S+", info))
    print(f"\nslurm: {len(submissions)} submissions for {units} units (6 resimulate units in 1 bundle: {bundle};"
          f" 2 generate units in 1); workflow wall time {wall:.0f} s")
    assert list(slurm_logs.rglob("*.log"))
    # the outputs equal those of the local run
    local = json.loads((smoke_run["results"] / "data" / "manifest.json").read_text())
    remote = json.loads((results / "data" / "manifest.json").read_text())
    assert remote["content_hash"] == local["content_hash"]
    assert (results / "summary" / "results.csv").exists()
    # pre-training ran as one Slurm job of two tasks, one DDP rank each
    log = (results / "logs" / "pretrain.log").read_text()
    ranks = set(re.findall(r"global rank (\d) of world size (\d)", log))
    assert ranks == {("0", "2"), ("1", "2")}, log[-3000:]
    assert json.loads((results / "pretrain" / "summary.json").read_text())["world_size"] == 2
    job = re.search(r"running as Slurm job (\d+)", log)
    assert job, log[:2000]
    info = subprocess.run(["scontrol", "show", "job", job.group(1)], capture_output=True, text=True).stdout
    assert re.search(r"NumTasks=2\b", info), info

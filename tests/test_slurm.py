"""The slurm profile on a real single-node Slurm cluster (Debian packages, started by
scripts/slurm-local.sh): the smoke workflow runs as Slurm jobs and gives the same data
as the local run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO, snakemake

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_cluster():
    if shutil.which("slurmctld") is None:
        pytest.fail("Slurm is not installed: run `bash scripts/setup.sh --with-slurm` (the README's test command does)")
    res = subprocess.run(["bash", str(REPO / "scripts" / "slurm-local.sh"), "start"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    yield res.stdout.strip().splitlines()[-1]


def test_smoke_workflow_runs_as_slurm_jobs_and_matches_the_local_run(slurm_cluster, smoke_run, tmp_path):
    results = tmp_path / "results"
    slurm_logs = tmp_path / "slurm_logs"
    # The repo's slurm profile, plus what a cluster without accounting and GPUs needs.
    res = snakemake(
        "--workflow-profile", "workflow/profiles/slurm",
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-no-account",
        "--slurm-keep-successful-logs", "--slurm-logdir", str(slurm_logs),
        "--default-resources", f"slurm_partition={slurm_cluster}", "mem_mb=1000", "runtime=30",
        "--set-resources", "pretrain:gpu=0", "finetune:gpu=0", "evaluate:gpu=0",
        "pretrain:mem_mb=2000", "finetune:mem_mb=1500", "evaluate:mem_mb=1500", "merge:mem_mb=1500",
        "resimulate:mem_mb=1000", "pretrain:cpus_per_task=1", "finetune:cpus_per_task=1",
        "--jobs", "4",
        results_dir=results, timeout=1500,
    )
    out = res.stdout + res.stderr
    submitted = re.findall(r"SLURM jobid (\d+)|with external jobid '(\d+)'", out)
    assert submitted, out[-3000:]
    # every re-simulation ran inside a Slurm job: the job id is in its log
    logs = sorted((results / "logs" / "resimulate").glob("*.log"))
    assert len(logs) == 6
    for log in logs:
        assert re.search(r"running as Slurm job \d+", log.read_text()), log
    assert list(slurm_logs.rglob("*.log"))
    # the outputs equal those of the local run
    local = json.loads((smoke_run["results"] / "data" / "manifest.json").read_text())
    remote = json.loads((results / "data" / "manifest.json").read_text())
    assert remote["content_hash"] == local["content_hash"]
    assert (results / "summary" / "results.csv").exists()

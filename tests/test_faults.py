"""Faults a Slurm cluster produces, injected on the private single-node Slurm of
scripts/slurm-local.sh and survived: a failing unit inside a re-simulation bundle, a Snakemake
killed with ``kill -9`` while its jobs run, pre-training that reaches its time limit, and a node
that goes down. Each test prints one figure line::

    FAULT <name>: units recomputed N | wall time to recovery S s | manifest hash equal to a clean run's: yes |
    MLflow stage runs left RUNNING: 0

"Units recomputed" counts the units that had finished before the fault and were simulated again
(a unit keeps its fragment's inode when it is reused). The workflow's parent MLflow run stays
RUNNING until the report stage by design, so only stage runs are counted.

    pytest -m faults tests/test_faults.py                        # CI: everything but the real time limit
    RS3L_FAULTS_FULL=1 pytest -m faults tests/test_faults.py     # the full set (adds a few minutes)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, snakemake
from slurm_local import private_cluster

pytestmark = [pytest.mark.faults, pytest.mark.slurm, pytest.mark.slow]

FULL = os.environ.get("RS3L_FAULTS_FULL") == "1"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SMOKE = REPO / "config" / "smoke.yaml"
TIMEOUT = 3600  # per workflow run; a smoke run takes 1-2 min on 2 free cores, much longer on busy ones
# what a one-node cluster without accounting needs; the profile's own settings stay as they are
SLURM_ARGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
              "--slurm-no-account", "--cores", "2", "--jobs", "4")


# ----------------------------------------------------------------------------- helpers

def workflow(results: Path, *args, configfile: Path, profile: Path = PROFILE, **kwargs):
    """The README's cluster command (``snakemake --profile ...``) on ``results``."""
    kwargs.setdefault("timeout", TIMEOUT)
    try:
        return snakemake("--profile", str(profile), *SLURM_ARGS, "--slurm-keep-successful-logs",
                         "--slurm-logdir", str(results.parent / "slurm_logs"), *args,
                         results_dir=results, configfile=str(configfile), **kwargs)
    except AssertionError as exc:  # what the Slurm jobs and the rules wrote, for a failure on a CI machine
        raise AssertionError(f"{exc}\n{job_logs(results)}") from None


def job_logs(results: Path, tail: int = 3000) -> str:
    """The tails of the newest Slurm job logs, the rules' logs and slurmd's log."""
    files = sorted((results.parent / "slurm_logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
    files += sorted((results / "logs").glob("*/*.log"), key=lambda p: p.stat().st_mtime)[-3:]
    conf = os.environ.get("SLURM_CONF")
    if conf:
        files.append(Path(conf).parent / "log" / "slurmd.log")
    out = []
    for f in files:
        try:
            out.append(f"--- {f} (tail)\n{f.read_text(errors='replace')[-tail:]}")
        except OSError as exc:
            out.append(f"--- {f}: {exc}")
    return "\n".join(out)


def start(results: Path, *args, **kwargs) -> tuple[subprocess.Popen, Path]:
    """``workflow`` in the background; returns the process and the file its output goes to."""
    out = results.parent / f"snakemake-{time.monotonic_ns()}.out"
    with open(out, "w") as fh:
        proc = workflow(results, *args, popen=True, stdout=fh, stderr=subprocess.STDOUT, **kwargs)
    return proc, out


def manifest(results: Path) -> Path:
    return results / "data" / "manifest.json"


def content_hash(results: Path) -> str:
    return json.loads(manifest(results).read_text())["content_hash"]


def wait_for(condition, what: str, timeout: float = TIMEOUT, proc: subprocess.Popen | None = None, poll: float = 0.5):
    """Poll ``condition()`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the workflow ended (status {proc.returncode}) before {what}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def fragments(results: Path) -> dict[str, int]:
    """Finished fragments: unit (path below fragments/) -> inode."""
    root = results / "fragments"
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.glob("*/chunk*/*.parquet")}


def receipts(results: Path) -> dict[str, int]:
    """The units that finished (their receipts, which survive Snakemake's clean-up): unit -> inode."""
    root = results / "fragments"
    found = {}
    for p in root.glob("*/chunk*/.receipts/*.parquet.*"):
        unit = p.parent.parent / p.name[:p.name.index(".parquet.") + len(".parquet")]
        found[str(unit.relative_to(root))] = p.stat().st_ino
    return found


def recomputed(finished: dict[str, int], results: Path) -> list[str]:
    """The units of ``finished`` (unit -> inode) whose final fragment is not that file: simulated again."""
    final = fragments(results)
    return sorted(unit for unit, inode in finished.items() if final.get(unit) != inode)


def stage_runs_running(results: Path) -> int:
    db = results / "mlflow.db"
    if not db.exists():
        return 0
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return sum(r.info.status == "RUNNING" and r.data.tags.get("rs3l.stage") != "workflow" for r in runs)


def figure(fault: str, units: list[str], wall: float, same_hash: bool, running: int, extra: str = "") -> None:
    print(f"\nFAULT {fault}: units recomputed {len(units)} | wall time to recovery {wall:.0f} s | manifest hash "
          f"equal to a clean run's: {'yes' if same_hash else 'no'} | MLflow stage runs left RUNNING: {running}"
          + (f" | {extra}" if extra else ""))


def submissions(text: str) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", text)


def job_field(job: str, field: str) -> str:
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return re.search(rf"\b{field}=(\S+)", info).group(1)


def running_bundle(results: Path) -> str | None:
    """The Slurm job of the running re-simulation bundle, once one of its units has finished."""
    if not fragments(results):
        return None
    logs = sorted((results / "logs" / "resimulate").glob("*.log"))
    jobs = {m.group(1) for log in logs if (m := re.search(r"running as Slurm job (\d+)", log.read_text()))}
    running = [j for j in jobs if job_field(j, "JobState") == "RUNNING"]
    return running[0] if running else None


def copy_lhe(clean: dict, results: Path) -> None:
    """The clean run's hard events (same bytes, mtimes kept: generate counts as done)."""
    shutil.copytree(clean["results"] / "lhe", results / "lhe")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    # 8 CPUs offered, as in test_slurm.py; a requeued job waits RS3L_SLURM_CRED_EXPIRE s (Slurm: 120)
    with private_cluster(tmp_path_factory.mktemp("slurm"),
                         env={"RS3L_SLURM_CPUS": "8", "RS3L_SLURM_CRED_EXPIRE": "5"}) as cluster, \
            pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", cluster["SLURM_CONF"])
        mp.setenv("PATH", cluster["PATH"])  # the job step's nested srun drops SLURM_CONF
        mp.setenv("RS3L_SLURM_GPUS", "0")
        yield cluster


@pytest.fixture(scope="module")
def clean(slurm, tmp_path_factory):
    """The smoke simulation with two views (4 units: 2 processes x 2 views) up to the merged data,
    through the slurm profile without faults. The pre-training tests then train in these results
    (their configs change only pre-training)."""
    folder = tmp_path_factory.mktemp("clean")
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["simulation"]["views"] = ["nominal", "seed"]
    config = folder / "faults.yaml"
    config.write_text(yaml.safe_dump(cfg))
    results = folder / "results"
    workflow(results, str(manifest(results)), configfile=config)
    return {"results": results, "hash": content_hash(results), "config": config, "views": cfg["simulation"]["views"]}


# ----------------------------------------------------------------------------- 1. a failing unit

def test_a_failing_unit_costs_one_unit_not_its_bundle(clean, tmp_path):
    results = tmp_path / "results"
    copy_lhe(clean, results)
    views, config = clean["views"], clean["config"]
    proc, out = start(results, str(manifest(results)), configfile=config)

    def unstarted_chunk():
        # once a unit of the bundle finished: an LHE chunk of which some unit has not started yet
        if not fragments(results):
            return None
        for lhe in sorted((results / "lhe").glob("*/chunk*.lhe.gz")):
            unit_logs = [results / "logs" / "resimulate" / f"{lhe.parent.name}_{lhe.name[:-7]}_{v}.r0.log"
                         for v in views]
            if not all(log.exists() for log in unit_logs):
                return lhe
        return None

    # the fault: the chunk's LHE file is corrupted after `generate`, while the bundle runs
    lhe = wait_for(unstarted_chunk, "a unit of the bundle to finish", proc=proc, poll=0.1)
    data = lhe.read_bytes()
    lhe.write_bytes(data[: len(data) // 2])
    assert proc.wait(timeout=TIMEOUT) != 0, "the workflow finished although an LHE file was corrupt"
    failed = out.read_text()
    # the failing unit's error names the unit and the file
    assert f"resimulate unit (LHE file '{lhe}', view" in failed and "is corrupt or truncated" in failed, failed[-4000:]
    # what finished before the failure: every unit of the other chunk, and some of this one's
    finished = receipts(results)
    other = [u for u in finished if not u.startswith(f"{lhe.parent.name}/{lhe.name[:-7]}/")]
    assert other, f"no unit of another chunk finished before the failure: {sorted(finished)}"
    # Snakemake retried the bundle (the rule's retries), each failing unit ran once per submission
    tries = len(submissions(failed))  # the bundle's submissions (generate was done, merge never ran)
    group_logs = "".join(p.read_text() for p in (results.parent / "slurm_logs").rglob("group_resim*/*.log"))
    runs = re.findall(r"localrule resimulate:\n(?:.*\n)*?\s*wildcards: process=(\w+), chunk=(\d+), view=(\w+)",
                      group_logs)
    bad_runs = [r for r in runs if f"{r[0]}/chunk{r[1]}" == f"{lhe.parent.name}/{lhe.name[:-7]}"]
    per_unit = {r: bad_runs.count(r) for r in bad_runs}
    assert per_unit and max(per_unit.values()) <= tries, (per_unit, tries)

    # what the user does: remove the corrupt file (generate writes it again) and run the same command
    lhe.unlink()
    t0 = time.monotonic()
    res = workflow(results, str(manifest(results)), configfile=config)
    wall = time.monotonic() - t0
    again = recomputed(finished, results)
    same = content_hash(results) == clean["hash"]
    figure("failing unit in a resim bundle (corrupt LHE chunk)", again, wall, same, stage_runs_running(results),
           f"submissions: {tries} for the failing bundle (the rule's retries), {len(submissions(res.stdout + res.stderr))}"
           f" in the rerun; {len(finished)} units had finished, each failing unit ran at most once per submission")
    assert again == [], f"units simulated again although they had finished: {again}"
    assert same


# ----------------------------------------------------------------------------- 2. Snakemake killed

def test_a_killed_snakemake_is_restarted_with_the_same_command(clean, tmp_path):
    results = tmp_path / "results"
    copy_lhe(clean, results)
    proc, out = start(results, str(manifest(results)), configfile=clean["config"])
    bundle = wait_for(lambda: running_bundle(results), "a running bundle with a finished unit", proc=proc)
    old_run = json.loads((results / "logs" / "slurm_runs.json").read_text())["runs"][-1]["run_id"]
    proc.send_signal(signal.SIGKILL)  # the fault: kill -9 of the submitting Snakemake
    proc.wait()
    t0 = time.monotonic()
    # its Slurm jobs run on without it
    assert job_field(bundle, "JobState") in ("RUNNING", "COMPLETING"), job_field(bundle, "JobState")
    assert job_field(bundle, "JobName") == old_run
    finished = receipts(results)

    # what the user does: release Snakemake's lock (it cannot tell a dead owner from a live one),
    # then run the same command again
    workflow(results, "--unlock", configfile=clean["config"])
    res = workflow(results, str(manifest(results)), configfile=clean["config"])
    wall = time.monotonic() - t0
    text = res.stdout + res.stderr
    # the restart cancelled the old run's jobs before submitting anything: no output written twice
    assert re.search(rf"rs3l: cancelled .*\b{bundle}\b", text), text[-4000:]
    assert job_field(bundle, "JobState") == "CANCELLED"
    ended = job_field(bundle, "EndTime")
    new = submissions(text)
    assert new and all(job_field(j, "SubmitTime") >= ended for j in new), (ended, new)
    again = recomputed(finished, results)
    same = content_hash(results) == clean["hash"]
    figure("kill -9 of the submitting Snakemake", again, wall, same, stage_runs_running(results),
           f"old bundle job {bundle} cancelled by the restart (ended {ended}), {len(finished)} units had finished")
    assert again == [], f"units simulated again although they had finished: {again}"
    assert same


# ----------------------------------------------------------------------------- 3. time limit (pre-training)

def pretrain_config(clean: dict, tmp_path: Path, **pretrain) -> Path:
    cfg = yaml.safe_load(clean["config"].read_text())
    cfg["pretrain"].update(patience=0, **pretrain)  # every epoch runs: the end is the configured epoch count
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check_one_requeued_training(results: Path, text: str, epochs: int) -> tuple[int, str]:
    """One pretrain submission, requeued by Slurm, resumed from its checkpoint in one MLflow run that
    logged each epoch once. Returns (requeues, Slurm job)."""
    import mlflow

    log = (results / "logs" / "pretrain.log").read_text()
    jobs = set(re.findall(r"running as Slurm job (\d+)", log))
    assert len(jobs) == 1, jobs
    job = jobs.pop()
    assert [j for j in submissions(text) if j == job] == [job] and "Error in rule pretrain" not in text, text[-4000:]
    assert int(job_field(job, "Restarts")) >= 1
    assert "Restoring states from the checkpoint" in log, log[-3000:]
    summary = json.loads((results / "pretrain" / "summary.json").read_text())
    assert summary["requeued"] >= 1 and summary["epochs_trained"] == epochs, summary
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    run = client.get_run(json.loads((results / "pretrain" / "run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["rs3l.requeued"] == str(summary["requeued"])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/loss"))
    assert steps == list(range(epochs)), steps  # resumed: no epoch trained twice, none lost
    # one MLflow run for this training, not one per start of the job
    same_config = [r for r in client.search_runs([run.info.experiment_id])
                   if r.data.tags.get("rs3l.stage") == "pretrain"
                   and r.data.tags.get("rs3l.config_hash") == run.data.tags["rs3l.config_hash"]]
    assert [r.info.run_id for r in same_config] == [run.info.run_id]
    return summary["requeued"], job


def test_pretraining_requeued_on_the_warning_signal_resumes_in_the_same_run(clean, tmp_path):
    results, epochs = clean["results"], 10
    proc, out = start(results, str(results / "pretrain" / "encoder.pt"),
                      configfile=pretrain_config(clean, tmp_path, epochs=epochs))
    log = results / "logs" / "pretrain.log"
    job = wait_for(lambda: (results / "pretrain" / "last.ckpt").exists() and log.exists()
                   and re.search(r"running as Slurm job (\d+)", log.read_text()), "the first epoch's checkpoint",
                   proc=proc).group(1)
    # the fault: Slurm's warning before the time limit, delivered as `--signal=USR1@<s>` does (to the
    # job steps, not the batch shell)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    t0 = time.monotonic()
    assert proc.wait(timeout=TIMEOUT) == 0, out.read_text()[-5000:] + job_logs(results)
    wall = time.monotonic() - t0
    requeued, _ = check_one_requeued_training(results, out.read_text(), epochs)
    figure("pretrain: Slurm's warning signal (scancel --signal=USR1)", [], wall,
           content_hash(results) == clean["hash"], stage_runs_running(results),
           f"requeued {requeued}x, one submission, resumed from its checkpoint, {epochs}/{epochs} epochs in one run")


@pytest.mark.skipif(not FULL, reason="the real time limit takes minutes: RS3L_FAULTS_FULL=1 runs it")
def test_pretraining_past_its_time_limit_is_requeued_until_done(clean, tmp_path):
    # the slurm profile as it is, with a short pre-training time limit and warning
    profile = tmp_path / "profile"
    profile.mkdir()
    text = (PROFILE / "config.yaml").read_text()
    assert text.count("    runtime: 720\n    # Slurm's warning") == 1 and text.count('"--signal=USR1@300"') == 1
    text = text.replace("    runtime: 720\n    # Slurm's warning", "    runtime: 4\n    # Slurm's warning")
    (profile / "config.yaml").write_text(text.replace('"--signal=USR1@300"', '"--signal=USR1@120"'))
    results, epochs = clean["results"], 40
    # another batch size than the other pre-training test: its checkpoint is not resumed here
    cfg = pretrain_config(clean, tmp_path, epochs=epochs)
    c = yaml.safe_load(cfg.read_text())
    c["training"]["batch_size"] = 12
    cfg.write_text(yaml.safe_dump(c))
    t0 = time.monotonic()
    res = workflow(results, str(results / "pretrain" / "encoder.pt"), profile=profile, configfile=cfg)
    wall = time.monotonic() - t0
    requeued, job = check_one_requeued_training(results, res.stdout + res.stderr, epochs)
    assert job_field(job, "TimeLimit") == "00:04:00"
    figure("pretrain: Slurm time limit (4 min, --signal=USR1@120)", [], wall, content_hash(results) == clean["hash"],
           stage_runs_running(results),
           f"requeued {requeued}x, one submission, {epochs}/{epochs} epochs in one MLflow run (whole workflow time)")


# ----------------------------------------------------------------------------- 4. a node goes down

def test_a_node_that_goes_down_requeues_its_job(clean, tmp_path):
    results = tmp_path / "results"
    copy_lhe(clean, results)
    proc, out = start(results, str(manifest(results)), configfile=clean["config"])
    bundle = wait_for(lambda: running_bundle(results), "a running bundle with a finished unit", proc=proc)
    node = job_field(bundle, "NodeList")
    finished = receipts(results)
    try:
        # the fault: the node is marked down under the running job
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=rs3l-fault-test"], check=True)
        t0 = time.monotonic()
        wait_for(lambda: int(job_field(bundle, "Restarts")) >= 1, "Slurm to requeue the job", timeout=120)
    finally:
        # the node comes back (ReturnToService=2 does it once slurmd answers; otherwise an admin's resume)
        state = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True, text=True).stdout
        if "down" in state:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    assert proc.wait(timeout=TIMEOUT) == 0, out.read_text()[-5000:] + job_logs(results)
    wall = time.monotonic() - t0
    text = out.read_text()
    # the same Slurm job finished the bundle: Snakemake waited for it, no retry, no second submission
    bundles = [j for j in submissions(text) if "resim" in job_field(j, "Comment")]
    assert bundles == [bundle], (bundles, bundle)
    assert "Trying to restart" not in text and job_field(bundle, "JobState") == "COMPLETED"
    again = recomputed(finished, results)
    same = content_hash(results) == clean["hash"]
    figure(f"node {node} down under a running bundle", again, wall, same, stage_runs_running(results),
           f"bundle job {bundle} requeued by Slurm (Restarts={job_field(bundle, 'Restarts')}), {len(finished)} "
           f"units had finished")
    assert again == [], f"units simulated again although they had finished: {again}"
    assert same

"""The private test cluster and the set-up scripts change nothing of the machine outside their own
folders: system Slurm/munge files stay byte-identical, Slurm daemons that are not theirs keep
running, two private clusters run side by side, `stop` stops only what `start` started, and an
existing user profile named `slurm` is never replaced."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_local import REFUSED, REPO, alive, private_cluster, require_slurm, script

INSTALL_PROFILE = REPO / "scripts" / "install-profile.sh"
RS3L_PROFILE = REPO / "workflow" / "profiles" / "slurm"


def run_job(cluster: dict, text: str, via_path: bool = False) -> str:
    """srun a job on ``cluster``: found through SLURM_CONF, or (``via_path``) with no SLURM_CONF at all,
    through the wrappers on the cluster's PATH, as a tool that drops every SLURM_* variable would."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env.update({"PATH": cluster["PATH"]} if via_path else {"SLURM_CONF": cluster["SLURM_CONF"]})
    res = subprocess.run(["srun", "-N1", "-n1", "--time=1", "bash", "-c", f"echo {text} $SLURM_JOB_ID $SLURMD_NODENAME"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def decoys():
    """/etc/slurm/slurm.conf and /etc/munge/munge.key as a system Slurm would have them. Real ones are
    left in place (and put back byte for byte should anything change them); missing ones are created as
    decoys and removed afterwards."""
    files = {Path("/etc/slurm/slurm.conf"): b"# decoy: a system Slurm's config, not rs3l's\nClusterName=decoy\n"
                                            b"SlurmctldHost=decoy-host\nSlurmctldPort=6817\n",
             Path("/etc/munge/munge.key"): os.urandom(1024)}
    saved, created, made_dirs = {}, [], []
    try:
        for path, content in files.items():
            if path.exists():
                st = path.stat()
                saved[path] = (path.read_bytes(), st.st_mode, st.st_uid, st.st_gid)
                continue
            for parent in reversed(path.parents):
                if not parent.exists():
                    parent.mkdir()
                    made_dirs.append(parent)
            path.write_bytes(content)
            path.chmod(0o600)
            created.append(path)
        yield {path: path.read_bytes() for path in files}
    finally:
        for path, (content, mode, uid, gid) in saved.items():
            if not path.exists() or path.read_bytes() != content:
                path.write_bytes(content)
                os.chown(path, uid, gid)
                path.chmod(mode & 0o7777)
        for path in created:
            path.unlink(missing_ok=True)
        for parent in reversed(made_dirs):
            with contextlib.suppress(OSError):
                parent.rmdir()


@pytest.fixture
def foreign_daemons(tmp_path):
    """Processes named like Slurm and munge daemons that are not the private cluster's."""
    procs = []
    try:
        for name in ("slurmd", "slurmctld", "munged"):
            exe = tmp_path / "foreign" / name
            exe.parent.mkdir(exist_ok=True)
            shutil.copy("/bin/sleep", exe)
            procs.append(subprocess.Popen([str(exe), "600"]))
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.slurm
def test_private_cluster_leaves_system_files_and_other_daemons_alone(decoys, foreign_daemons, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    with private_cluster(folder) as cluster:
        conf = Path(cluster["SLURM_CONF"]).read_text()
        for port in ("SlurmctldPort=6817", "SlurmdPort=6818"):
            assert port not in conf
        assert f"AuthInfo=socket={folder}/munge/munge.socket" in conf
        node = socket.gethostname().split(".")[0]
        assert re.fullmatch(rf"job \d+ {node}\n", run_job(cluster, "job"))
        assert re.fullmatch(rf"job without SLURM_CONF \d+ {node}\n",
                            run_job(cluster, "job without SLURM_CONF", via_path=True))
    for path, content in decoys.items():
        assert path.read_bytes() == content, f"{path} changed"
    for p in foreign_daemons:
        assert p.poll() is None and alive(p.pid, Path(p.args[0]).name), f"{p.args[0]} was stopped"
    # the cluster's own files stay in its folder
    assert (folder / "log" / "slurmctld.log").exists() and (folder / "munge" / "munge.key").exists()


@pytest.mark.slurm
def test_two_private_clusters_run_side_by_side_and_stop_separately(tmp_path_factory):
    with private_cluster(tmp_path_factory.mktemp("slurm")) as first:
        with private_cluster(tmp_path_factory.mktemp("slurm")) as second:
            assert first["SLURM_CONF"] != second["SLURM_CONF"]
            run_job(first, "first")
            run_job(second, "second")
        # the second one is stopped; the first still runs jobs
        assert all(alive(pid, name) for pid, name in first["pids"].items())
        run_job(first, "first again")


def test_stop_where_nothing_was_started_does_nothing(tmp_path, foreign_daemons):
    require_slurm()
    for folder in (tmp_path / "never-started", tmp_path):
        res = script("stop", folder)
        assert res.returncode == 0 and "nothing to stop" in res.stderr, res.stderr
    assert not (tmp_path / "never-started").exists()
    assert all(p.poll() is None for p in foreign_daemons)


def test_start_refuses_a_folder_that_is_not_its_own(tmp_path):
    require_slurm()
    (tmp_path / "notes.txt").write_text("someone else's\n")
    res = script("start", tmp_path)
    assert res.returncode == REFUSED and "not a slurm-local folder" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --- the slurm profile under the user's config folder ----------------------------------------


def install_profile(home: Path, xdg: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = str(xdg)
    res = subprocess.run(["bash", str(INSTALL_PROFILE)], capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0, res.stderr
    return res


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("where", ["home", "xdg"])
def test_install_profile_leaves_an_existing_user_profile_alone(tmp_path, where):
    home = tmp_path / "home"
    xdg = tmp_path / "xdg" if where == "xdg" else None
    user = (xdg or home / ".config") / "snakemake" / "slurm"
    user.mkdir(parents=True)
    (user / "config.yaml").write_text("executor: slurm\njobs: 7  # the user's own profile\n")
    before = snapshot(tmp_path)
    res = install_profile(home, xdg)
    assert snapshot(tmp_path) == before
    assert "left as it is" in res.stdout and "--profile workflow/profiles/slurm" in res.stdout, res.stdout
    # a link to some other profile is left alone too
    shutil.rmtree(user)
    other = tmp_path / "other-profile"
    other.mkdir()
    user.symlink_to(other)
    res = install_profile(home, xdg)
    assert user.is_symlink() and user.resolve() == other, res.stdout


def test_install_profile_links_rs3l_profile_once(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    res = install_profile(home)
    link = home / ".config" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == RS3L_PROFILE, res.stdout
    res = install_profile(home)
    assert "already linked" in res.stdout
    assert link.resolve() == RS3L_PROFILE
    # XDG_CONFIG_HOME wins over ~/.config
    xdg = tmp_path / "xdg"
    install_profile(home, xdg)
    assert (xdg / "snakemake" / "slurm").resolve() == RS3L_PROFILE


def test_snakemake_finds_the_installed_profile_by_name(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    install_profile(home)
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(home), RS3L_SLURM_GPUS="0", RS3L_PRETRAIN_GPUS="2")
    snakemake = Path(sys.executable).parent / "snakemake"
    res = subprocess.run([str(snakemake), "--profile", "slurm", "-n", "--configfile", "config/smoke.yaml",
                          "--config", f"results_dir={tmp_path / 'results'}", "--slurm-no-account"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Using profile slurm" in out
    # the re-simulation units are bundled into one group job
    assert "group job resim" in out.lower(), out[-3000:]
    # GPUs from the environment: DDP pre-training with one task per GPU, the other rules without
    resources = dict(re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", out, re.M))
    assert "gpu=2, tasks_per_gpu=1" in resources["pretrain"], resources["pretrain"]
    assert "gpu=0" in resources["finetune"] and "gpu=0" in resources["probe"]

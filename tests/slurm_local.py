"""Start and stop the private single-node Slurm cluster of scripts/slurm-local.sh from tests.

``private_cluster(folder)`` starts it in ``folder`` and always stops it again (also when the
test fails or is interrupted), then checks that none of the processes it started is left.
Slurm not installed -> the test fails (the README's test command installs it); the script
refusing to run here (exit status 3) -> the test is skipped with the script's reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
REFUSED = 3
DAEMONS = ("munged", "slurmctld", "slurmd")


def require_slurm() -> None:
    missing = [b for b in (*DAEMONS, "sbatch", "srun", "munge") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"Slurm is not installed ({', '.join(missing)} missing): run `bash scripts/setup.sh --with-slurm`"
                    " (the README's test command does)")


def script(action: str, folder: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action, str(folder)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def recorded_pids(folder: Path) -> dict[int, str]:
    """The daemons the script recorded in its PID files, with slurmctld's helper slurmscriptd."""
    pids = {}
    for name, pidfile in (("munged", "munge/munged.pid"), ("slurmctld", "run/slurmctld.pid"),
                          ("slurmd", "run/slurmd.pid")):
        text = (folder / pidfile).read_text().strip() if (folder / pidfile).exists() else ""
        if text.isdigit():
            pids[int(text)] = name
    for pid, name in list(pids.items()):
        if name == "slurmctld":
            pids.update({kid: _comm(kid) or "?" for kid in _children(pid)})
    return pids


def alive(pid: int, name: str) -> bool:
    """``pid`` still runs as ``name`` (a reused PID with another name does not count)."""
    comm = _comm(pid)
    return comm is not None and comm == name[:15] and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@contextlib.contextmanager
def private_cluster(folder: Path, env: dict | None = None):
    """Yield the environment to use it (``SLURM_CONF``, ``PATH`` with its wrappers first,
    ``RS3L_SLURM_PARTITION``) and ``dir``: the folder, ``pids``: the processes it started."""
    require_slurm()
    folder = Path(folder)
    started = {}
    try:
        res = script("start", folder, env)
        started = recorded_pids(folder)
        if res.returncode == REFUSED:
            pytest.skip(f"scripts/slurm-local.sh refused to start a private Slurm here: {res.stderr.strip()}")
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((folder / "log").glob("*.log")))
        assert res.returncode == 0, f"slurm-local.sh start failed:\n{res.stderr}\n{logs}"
        exports = dict(line.removeprefix("export ").split("=", 1) for line in res.stdout.splitlines()
                       if line.startswith("export "))
        assert exports["SLURM_CONF"] == str(folder / "slurm.conf")
        assert exports["PATH"] == f"{folder}/bin:$PATH"
        exports["PATH"] = exports["PATH"].replace("$PATH", os.environ.get("PATH", ""))
        assert sorted(started.values())[:3] == ["munged", "slurmctld", "slurmd"], started
        yield {**exports, "dir": folder, "pids": started}
    finally:
        res = script("stop", folder)
        deadline = time.monotonic() + 15
        left = started
        while left and time.monotonic() < deadline:
            left = {pid: name for pid, name in started.items() if alive(pid, name)}
            time.sleep(0.2)
        assert res.returncode == 0, res.stderr
        assert not left, f"left running after slurm-local.sh stop: {left}\n{res.stderr}"

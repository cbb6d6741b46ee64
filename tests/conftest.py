"""Shared fixtures. Simulation fixtures are session-scoped: Pythia runs once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rs3l.resolve import load

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def cfg() -> dict:
    """The default config, resolved (defaults filled in)."""
    return load(REPO / "config" / "config.yaml")


@pytest.fixture(scope="session")
def lhe_files(tmp_path_factory, cfg) -> dict:
    """Hard events written once per session: top (t->bqq'), wqq and qcd."""
    from rs3l.physics.generate import generate

    out = tmp_path_factory.mktemp("lhe")
    files = {}
    for process, n in (("top", 160), ("wqq", 160), ("qcd", 60)):
        files[process] = out / f"{process}.lhe.gz"
        generate(cfg, process, n, files[process], chunk=0)
    return files


VENV_BIN = str(Path(sys.executable).parent)


def snakemake(*args, results_dir, configfile="config/smoke.yaml", check=True, timeout=1800, popen=False, **kwargs):
    """Run the workflow from the repo root with the smoke config, results in ``results_dir``.

    With ``popen=True`` it is started in the background and the Popen object returned."""
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    cmd = [str(Path(VENV_BIN) / "snakemake"), "--configfile", configfile, "--config", f"results_dir={results_dir}",
           *args]
    if popen:  # started in the background; kwargs go to subprocess.Popen
        return subprocess.Popen(cmd, cwd=REPO, env=env, **kwargs)
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}")
    return res


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole smoke workflow, run locally once per session: `snakemake --cores 2`."""
    results = tmp_path_factory.mktemp("smoke") / "results"
    res = snakemake("--cores", "2", "--workflow-profile", "workflow/profiles/default", results_dir=results)
    return {"results": results, "stdout": res.stdout, "stderr": res.stderr}


def assert_padding_ignored(enc, x, mask, atol: float = 1e-5):
    """An encoder's embedding does not depend on what padded slots hold (0, 1e6, NaN); returns it."""
    import torch

    with torch.no_grad():
        z = enc(x, mask)
        for fill in (0.0, 1e6, float("nan")):
            x2 = x.clone()
            x2[~mask] = fill
            assert torch.allclose(enc(x2, mask), z, atol=atol), fill
    return z

"""Shared fixtures. Simulation fixtures are session-scoped: Pythia runs once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rs3l import config

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def cfg() -> dict:
    """The default config, resolved (defaults filled in)."""
    return config.load(REPO / "config" / "config.yaml")


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

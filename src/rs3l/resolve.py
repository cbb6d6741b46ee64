"""Resolve a configuration: the schema's defaults (:mod:`rs3l.config`), then every check.

What ``rs3l <stage>`` (:mod:`rs3l.cli`) and the workflow (``workflow/rules/common.smk``) run before
any job: :func:`rs3l.checks.resolve_without_grid`, then the ablation grid's check, which resolves
every variant. Errors are :class:`rs3l.config.ConfigError`, naming the key and what would be right.
"""

from __future__ import annotations

from pathlib import Path

from rs3l import config
from rs3l.checks import resolve_without_grid
from rs3l.evaluation import ablation


def resolve(cfg: dict | None) -> dict:
    """Validate ``cfg``, fill in the schema's defaults, merge the catalogues and run every check
    (cross references, the stages' checks, Pythia settings, the ablation grid). Returns a new dict."""
    cfg = resolve_without_grid(cfg)
    ablation.check(cfg)  # every variant resolves (named in the error), and the held-out view exists
    return cfg


def load(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The config file ``path`` (default ``config/config.yaml``) with top-level ``overrides``, resolved."""
    return resolve(config.read(path, overrides))

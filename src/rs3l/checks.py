"""Every check a configuration passes, run from one place above the stages.

:mod:`rs3l.config` (the core, at the bottom) fills in the schema's defaults and checks what needs
nothing but the config; a check that needs a stage's knowledge lives with that stage as its
``check_config(cfg)`` and is listed in :data:`CHECKS`. A new check goes into the module whose
knowledge it needs, and into this list. :func:`rs3l.resolve.resolve` runs these and then the
ablation grid's check, which resolves each variant with :func:`resolve_without_grid` (so this
module does not import the ablation stage).
"""

from __future__ import annotations

from rs3l import config
from rs3l.physics import detector, lhe_input, pythia
from rs3l.training import augment

# In this order; each raises rs3l.config.ConfigError naming the key and what would be right.
CHECKS = (
    config.check,              # names of views, processes, classes; tasks, splits, science
    config.check_results_dir,  # a folder that can be written (not a file)
    lhe_input.check_config,    # the files of a simulated `lhe` process exist
    detector.check_config,     # the detector and each view's detector overrides describe a detector
    augment.check_config,      # pretrain.augment_views: simulated views and known transforms
    pythia.check_config,       # every Pythia string, asked of Pythia itself (the slowest: last)
)


def resolve_without_grid(cfg: dict | None) -> dict:
    """``cfg`` with its defaults filled in, after every check but the ablation grid's (a new dict)."""
    cfg = config.with_defaults(cfg)
    for check in CHECKS:
        check(cfg)
    return cfg

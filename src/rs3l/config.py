"""The configuration core: read, schema defaults, catalogues, hashes and paths.

The JSON schema (``workflow/schemas/config.schema.yaml``) holds every default; this
module fills them in and checks the cross references that need nothing but the
config itself (names that must refer to defined views, processes and classes).
It sits at the bottom of rs3l and imports no stage: checks that need a stage's
knowledge (detector tables, LHE files, augmentation names, Pythia settings, the
ablation grid) live with that stage, and :func:`rs3l.resolve.resolve` runs them
all, in one place above the stages. Errors name the key and the allowed values,
and are raised before any job starts.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

# the package marker only (a constant; it imports nothing): the simulation code's version is part of its hash
from rs3l.physics import ALGORITHM_VERSION

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "config/config.yaml"
# Maps of named definitions with built-in entries in the schema: a config's entries are added to
# them or replace the entry of that name; `name: null` removes one (see :func:`merge_catalogues`).
# Other maps (finetune.tasks, jetclass.labels, ...) are settings: a config's map replaces the default.
CATALOGUES = ("processes", "views")
# Settings a `parton`-intervention view may change: the shower is shared, so only
# hadronization (and hadron decays) may differ between such views.
HADRONIZATION_PREFIXES = ("StringZ:", "StringPT:", "StringFlav:", "HadronLevel:", "FragmentationSystems:", "ParticleDecays:")


class ConfigError(ValueError):
    """Invalid configuration; the message names the key and what would be right."""


@functools.lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("rs3l").joinpath("config.schema.yaml").read_text()


@functools.lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    # parsed once per process: PyYAML takes about 0.3 s for the 48 kB schema, and every config
    # resolution (an ablation grid resolves each variant several times) needs it
    return yaml.load(_schema_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    """Log a config warning once per process (an ablation grid checks every variant's config several times)."""
    log.warning(message)


def schema() -> dict:
    """The config schema (a fresh copy: validation fills defaults into what it is given)."""
    return copy.deepcopy(_parsed_schema())


def _filling(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _filling(jsonschema.Draft202012Validator)


def _path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def fill_defaults(cfg: dict, sch: dict | None = None, prefix: str = "") -> None:
    """Validate ``cfg`` against the schema (``sch``, default: the whole config schema) and fill in
    its defaults, in place. ConfigError names the key (after ``prefix``) and the allowed values."""
    sch = schema() if sch is None else sch
    # Two passes: defaults of maps such as `views` carry nested defaults (intervention, settings).
    for _ in range(2):
        errors = sorted(_Validator(sch).iter_errors(cfg), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            msg = e.message
            if e.validator == "enum":
                msg = f"{e.instance!r} is not allowed; allowed values: {', '.join(map(str, e.validator_value))}"
            elif e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                msg = f"{e.message}; allowed keys: {', '.join(allowed)}"
            raise ConfigError(f"{prefix}invalid config key '{_path(e)}': {msg}")


def _known(kind: str, name: str, known) -> None:
    if name not in known:
        raise ConfigError(f"unknown {kind} '{name}'; known: {', '.join(known)}")


def check(cfg: dict) -> None:
    """Cross-reference checks that the schema cannot express."""
    sim = cfg["simulation"]
    for pname, proc in cfg["processes"].items():
        _check_process_source(pname, proc)
    for name in sim["processes"]:
        _known("process", name, list(cfg["processes"]))
    for name in sim["views"]:
        _known("view", name, list(cfg["views"]))
    for name in sim["replicas"]:
        if name not in sim["views"]:
            raise ConfigError(f"simulation.replicas names view '{name}', which is not in simulation.views: {', '.join(sim['views'])}")
    for name in sim["view_splits"]:
        if name not in sim["views"]:
            raise ConfigError(f"simulation.view_splits names view '{name}', which is not in simulation.views: "
                              f"{', '.join(sim['views'])}")
        if cfg["views"][name]["draw"]:
            raise ConfigError(f"simulation.view_splits.{name}: a parameter-scan view (views.{name}.draw) covers "
                              f"every event; remove it from simulation.view_splits")
    classes = cfg["classes"]
    for pname, proc in cfg["processes"].items():
        lab = proc["labelling"]
        if lab["kind"] == "resonance":
            for key in ("pdg_id", "n_partons", "label"):
                if key not in lab:
                    raise ConfigError(f"processes.{pname}.labelling: kind 'resonance' needs '{key}'")
            # a catalogue entry that is not simulated may label a class this config does not have
            if lab["label"] not in classes and pname in sim["processes"]:
                raise ConfigError(f"processes.{pname}.labelling.label '{lab['label']}' is not a class; classes: {', '.join(classes)}")
    for vname, view in cfg["views"].items():
        if view["intervention"] == "parton":
            bad = [s for s in view["settings"] if not s.strip().startswith(HADRONIZATION_PREFIXES)]
            if bad:
                raise ConfigError(
                    f"views.{vname}: a 'parton'-intervention view shares the shower, so it may only change "
                    f"hadronization settings ({', '.join(HADRONIZATION_PREFIXES)}); got {bad}")
        if view["intervention"] == "detector" and view["settings"]:
            raise ConfigError(f"views.{vname}: a 'detector'-intervention view re-runs only the detector; "
                              f"put its changes under views.{vname}.detector, not settings")
        for setting, spec in view["draw"].items():
            (kind, (lo, hi)), = spec.items()
            if not lo < hi:
                raise ConfigError(f"views.{vname}.draw.{setting}.{kind}: needs [lo, hi] with lo < hi; got {[lo, hi]}")
            if view["intervention"] == "detector" or (view["intervention"] == "parton"
                                                      and not setting.strip().startswith(HADRONIZATION_PREFIXES)):
                raise ConfigError(f"views.{vname}.draw: a '{view['intervention']}'-intervention view cannot draw "
                                  f"'{setting}' (parton: hadronization settings only, {', '.join(HADRONIZATION_PREFIXES)}; "
                                  f"detector: none)")
    check_pretrain(cfg)
    for c in cfg["pretrain"]["exclude_classes"]:
        if c not in classes:
            raise ConfigError(f"pretrain.exclude_classes: unknown class '{c}'; classes: {', '.join(classes)}")
    if not cfg["finetune"]["label_fractions"] and not cfg["finetune"]["label_counts"]:
        raise ConfigError("finetune: give labelled sets in label_fractions or label_counts (both are empty)")
    made = simulated_classes(cfg)
    for tname, task in cfg["finetune"]["tasks"].items():
        for side in ("signal", "background"):
            for c in task[side]:
                if c not in classes:
                    raise ConfigError(f"finetune.tasks.{tname}.{side}: unknown class '{c}'; classes: {', '.join(classes)}")
                if c in cfg["pretrain"]["exclude_classes"]:
                    # a warning, not an error: probe-only grids (ablation) keep such tasks for the frozen probes
                    _warn_once(f"finetune.tasks.{tname}.{side}: class '{c}' is held out of pre-training "
                               f"(pretrain.exclude_classes) but labelled in this task: fine-tuned arms of it see the "
                               f"class, and its anomaly score in rs3l science is then no longer that of an unseen class")
            if not set(task[side]) & made:
                raise ConfigError(f"finetune.tasks.{tname}.{side}: none of {task[side]} is produced by the simulated "
                                  f"processes {sim['processes']} (they produce {', '.join(sorted(made))})")
    anomaly = cfg["science"]["anomaly"]
    default = {k: v["default"] for k, v in schema()["properties"]["science"]["properties"]["anomaly"]["properties"].items()}
    for key in ("class", "background"):  # the defaults (wqq vs q, g, c, b) may name classes a small config lacks
        names = anomaly[key] if isinstance(anomaly[key], list) else [anomaly[key]]
        for c in names if anomaly[key] != default[key] else []:
            if c not in classes:
                raise ConfigError(f"science.anomaly.{key}: unknown class '{c}'; classes: {', '.join(classes)}")
    if anomaly["class"] in anomaly["background"]:
        raise ConfigError(f"science.anomaly: class '{anomaly['class']}' is also in background {anomaly['background']}")
    for key in ("invariance_views", "parameter_views"):
        for v in cfg["science"][key] or []:
            if v not in cfg["views"]:
                raise ConfigError(f"science.{key}: unknown view '{v}'; known: {', '.join(cfg['views'])}")
    if abs(sum(cfg["merge"]["splits"].values()) - 1.0) > 1e-6:
        raise ConfigError(f"merge.splits must add up to 1; got {cfg['merge']['splits']}")
    if cfg["jets"]["pt_max"] <= cfg["jets"]["pt_min"]:
        raise ConfigError("jets.pt_max must be larger than jets.pt_min")


def _check_process_source(name: str, proc: dict) -> None:
    """Exactly one of ``settings`` (Pythia) and ``lhe`` (external files). Whether an ``lhe`` pattern
    matches files is checked by :func:`rs3l.physics.lhe_input.check_config`."""
    if ("settings" in proc) == ("lhe" in proc):
        raise ConfigError(f"processes.{name}: give exactly one of 'settings' (Pythia generates the hard process) "
                          f"or 'lhe' (path or glob of LHE files); got {'both' if 'lhe' in proc else 'neither'}")
    other = "negative_weights" if "settings" in proc else "pt_hat_min"
    if other in proc:
        kind = "a Pythia ('settings')" if "settings" in proc else "an 'lhe'"
        raise ConfigError(f"processes.{name}.{other} does not apply to {kind} process")


def check_pretrain(cfg: dict) -> None:
    """pretrain settings that depend on each other. (pretrain.augment_views and views_per_jet need the
    augmentations' names: :func:`rs3l.training.augment.check_config`.)"""
    p = cfg["pretrain"]
    for key, values in (("pool", [p["pool"]] if p["pool"] is not None else []), ("pools", p["pools"])):
        for v in values:
            if v > 1 and v != int(v):
                raise ConfigError(f"pretrain.{key}: {v} is neither a fraction (<= 1) of the train jets nor a "
                                  f"whole number of jets")
    if p["pools"] and p["pool"] is not None:
        raise ConfigError(f"pretrain.pools {p['pools']} scans the pool size; leave pretrain.pool null "
                          f"(it is {p['pool']})")
    if p["objective"] == "jepa" and p["projection_head"]:
        raise ConfigError("pretrain.projection_head must be 0 with pretrain.objective 'jepa' (its predictor is the head)")
    if p["objective"] == "clip" and p["projection_head"]:
        raise ConfigError("pretrain.projection_head must be 0 with pretrain.objective 'clip' (the observables MLP "
                          "maps into the encoder's own embedding)")


PARTON_CLASSES = ("q", "c", "b", "g")


def simulated_classes(cfg: dict) -> set[str]:
    """Classes the configured processes can label jets with."""
    made = set()
    for name in cfg["simulation"]["processes"]:
        lab = cfg["processes"][name]["labelling"]
        made |= set(PARTON_CLASSES) if lab["kind"] == "parton" else {lab["label"]}
    return made


def merge_catalogues(cfg: dict, sch: dict | None = None) -> dict:
    """The config with each of :data:`CATALOGUES` merged into the schema's built-in entries.

    An entry a config gives is added to the catalogue, or replaces the built-in entry of that name
    as a whole; ``name: null`` removes an entry. A config that gives no entries is left unchanged
    (and hashes as before). Returns a new dict.
    """
    sch = schema() if sch is None else sch
    out = dict(cfg)
    for key in CATALOGUES:
        given = cfg.get(key)
        if not isinstance(given, dict):  # absent (the schema's default fills it), or a type error for the schema
            continue
        merged = {**copy.deepcopy(sch["properties"][key]["default"]), **copy.deepcopy(given)}
        out[key] = {name: entry for name, entry in merged.items() if entry is not None}
    return out


def with_defaults(cfg: dict | None) -> dict:
    """``cfg`` with its catalogues merged and the schema's defaults filled in, validated against the
    schema (a new dict). The cross references are :func:`check`; every check, the stages' included,
    runs in :func:`rs3l.resolve.resolve`."""
    sch = schema()
    cfg = merge_catalogues(copy.deepcopy(cfg) if cfg else {}, sch)
    fill_defaults(cfg, sch)
    return cfg


def read(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The config file as written (no defaults, no checks), with top-level ``overrides``."""
    path = Path(path or DEFAULT_CONFIG)
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist (use --config to name another)")
    cfg = yaml.safe_load(path.read_text()) or {}
    if overrides:
        cfg.update(overrides)
    return cfg


def check_results_dir(cfg: dict) -> None:
    """``results_dir`` is a folder rs3l can write into, or one it can create. ConfigError naming the key
    and the path otherwise: before any job, instead of a traceback from the first write."""
    path = Path(cfg["results_dir"])
    where = f"results_dir '{cfg['results_dir']}'"
    existing = path
    while not existing.exists() and existing != existing.parent:  # the nearest folder that exists
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "names an existing file" if existing == path else f"is inside '{existing}', which is a file"
        raise ConfigError(f"{where} {what}; results_dir must be a folder (use --config results_dir=<folder>)")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is a folder rs3l cannot write into" if existing == path else \
            f"cannot be created: '{existing}' is not writable"
        raise ConfigError(f"{where} {what} (use --config results_dir=<folder>)")


def __getattr__(name: str):
    # resolve() and load() moved up: they run the stages' checks too, which the core may not import
    if name in ("resolve", "load"):
        raise AttributeError(f"rs3l.config.{name} moved to rs3l.resolve.{name} (it runs every check, the stages' "
                             f"included); rs3l.config.with_defaults only fills in the schema's defaults")
    raise AttributeError(f"module 'rs3l.config' has no attribute '{name}'")


# Where results go is not part of what they are: runs in two folders hash the same.
LOCATION_KEYS = ("results_dir",)


def config_hash(cfg: dict) -> str:
    """Hash of the resolved configuration without its location keys (16 hex digits)."""
    content = {k: v for k, v in cfg.items() if k not in LOCATION_KEYS}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def simulation_hash(cfg: dict) -> str:
    """Hash of everything that determines the simulated data (not training settings).

    Fragments carry it; merge refuses fragments whose hash differs from the config's. It includes
    ``rs3l.physics.ALGORITHM_VERSION``, so fragments made by older simulation code are not reused.
    """
    keys = ("seed", "simulation", "processes", "classes", "views", "detector", "jets")
    content = {**{k: cfg[k] for k in keys}, "algorithm_version": ALGORITHM_VERSION}
    sim = dict(cfg["simulation"])
    if sim.get("view_splits"):
        # which events such a view simulates depends on the split fractions
        content["splits"] = cfg["merge"]["splits"]
    else:
        sim.pop("view_splits", None)  # not given: the hash of configs from before the key existed
    content["simulation"] = sim
    return config_hash(content)


def settings_hash(settings: list[str]) -> str:
    norm = sorted(" ".join(s.split()) for s in settings)
    return hashlib.sha256(json.dumps(norm).encode()).hexdigest()[:12]


def view_instances(cfg: dict) -> list[tuple[str, int]]:
    """All (view, replica) pairs to simulate, in config order."""
    reps = cfg["simulation"]["replicas"]
    return [(v, r) for v in cfg["simulation"]["views"] for r in range(reps.get(v, 1))]


def results_path(cfg: dict, *parts) -> Path:
    return Path(cfg["results_dir"]).joinpath(*map(str, parts))

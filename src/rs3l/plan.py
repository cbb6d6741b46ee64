"""The shape of a run before it starts: merge parts (used by the workflow) and ``rs3l plan``.

Light on imports (no pyarrow, no Pythia): Snakemake imports it at parse time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from rs3l.config import config_hash
from rs3l.physics.lhe_input import is_lhe, n_chunks, source_events


def process_chunks(cfg: dict) -> dict[str, int]:
    """Chunks per simulated process: ``simulation.chunks``, or for an ``lhe`` process as many as its
    events fill (at most that; counted from the files' ``</event>`` tags, see rs3l.physics.lhe_input)."""
    return {p: n_chunks(cfg, p) for p in cfg["simulation"]["processes"]}


def merge_groups(cfg: dict) -> list[tuple[str, int]]:
    """Every (process, chunk) group of fragments, in the order the merge writes them."""
    return [(p, c) for p, n in process_chunks(cfg).items() for c in range(n)]


def merge_parts(cfg: dict) -> list[list[tuple[str, int]]]:
    """The (process, chunk) groups of each parallel merge job: ``merge.chunks_per_part`` consecutive
    groups each (the last part may have fewer). One part gives the single merge's shards exactly."""
    groups, size = merge_groups(cfg), cfg["merge"]["chunks_per_part"]
    return [groups[i:i + size] for i in range(0, len(groups), size)]


def pool_name(pool: float | None) -> str | None:
    """Folder and arm name of one pre-training pool: ``pool2000`` (jets) or ``pool0.1`` (a fraction)."""
    return None if pool is None else f"pool{int(pool)}" if pool > 1 else f"pool{pool:g}"


def pretrain_pools(cfg: dict) -> list:
    """The pool of every pre-training: ``pretrain.pools`` (a scan) or the one ``pretrain.pool`` (None = all)."""
    return list(cfg["pretrain"]["pools"]) or [cfg["pretrain"]["pool"]]


def deep_jobs(cfg: dict) -> dict[str, dict]:
    """The workflow's fine-tuning jobs: {"<task>/<arm>/b<k>": {task, mode, pool, arms: [(labels, seed), ...]}}.

    ``arm`` is the mode, or ``<mode>-pool<n>`` for a pre-trained mode in a pool-size scan (``scratch`` does not
    depend on pre-training and runs once). Each job trains ``finetune.arms_per_job`` arms (0 = all of its
    task and arm) in one process."""
    from rs3l.evaluation.tasks import label_sets

    ft = cfg["finetune"]
    arms = [(t, s) for t in label_sets(cfg) for s in range(ft["seeds"])]
    size = ft["arms_per_job"] or len(arms)
    scan = bool(cfg["pretrain"]["pools"])
    jobs = {}
    for task in ft["tasks"]:
        for mode in ft["modes"]:
            for pool in [None] if mode == "scratch" else pretrain_pools(cfg):
                arm = f"{mode}-{pool_name(pool)}" if scan and mode != "scratch" else mode
                for k in range(0, len(arms), size):
                    jobs[f"{task}/{arm}/b{k // size}"] = {"task": task, "mode": mode, "arm": arm, "pool": pool,
                                                          "arms": arms[k:k + size]}
    return jobs


def merge_hash(cfg: dict) -> str:
    """Hash of what decides the merged data besides the fragments (the ``merge`` section)."""
    return config_hash({"merge": cfg["merge"]})


# ---------------------------------------------------------------------------------------------
# `rs3l plan`: jobs, Slurm submissions, CPU-hours, disk and merged jets of a config, before a run.
# ---------------------------------------------------------------------------------------------

#: Where the figures below come from (printed with the plan).
SOURCE_HERE = ("measured on the 2-core dev VM (2026-11-22), default config, `rs3l generate --events 400` and "
               "`rs3l resimulate` on it (400 events; parton/detector views 200, vincia 60); rates exclude Pythia init")
SOURCE_DESIGN = "DESIGN.md (ttbar, pT-hat > 400 GeV, one core)"

#: Re-simulation rate of the nominal view (default shower, MPI on) per process, events/s on one core.
NOMINAL_RATE = {"qcd": 125.0, "top": 138.0, "wqq": 138.0, "hbb": 135.0}  # hbb: back to back with top, 300 events (a first run under load gave 66)
#: Processes not measured: assumed to cost like a measured one with the same kind of final state.
ASSUMED_LIKE = {"zqq": "wqq", "zbb": "wqq", "hcc": "hbb"}
#: Rate of a kind of view relative to the nominal view, measured on top with the same LHE file, back
#: to back (200 events each; vincia 60): parton and detector views re-run the shared shower.
VIEW_FACTOR = {
    "nominal": (1.0, "-"),
    "mpi_off": (4.0, "DESIGN.md: 280 vs 70 ev/s; here 4.5 (0.3 s vs 1.35 s for 200 events)"),
    "vincia": (7.9 / 148.0, "measured here: 7.9 vs 148 ev/s (19x slower); DESIGN.md ~5 vs 70 ev/s"),
    "parton": (0.96, "measured here: 1.40 s vs 1.35 s for 200 events (shared shower, own hadronization)"),
    "detector": (0.90, "measured here: 1.50 s vs 1.35 s for 200 events (shared generator-level event)"),
}
#: A parameter-scan view (views.<v>.draw) starts a new Pythia per draw_block events: seconds per extra
#: initialisation (top, MPI on; benchmarks/bench_draw.py: 0.9-1.2 s on the loaded 2-core VM).
DRAW_INIT_S = (0.9, "benchmarks/bench_draw.py on the dev VM under load (2026-11-22)")
#: Hard process (generate) rate, events/s, and the fixed cost of every job (Python start, imports,
#: Pythia init), seconds: `rs3l resimulate --max-events 1` takes 1.3 s wall here.
HARD_RATE = (3000.0, SOURCE_DESIGN + "; 12,000-22,000 ev/s here")
JOB_OVERHEAD_S = (1.3, SOURCE_HERE)
#: `rs3l split-lhe` rate (pylhe parse, checks, chunk writing), events/s, without its 1.3 s of imports.
SPLIT_RATE = (1800.0, "measured here: 2000 MadGraph-style t tbar events (gzip) in 1.1 s + 1.3 s imports")
#: Labelled jets per hard event in the nominal view, per class (default jets window 450-1200 GeV).
JETS_PER_EVENT = {
    "qcd": {"g": 0.595, "q": 0.448, "c": 0.015, "b": 0.010},
    "top": {"top": 0.557}, "wqq": {"wqq": 0.520}, "hbb": {"hbb": 0.492},
}
#: Parquet bytes per jet and view (fragment row), per process; LHE bytes per event.
FRAGMENT_BYTES_PER_ROW = {"qcd": 1677, "top": 2062, "wqq": 1350, "hbb": 1832}
LHE_BYTES_PER_EVENT = {"qcd": 104, "top": 385, "wqq": 175, "hbb": 172}
#: Merged shard bytes per row relative to fragment bytes per row (smoke run: 2174 / 2120 B).
SHARD_TO_FRAGMENT = 1.03
#: Merge throughput, jet-view rows per second on one core (benchmarks/bench_scale.py).
MERGE_ROWS_PER_S = (45000.0, "benchmarks/bench_scale.py on the dev VM: 128k jets x 4 views in 10.3 CPU s")


#: Training throughput of one job in a local run on the dev VM (2 cores, two jobs at a time), views (jets) per
#: second of forward + backward at batch 128, for each encoder at its schema-default size. particlenet:
#: the default run of 2026-12-06 (commit e5da51d): pre-training 89.5k views in 188 CPU s with validation,
#: fine-tuning arms at 0.23 s per step of 128 jets (cProfile); the others scaled by the ratios of DESIGN.md's
#: 2-thread benchmark (particlenet 826, transformer 1667, deepsets 6052 views/s; particle_transformer assumed).
TRAIN_RATE = ({"particlenet": 550.0, "transformer": 1110.0, "deepsets": 4030.0, "particle_transformer": 400.0},
              "default run 2026-12-06, one job of two on 2 cores, batch 128 (particle_transformer: assumed)")
#: Inference (eval mode, no gradients, batches of 256) over training, same job: the default run's fine-tuning
#: arms scored 7 test views of ~480 jets in 4.4 s (~780 jets/s).
INFER_FACTOR = 1.4
#: ParticleNet's cost per jet grows about linearly with its EdgeConv channels summed over blocks (measured
#: side by side, one thread, batch 128, default data: [32, 32] 0.075 s, [32, 32, 32] 0.136 s, [32, 64] 0.139 s,
#: [32, 64, 64] 0.245 s per step): the rate above is for the schema default [32, 64, 64] (sum 160).
PARTICLENET_CHANNELS = 160
#: A fine-tuning arm trains to its best step, taken as max(20 steps, 10 epochs of its labelled set) (the default
#: run's arms: best at 10-30 steps below one batch per epoch, 40-120 steps at 905 labelled jets), then
#: patience x val_every steps more, at least min_steps, at most max_steps; plus this much fixed cost per arm
#: (MLflow runs, labels, model file; the MLflow model export of the first seed averaged over seeds) and per
#: job (imports, data loading).
ARM_OVERHEAD_S, FINETUNE_JOB_S = 4.0, 15.0
#: The probe job: one convex or kNN fit per (task, labelled set, seed, probe, encoder), seconds each.
PROBE_FIT_S = 0.5


def train_rate(cfg: dict) -> float:
    """Training views/s of ``pretrain.encoder`` at its configured size (:data:`TRAIN_RATE`)."""
    enc = cfg["pretrain"]["encoder"]
    rate = TRAIN_RATE[0].get(enc, min(TRAIN_RATE[0].values()))
    if enc == "particlenet":
        rate *= PARTICLENET_CHANNELS / sum(cfg["encoders"]["particlenet"]["channels"])
    return rate


def arm_steps(ft: dict, n_labelled: float, batch: int) -> int:
    """Optimiser steps of a fine-tuning arm until early stopping (see :data:`ARM_OVERHEAD_S`)."""
    best = max(20, 10 * -(-int(n_labelled) // batch))
    return min(ft["max_steps"], max(ft["min_steps"], best + ft["patience"] * ft["val_every"]))


def training_seconds(cfg: dict, jets: dict) -> dict[str, float]:
    """Estimated CPU seconds of pretrain, finetune, probe and science on this kind of machine (2 cores),
    from the merged jets per split and class (``plan()['jets']``). Pre-training at its full epoch budget
    (an upper bound: early stopping ends sooner)."""
    from rs3l.evaluation.tasks import label_sets, parse_labels

    t, p, ft, ev = cfg["training"], cfg["pretrain"], cfg["finetune"], cfg["evaluate"]
    rate = train_rate(cfg)
    infer = rate * INFER_FACTOR
    views = len(cfg["simulation"]["views"])
    n = {s: sum(v.values()) for s, v in jets.items()}
    out = {"pretrain": 0.0, "finetune": 0.0, "probe": 0.0, "science": 0.0}
    excluded = set(p["exclude_classes"])
    eligible = sum(v for c, v in jets["train"].items() if c not in excluded)
    for pool in pretrain_pools(cfg):
        size = eligible if pool is None else (pool * eligible if pool <= 1 else pool)
        per_epoch = size * p["views_per_jet"] / rate + n["val"] * p["views_per_jet"] / infer
        out["pretrain"] += p["epochs"] * per_epoch + JOB_OVERHEAD_S[0]
    for job in deep_jobs(cfg).values():
        task = ft["tasks"][job["task"]]
        classes = set(task["signal"]) | set(task["background"])
        n_task = {s: sum(v for c, v in jets[s].items() if c in classes) for s in jets}
        out["finetune"] += FINETUNE_JOB_S
        for token, _ in job["arms"]:
            fraction, count = parse_labels(token)
            n_lab = min(count, n_task["train"]) if count else fraction * n_task["train"]
            batch = min(t["batch_size"], max(int(n_lab), 1))
            steps = arm_steps(ft, n_lab, batch)
            val = (steps / ft["val_every"]) * n_task["val"] / infer
            test = n_task["test"] * views / infer
            out["finetune"] += steps * batch / (rate if job["mode"] != "mlp" else infer) + val + test + ARM_OVERHEAD_S
    encoders = len(pretrain_pools(cfg)) + (ev["seeds"] if ev["random_encoder"] else 0)
    fits = len(ft["tasks"]) * len(label_sets(cfg)) * ev["seeds"] * len(ev["probes"]) * encoders
    out["probe"] = encoders * (n["train"] + n["val"] + n["test"] * views) / infer + fits * PROBE_FIT_S
    science_jets = min(cfg["science"]["max_jets"] or n["train"], n["train"]) + n["test"] * views
    out["science"] = science_jets / infer + 30.0
    return out


def _lhe_events_used(cfg: dict, process: str, chunks: int) -> int:
    """Events an ``lhe`` process' split keeps: all its files hold, up to ``chunks`` full chunks."""
    return min(source_events(cfg["processes"][process], process), chunks * cfg["simulation"]["events_per_chunk"])


def _measured(table: dict, process: str):
    """(value, note) for ``process``: measured, or taken from a process with a similar final state."""
    if process in table:
        return table[process], ""
    like = ASSUMED_LIKE.get(process, "top")
    return table[like], f"{process}: not measured, taken as {like}"


def _view_kind(view: dict) -> str:
    settings = {" ".join(s.replace("=", " = ").split()) for s in view["settings"]}
    if "PartonShowers:model = 2" in settings:
        return "vincia"
    if "PartonLevel:MPI = off" in settings:
        return "mpi_off"
    return {"hard": "nominal"}.get(view["intervention"], view["intervention"])


def _yaml(path: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _rule_groups(rules_dir: Path) -> dict[str, str]:
    """{rule: group} from the ``group:`` directives of the rule files (read as text: no Snakemake)."""
    import re

    groups = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            g = re.search(r"^\s+group:\s*(?:\n\s*)?[\"']([^\"']+)[\"']", block, flags=re.M)
            if m and g:
                groups[m.group(1)] = g.group(1)
    return groups


def _group_components(profile: dict) -> dict[str, int]:
    """The profile's group-components, as {group: n}; both YAML forms ({g: n} and [g=n]) are read."""
    raw = profile.get("group-components") or {}
    items = raw.items() if isinstance(raw, dict) else (str(x).split("=", 1) for x in raw if "=" in str(x))
    out = {}
    for name, n in items:
        try:
            out[str(name).strip()] = max(1, int(n))
        except (TypeError, ValueError):
            continue
    return out


def view_coverage(cfg: dict, view: str) -> float:
    """Share of the hard events a view simulates: 1, or the fractions of its ``simulation.view_splits``."""
    splits = cfg["simulation"]["view_splits"].get(view)
    return sum(cfg["merge"]["splits"][s] for s in splits) if splits else 1.0


def job_counts(cfg: dict) -> dict[str, int]:
    """Jobs per rule that a fresh `snakemake` run of ``cfg`` schedules (the workflow's fan-out)."""
    sim, ft = cfg["simulation"], cfg["finetune"]
    chunks = process_chunks(cfg)
    generated = sum(n for p, n in chunks.items() if not is_lhe(cfg["processes"][p]))
    units = sum(chunks.values()) * sum(sim["replicas"].get(v, 1) for v in sim["views"])
    # deep fine-tuning arms, finetune.arms_per_job per job (each evaluates its models too); the probes
    # and the BDT run in one `probe` job, plus one per pool of a pool-size scan
    scan = len(cfg["pretrain"]["pools"])
    # one split job per LHE process, its rule named after it (its outputs are that process' chunks)
    splits = {f"split_lhe_{p}": 1 for p in chunks if is_lhe(cfg["processes"][p])}
    return {"tracking_init": 1, **({"generate": generated} if generated else {}), **splits, "resimulate": units,
            "merge_part": len(merge_parts(cfg)), "merge": 1, "export_root": 1,
            **({"pretrain_pool": scan, "probe_pool": scan} if scan else {"pretrain": 1}),
            "finetune": len(deep_jobs(cfg)), "probe": 1, "science": 1, "report": 1, "all": 1}


def plan(cfg: dict, profile_path: Path | None = None, rules_dir: Path | None = None) -> dict:
    """Everything ``rs3l plan`` prints, as a dict (see :func:`format_plan`)."""
    from rs3l.config import view_instances

    repo = Path(__file__).resolve().parents[2]
    profile_path = profile_path or repo / "workflow" / "profiles" / "slurm" / "config.yaml"
    rules_dir = rules_dir or repo / "workflow" / "rules"
    sim, notes = cfg["simulation"], []
    jobs = job_counts(cfg)
    events = sim["events_per_chunk"]
    instances = view_instances(cfg)
    # CPU seconds and disk per stage
    cpu = {"generate": 0.0, "split_lhe": 0.0, "resimulate": 0.0, "merge": 0.0}
    disk = {"lhe": 0.0, "fragments": 0.0, "shards": 0.0}
    jets = {s: defaultdict(float) for s in ("train", "val", "test")}
    rows_total, events_total = 0.0, 0
    chunks_by_process = process_chunks(cfg)
    for process, chunks in chunks_by_process.items():
        rate, note = _measured(NOMINAL_RATE, process)
        per_class, _ = _measured(JETS_PER_EVENT, process)
        row_bytes, _ = _measured(FRAGMENT_BYTES_PER_ROW, process)
        lhe_bytes, _ = _measured(LHE_BYTES_PER_EVENT, process)
        if note:
            notes.append(note)
        label = cfg["processes"][process]["labelling"]
        if label["kind"] == "resonance" and label["label"] not in per_class:
            per_class = {label["label"]: sum(per_class.values())}
        if is_lhe(cfg["processes"][process]):
            n_events = _lhe_events_used(cfg, process, chunks)
            cpu["split_lhe"] += n_events / SPLIT_RATE[0] + JOB_OVERHEAD_S[0]
        else:
            n_events = events * chunks
            cpu["generate"] += chunks * (events / HARD_RATE[0] + JOB_OVERHEAD_S[0])
        events_total += n_events
        disk["lhe"] += n_events * lhe_bytes
        jets_per_event = sum(per_class.values())
        rows = 0.0
        for view, _replica in instances:
            factor = VIEW_FACTOR[_view_kind(cfg["views"][view])][0]
            covered = n_events * view_coverage(cfg, view)  # simulation.view_splits: some splits only
            cpu["resimulate"] += covered / (rate * factor) + chunks * JOB_OVERHEAD_S[0]
            if cfg["views"][view]["draw"]:  # one more Pythia init per further block of drawn values in a chunk
                blocks = -(-n_events // (chunks * cfg["views"][view]["draw_block"]))
                cpu["resimulate"] += chunks * (blocks - 1) * DRAW_INIT_S[0]
            disk["fragments"] += covered * jets_per_event * row_bytes
            rows += covered * jets_per_event
        rows_total += rows
        disk["shards"] += rows * row_bytes * SHARD_TO_FRAGMENT
        for split, fraction in cfg["merge"]["splits"].items():
            for cls, per_event in per_class.items():
                jets[split][cls] += n_events * per_event * fraction
    if not any(k.startswith("split_lhe_") for k in jobs):
        del cpu["split_lhe"]
    cpu["merge"] = rows_total / MERGE_ROWS_PER_S[0] + jobs["merge_part"] * JOB_OVERHEAD_S[0]
    # Slurm submissions: rules in a group are bundled group-components at a time
    profile = _yaml(profile_path)
    components = _group_components(profile)
    rule_group = _rule_groups(rules_dir) if rules_dir.exists() else {}
    if "resimulate" not in rule_group and len(components) == 1:
        rule_group["resimulate"] = next(iter(components))
        notes.append(f"resimulate's group not found in {rules_dir}; assumed {rule_group['resimulate']!r}")
    submissions = {}
    for rule, n in jobs.items():
        if rule in ("all", "merge", "tracking_init"):
            continue  # local rules: no submission
        per = components.get(rule_group.get(rule, ""), 1)
        submissions[rule] = -(-n // per)
    training = training_seconds(cfg, {s: dict(v) for s, v in jets.items()})
    return {"jobs": jobs, "chunks": chunks_by_process, "submissions": submissions, "training_cpu_hours":
            {k: v / 3600 for k, v in training.items()},
            "group_size": {r: components.get(g, 1) for r, g in rule_group.items()},
            "profile": str(profile_path) if profile else f"{profile_path} (not found: one submission per job)",
            "cpu_hours": {k: v / 3600 for k, v in cpu.items()}, "disk_gb": {k: v / 1e9 for k, v in disk.items()},
            "jets": {s: dict(v) for s, v in jets.items()}, "rows": rows_total, "events": events_total,
            "views": {v: _view_kind(cfg["views"][v]) for v, _ in dict.fromkeys(instances)}, "notes": notes}


def format_plan(p: dict, cfg: dict) -> str:
    """The plan as text: jobs and submissions, CPU-hours, disk, merged jets, and every figure's source."""
    sim = cfg["simulation"]
    units = p["jobs"]["resimulate"]
    n_chunks = sum(p["chunks"].values())
    per_process = (f"{len(sim['processes'])} processes x {sim['chunks']} chunks"
                   if set(p["chunks"].values()) == {sim["chunks"]} else
                   f"{n_chunks} chunks ({', '.join(f'{k} {v}' for k, v in p['chunks'].items())})")
    lines = [f"rs3l plan: {per_process} x {units // max(1, n_chunks)} view instances = {units} units "
             f"(resimulate jobs) of {sim['events_per_chunk']} events",
             "", f"{'rule':<14}{'jobs':>10}{'Slurm submissions':>20}   (profile {p['profile']})"]
    for rule, n in p["jobs"].items():
        sub = p["submissions"].get(rule)
        group = p["group_size"].get(rule, 1)
        extra = f"  ({group} jobs per submission)" if sub is not None and group > 1 else ""
        lines.append(f"{rule:<14}{n:>10}{(str(sub) if sub is not None else 'local'):>20}{extra}")
    lines.append(f"{'total':<14}{sum(p['jobs'].values()):>10}{sum(p['submissions'].values()):>20}")
    lines += ["", "CPU-hours (one core each):"]
    for stage, h in p["cpu_hours"].items():
        lines.append(f"  {stage:<12}{h:12.2f}")
    lines.append(f"  {'total':<12}{sum(p['cpu_hours'].values()):12.2f}")
    lines += ["", "training on CPU (this kind of machine: 2 cores, no GPU), core-hours:"]
    for stage, h in p["training_cpu_hours"].items():
        lines.append(f"  {stage:<12}{h:12.2f}")
    total = sum(p["cpu_hours"].values()) + sum(p["training_cpu_hours"].values())
    lines.append(f"  {'total':<12}{sum(p['training_cpu_hours'].values()):12.2f}   (pre-training at its full epoch "
                 f"budget: early stopping ends sooner)")
    cores = p.get("cores", 2)
    lines.append(f"\nlocal wall time on {cores} cores (snakemake --cores {cores}): about {total / cores:.2f} h "
                 f"(simulation + training core-hours / {cores}; on a cluster the GPU jobs take a fraction of it)")
    lines += ["", "disk (GB):"]
    for what, gb in p["disk_gb"].items():
        lines.append(f"  {what:<12}{gb:12.2f}")
    lines += ["", "merged jets per class (labelled jets per event x events x split fraction):",
              f"  {'class':<8}" + "".join(f"{s:>12}" for s in p["jets"]) + f"{'total':>12}"]
    classes = [c for c in cfg["classes"] if any(c in p["jets"][s] for s in p["jets"])]
    for c in classes:
        vals = [p["jets"][s].get(c, 0.0) for s in p["jets"]]
        lines.append(f"  {c:<8}" + "".join(f"{v:12,.0f}" for v in vals) + f"{sum(vals):12,.0f}")
    total = [sum(p["jets"][s].values()) for s in p["jets"]]
    lines.append(f"  {'all':<8}" + "".join(f"{v:12,.0f}" for v in total) + f"{sum(total):12,.0f}"
                 f"   ({p['rows']:,.0f} jet-view rows)")
    kinds = defaultdict(list)
    for v, k in p["views"].items():
        kinds[k].append(v)
    lines += ["", "figures used (per core):"]
    for process in sim["processes"]:
        rate, note = _measured(NOMINAL_RATE, process)
        lines.append(f"  {process}: nominal view {rate:.0f} ev/s, {sum(_measured(JETS_PER_EVENT, process)[0].values()):.3f} "
                     f"labelled jets/event, {_measured(FRAGMENT_BYTES_PER_ROW, process)[0]} B per fragment row"
                     + (f"  [{note}]" if note else "  [" + SOURCE_HERE.split(",")[0] + "]"))
    for kind, views in kinds.items():
        factor, source = VIEW_FACTOR[kind]
        lines.append(f"  views {', '.join(views)}: {kind}, rate x {factor:.3f}" + (f"  [{source}]" if kind != "nominal" else ""))
    if "split_lhe" in p["cpu_hours"]:
        lines.append(f"  split-lhe {SPLIT_RATE[0]:.0f} ev/s [{SPLIT_RATE[1]}]; an lhe process is costed like the "
                     f"measured process its name matches, else like top")
    lines += [f"  training {train_rate(cfg):.0f} views/s ({cfg['pretrain']['encoder']} as configured), "
              f"inference {INFER_FACTOR:g}x that [{TRAIN_RATE[1]}]; fine-tuning arm: max(20 steps, 10 epochs) + "
              f"patience x val_every steps (at least min_steps), {ARM_OVERHEAD_S:g} s per arm, "
              f"{FINETUNE_JOB_S:g} s per job",
              f"  hard process {HARD_RATE[0]:.0f} ev/s [{HARD_RATE[1]}]",
              f"  per-job overhead {JOB_OVERHEAD_S[0]} s (start, imports, Pythia init) [measured here]",
              f"  merge {MERGE_ROWS_PER_S[0]:,.0f} rows/s [{MERGE_ROWS_PER_S[1]}]",
              f"  source of 'measured here': {SOURCE_HERE}",
              "  DESIGN.md measured ttbar with MPI at ~70 ev/s (here ~140): on slower cores double the CPU-hours"]
    lines += [f"  note: {n}" for n in p["notes"]]
    return "\n".join(lines)


def main(cfg: dict, args) -> None:
    p = plan(cfg, Path(args.profile) if args.profile else None)
    p["cores"] = args.cores
    print(format_plan(p, cfg))

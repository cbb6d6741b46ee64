"""The ablation grid and ``rs3l ablation-report``: pre-training variants compared in one table.

``ablation`` in the config names a grid (``objectives`` x ``augmentations`` sets [x
``views_per_jet``]) and optional hand-named ``variants``; each becomes one pre-training with its
own resolved config (``<results_dir>/ablation/<variant>/config.yaml``, written by the workflow),
probed with the cheap arms of the evaluation protocol (linear and kNN probes at every label
fraction and repeat seed, ``rs3l probe``) and scored by ``rs3l science``. The random-encoder
probes and the substructure BDT do not depend on the variant: they run once
(``<results_dir>/ablation/baselines/``).

The report (``ablation.csv``, ``ablation.md``, two plots) has one row per (task, variant):
linear-probe AUC mean ± std over the seeds at each label fraction (kNN in the CSV), W1 of the
probe scores on the held-out view (robustness), invariance AUC, parameter R², the log-ratio R² of
each scan view simulated with several replicas (``ratio_r2_<view>``, linear model; the MLP's and
the per-jet regression's on the same jets in the CSV), cross-modal retrieval of ``clip`` variants
and anomaly AUC (``rs3l science``; "—" where missing; the ratio, retrieval and pretext columns
appear when some variant has them), and one sentence per task naming the objective and
augmentation set that won on label efficiency and on robustness, and whether the lead exceeds
one standard deviation. Light at import: Snakemake imports it at parse time.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

from rs3l.checks import resolve_without_grid as resolve  # a variant's config has no grid of its own
from rs3l.config import ConfigError

log = logging.getLogger(__name__)

BASELINES = "baselines"  # folder of the variant-independent arms (random encoder, substructure BDT)
DASH = "—"


def enabled(cfg: dict) -> bool:
    """True when the config names at least one variant (the ablation rules exist only then)."""
    ab = cfg.get("ablation") or {}
    return bool((ab.get("objectives") and ab.get("augmentations")) or ab.get("variants"))


def _deep_update(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _used_views(augment_views) -> set[str]:
    """Simulated views a variant trains on: a composition 'seed+jetclr' uses the view 'seed'."""
    return {part for v in augment_views for part in v.split("+")}


def grid(cfg: dict) -> dict[str, dict]:
    """{variant name: {"origin": config key, "cell": {objective, augmentations, views_per_jet}, "pretrain": overrides}}.

    Grid variants are named ``<objective>-<set>`` (``-v<n>`` appended when ``views_per_jet`` is
    given), in config order; the hand-named ``variants`` follow. Nothing is validated here.
    """
    ab = cfg.get("ablation") or {}
    out = {}
    vpj = ab.get("views_per_jet")
    for objective in ab.get("objectives", []):
        for set_name, views in ab.get("augmentations", {}).items():
            for n in vpj if vpj else [None]:
                name = f"{objective}-{set_name}" + ("" if n is None else f"-v{n}")
                over = {"objective": objective, "augment_views": list(views)}
                if n is not None:
                    over["views_per_jet"] = n
                out[name] = {"origin": f"ablation.objectives/augmentations.{set_name}",
                             "cell": {"objective": objective, "augmentations": set_name, "views_per_jet": n},
                             "pretrain": over}
    for name, over in ab.get("variants", {}).items():
        if name in out:
            raise ConfigError(f"ablation.variants.{name}: the grid already makes a variant of that name; rename it")
        out[name] = {"origin": f"ablation.variants.{name}", "cell": None, "pretrain": dict(over)}
    if BASELINES in out:
        raise ConfigError(f"ablation: '{BASELINES}' is reserved (the folder of the random-encoder and BDT arms); "
                          "rename that variant")
    return out


def _base(cfg: dict) -> dict:
    base = copy.deepcopy(dict(cfg))
    base.pop("ablation", None)
    return base


def variant_config(cfg: dict, name: str) -> dict:
    """The resolved config of one variant: ``cfg`` without the grid, pretrain overridden by
    ``ablation.pretrain`` and the variant's own overrides, the cheap probes only (the baselines run
    once), and ``ablation.variant`` naming the grid cell (MLflow tags; a new variant elsewhere in the
    grid leaves this config, and its hash, unchanged). Raises ConfigError naming the variant's key."""
    variants = grid(cfg)
    if name not in variants:
        raise ConfigError(f"unknown ablation variant '{name}'; known: {', '.join(variants)}")
    v = variants[name]
    ab = cfg["ablation"]
    out = _base(cfg)
    out["pretrain"] = _deep_update(_deep_update(out.get("pretrain", {}), ab.get("pretrain", {})), v["pretrain"])
    out["evaluate"] = {**out.get("evaluate", {}), "random_encoder": False, "substructure_bdt": False}
    try:
        out = resolve(out)
    except ConfigError as exc:
        raise ConfigError(f"ablation variant '{name}' ({v['origin']}; overrides {v['pretrain']}): {exc}") from None
    cell = v["cell"] or {"objective": out["pretrain"]["objective"],
                         "augmentations": _set_name(ab, out["pretrain"]["augment_views"]),
                         "views_per_jet": out["pretrain"].get("views_per_jet")}
    if out["pretrain"].get("pretext"):  # only then: the cells (and hashes) of the other variants stay as they were
        cell = {**cell, "pretext": pretext_text(out["pretrain"]["pretext"])}
    out["ablation"] = {"variant": {"name": name, **cell}}
    return resolve(out)


def pretext_text(pretext: dict | None) -> str | None:
    """``pretrain.pretext`` as a table cell, e.g. 'view λ=0.5'; None without a head."""
    return f"{pretext['target']} λ={pretext['weight']:g}" if pretext else None


def _set_name(ab: dict, views: list[str]) -> str:
    for set_name, vs in ab.get("augmentations", {}).items():
        if list(vs) == list(views):
            return set_name
    return ",".join(views)


def baseline_config(cfg: dict) -> dict:
    """Config of the variant-independent arms: random-encoder probes and the substructure BDT."""
    out = _base(cfg)
    out["evaluate"] = {**out.get("evaluate", {}), "random_encoder": True, "substructure_bdt": True}
    return resolve(out)


def held_out_view(cfg: dict, configs: dict[str, dict]) -> str:
    """The view every variant left out of pre-training (``ablation.held_out_view`` or the first such view)."""
    used = set().union(*(_used_views(c["pretrain"]["augment_views"]) for c in configs.values()))
    candidates = [v for v in cfg["simulation"]["views"] if v != "nominal" and v not in used]
    chosen = cfg["ablation"].get("held_out_view")
    if chosen is None:
        if not candidates:
            raise ConfigError("ablation.held_out_view: every simulated view is used by some variant's "
                              "pretrain.augment_views; simulate one more (e.g. add vincia to simulation.views) so "
                              "that robustness is measured on a view no variant saw")
        return candidates[0]
    if chosen not in candidates:
        raise ConfigError(f"ablation.held_out_view '{chosen}' must be a simulated view that no variant trains on; "
                          f"allowed: {', '.join(candidates) or '(none)'}")
    return chosen


def robustness_fraction(cfg: dict) -> float:
    fractions = sorted(cfg["finetune"]["label_fractions"])
    chosen = cfg["ablation"].get("robustness_fraction")
    if chosen is None:
        below = [f for f in fractions if f < 1.0]
        return below[-1] if below else fractions[-1]
    if chosen not in fractions:
        raise ConfigError(f"ablation.robustness_fraction {chosen} is not one of finetune.label_fractions: {fractions}")
    return chosen


def check(cfg: dict) -> dict[str, dict]:
    """Resolve every variant (raises ConfigError naming the variant and its key); returns {name: config}."""
    if not enabled(cfg):
        return {}
    ab = cfg["ablation"]
    if bool(ab.get("objectives")) != bool(ab.get("augmentations")):
        raise ConfigError("ablation: the grid needs both 'objectives' and 'augmentations' (one is empty)")
    configs = {name: variant_config(cfg, name) for name in grid(cfg)}
    held_out_view(cfg, configs)
    robustness_fraction(cfg)
    return configs


# ----------------------------------------------------------------------------- the report

def _probe_rows(path: Path) -> list[dict]:
    """The report table's rows (mean ± std over seeds per task, method, mode, fraction) of one probes.json."""
    from rs3l.evaluation import report

    # few bootstrap replicates: the table's AUC interval is not shown here, only mean ± std over the seeds
    return report.table(report.load_results([path]), n_boot=10)[1]


def _science(path: Path) -> dict:
    if not path.exists():
        log.info("no %s: science columns stay empty", path)
        return {}
    return json.loads(path.read_text())


def _mean(values):
    """Mean of the finite values (None without any): across views or variants, not seeds."""
    from rs3l.evaluation.stats import mean_std

    return mean_std(list(values))[0]


def table(cfg: dict, ablation_dir) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per (task, variant), then the baseline arms per task."""
    ablation_dir = Path(ablation_dir)
    configs = {name: variant_config(cfg, name) for name in grid(cfg)}
    held = held_out_view(cfg, configs)
    frac_w1 = robustness_fraction(cfg)
    fractions = sorted(cfg["finetune"]["label_fractions"])
    probes = {name: _probe_rows(ablation_dir / name / "probes.json") for name in configs}
    science = {name: _science(ablation_dir / name / "science.json") for name in configs}
    inv_views = list(dict.fromkeys(v for s in science.values() for v in (s.get("invariance") or {})))
    par_views = list(dict.fromkeys(v for s in science.values() for v in (s.get("parameter") or {})))
    ratio_views = list(dict.fromkeys(v for s in science.values() for v in (s.get("parameter_ratio") or {})))
    w1 = f"w1_{held}"
    columns = ["task", "variant", "objective", "augmentations", "views_per_jet", "pretext", "n_seeds"]
    for mode in ("linear", "knn"):
        for f in fractions:
            columns += [f"{mode}_auc_f{f:g}", f"{mode}_auc_f{f:g}_std"]
    columns += [w1, f"{w1}_std", "invariance_auc"] + [f"invariance_auc_{v}" for v in inv_views]
    columns += [f"invariance_auc_{v}_std" for v in inv_views]
    columns += ["parameter_r2"] + [f"parameter_r2_{v}" for v in par_views]
    columns += [f"parameter_r2_{v}_std" for v in par_views]
    for v in ratio_views:  # log-ratio regression on pairs of replicas, beside the per-jet one on the same jets
        columns += [f"{c}_{v}{s}" for c in ("ratio_r2", "ratio_r2_mlp", "ratio_r2_absolute", "ratio_r2_absolute_mlp")
                    for s in ("", "_std")]
    columns += ["retrieval_top1", "retrieval_top1_std", "retrieval_top10", "retrieval_top10_std"]
    columns += ["anomaly_auc", "anomaly_auc_std"]
    tasks = list(cfg["finetune"]["tasks"])
    rows = []

    def probe_cells(row, prow_list, method_pred, modes=("linear", "knn")):
        for prow in prow_list:
            if not method_pred(prow["method"]) or prow["mode"] not in modes or prow["label_fraction"] is None:
                continue  # (the table's columns are the label fractions; labelled sets given as counts are left out)
            mode = "linear" if prow["mode"] in ("linear", "baseline") else prow["mode"]
            key = f"{mode}_auc_f{prow['label_fraction']:g}"
            row[key], row[f"{key}_std"] = prow.get("auc"), prow.get("auc_std")
            row["n_seeds"] = prow["n_seeds"]
            if prow["label_fraction"] == frac_w1 and mode == "linear":
                row[w1], row[f"{w1}_std"] = prow.get(w1), prow.get(f"{w1}_std")

    for task in tasks:
        for name, vcfg in configs.items():
            cell = vcfg["ablation"]["variant"]
            row = {"task": task, "variant": name, "objective": cell["objective"],
                   "augmentations": cell["augmentations"],
                   "views_per_jet": vcfg["pretrain"].get("views_per_jet", 2), "pretext": cell.get("pretext")}
            probe_cells(row, [p for p in probes[name] if p["task"] == task], lambda m: m.startswith("rs3l-"))
            sci = science[name]
            inv = sci.get("invariance") or {}
            for v in inv_views:
                row[f"invariance_auc_{v}"] = inv.get(v, {}).get("auc")
                row[f"invariance_auc_{v}_std"] = inv.get(v, {}).get("auc_std")
            row["invariance_auc"] = _mean(e.get("auc") for e in inv.values())
            par = sci.get("parameter") or {}
            for v in par_views:
                row[f"parameter_r2_{v}"] = par.get(v, {}).get("r2")
                row[f"parameter_r2_{v}_std"] = par.get(v, {}).get("r2_std")
            row["parameter_r2"] = _mean(e.get("r2") for e in par.values())
            ratio = sci.get("parameter_ratio") or {}
            for v in ratio_views:
                e = ratio.get(v, {})
                for col, entry in (("ratio_r2", e.get("linear")), ("ratio_r2_mlp", e.get("mlp")),
                                   ("ratio_r2_absolute", (e.get("absolute") or {}).get("linear")),
                                   ("ratio_r2_absolute_mlp", (e.get("absolute") or {}).get("mlp"))):
                    row[f"{col}_{v}"], row[f"{col}_{v}_std"] = (entry or {}).get("r2"), (entry or {}).get("r2_std")
            retrieval = sci.get("retrieval") or {}
            for k in ("top1", "top10"):
                row[f"retrieval_{k}"], row[f"retrieval_{k}_std"] = retrieval.get(k), retrieval.get(f"{k}_std")
            anomaly = sci.get("anomaly") or {}
            row["anomaly_auc"], row["anomaly_auc_std"] = anomaly.get("auc"), anomaly.get("auc_std")
            rows.append(row)
        base_path = ablation_dir / BASELINES / "probes.json"
        if base_path.exists():
            base_rows = [p for p in _probe_rows(base_path) if p["task"] == task]
            for method in dict.fromkeys(p["method"] for p in base_rows if not p["method"].startswith("rs3l-")):
                row = {"task": task, "variant": method, "objective": DASH, "augmentations": DASH,
                       "views_per_jet": None, "pretext": None}
                probe_cells(row, base_rows, lambda m, method=method: m == method, ("linear", "knn", "baseline"))
                rows.append(row)
    return columns, rows


def _variant_rows(rows: list[dict], task: str) -> list[dict]:
    return [r for r in rows if r["task"] == task and r["objective"] != DASH]


def _winner(rows: list[dict], col: str, larger_is_better: bool):
    scored = [r for r in rows if r.get(col) is not None and math.isfinite(r[col])]
    scored.sort(key=lambda r: r[col], reverse=larger_is_better)
    return scored


def _marginal_best(rows: list[dict], col: str, factor: str, larger_is_better: bool):
    levels = {}
    for r in rows:
        if r.get(col) is not None and math.isfinite(r[col]):
            levels.setdefault(r[factor], []).append(r[col])
    if len(levels) < 2:
        return None
    means = {k: _mean(v) for k, v in levels.items()}
    ranked = sorted(means, key=means.get, reverse=larger_is_better)
    return None if means[ranked[0]] == means[ranked[1]] else ranked[0]


def _pm(v, s, digits: int) -> str:
    from rs3l.evaluation.stats import pm

    return pm(v, s, digits, missing=DASH)


def _ratio_columns(columns: list[str]) -> list[str]:
    """The table's ``ratio_r2_<view>`` columns (linear model; one per scan view with replicas)."""
    return [c for c in columns if c.startswith("ratio_r2_") and not c.endswith("_std")
            and not c.startswith(("ratio_r2_mlp_", "ratio_r2_absolute_"))]


def _label(row: dict) -> str:
    """'objective × augmentations', with the pretext head when the variant has one."""
    return f"{row['objective']} × {row['augmentations']}" + (f" + pretext {row['pretext']}" if row.get("pretext") else "")


def _clause(rows: list[dict], col: str, larger_is_better: bool, what: str, digits: int) -> str:
    from rs3l.evaluation.report import one_std_apart

    ranked = _winner(rows, col, larger_is_better)
    if not ranked:
        return f"on {what} no variant has a value"
    best = ranked[0]
    tie = len(ranked) > 1 and ranked[1][col] == best[col]
    text = (f"on {what} {_label(best)} {'tied' if tie else 'won'} "
            f"({_pm(best[col], best.get(f'{col}_std'), digits)}")
    if len(ranked) > 1:
        second = ranked[1]
        apart = one_std_apart(best[col], best.get(f"{col}_std"), second[col], second.get(f"{col}_std"))
        word = ("tied" if best[col] == second[col] else
                "one seed only, no spread to judge the lead by" if apart is None else
                "a lead beyond one std" if apart else "a lead within one std, not significant")
        text += (f" vs {_pm(second[col], second.get(f'{col}_std'), digits)} for "
                 f"{'' if tie else 'the runner-up '}"
                 f"{_label(second)}: {word}")
    text += ")"
    aug = _marginal_best(rows, col, "augmentations", larger_is_better)
    obj = _marginal_best(rows, col, "objective", larger_is_better)
    marginals = [f"augmentation set {aug}" if aug else None, f"objective {obj}" if obj else None]
    marginals = [m for m in marginals if m]
    if marginals:
        text += f"; averaged over the other factor the best {' and '.join(marginals)}"
    return text


def sentences(cfg: dict, rows: list[dict], held: str, frac_w1: float) -> list[str]:
    """One sentence per task: the winner on label efficiency (linear-probe AUC at the smallest fraction) and on
    robustness (smallest W1 on the held-out view), and whether each lead exceeds one std."""
    f0 = min(cfg["finetune"]["label_fractions"])
    out = []
    for task in cfg["finetune"]["tasks"]:
        vrows = _variant_rows(rows, task)
        eff = _clause(vrows, f"linear_auc_f{f0:g}", True,
                      f"label efficiency (linear-probe AUC at {100 * f0:g}% of the labels)", 3)
        rob = _clause(vrows, f"w1_{held}", False,
                      f"robustness (W1 of the linear-probe scores on the held-out view {held} at "
                      f"{100 * frac_w1:g}% of the labels, smaller is better)", 4)
        out.append(f"{task}: {eff}; {rob}.")
    return out


def _cell(row: dict, col: str, digits: int) -> str:
    if col in ("task", "variant", "objective", "augmentations"):
        return str(row.get(col))
    if col == "pretext":
        return row.get(col) or DASH
    if col in ("views_per_jet", "n_seeds"):
        return DASH if row.get(col) is None else str(row[col])
    return _pm(row.get(col), row.get(f"{col}_std"), digits)


def to_markdown(cfg: dict, columns: list[str], rows: list[dict], held: str, frac_w1: float,
                statements: list[str]) -> str:
    fractions = sorted(cfg["finetune"]["label_fractions"])

    def present(col):
        return any(r.get(col) is not None for r in rows)

    shown = ["task", "variant", "objective", "augmentations", "views_per_jet"]
    shown += ["pretext"] if present("pretext") else []
    shown += ["n_seeds"] + [f"linear_auc_f{f:g}" for f in fractions]
    shown += [f"w1_{held}", "invariance_auc", "parameter_r2"]
    shown += [c for c in _ratio_columns(columns) if present(c)]
    shown += ["retrieval_top1"] if present("retrieval_top1") else []
    shown += ["anomaly_auc"]
    header = [f"linear AUC @ {100 * float(c[len('linear_auc_f'):]):g}%" if c.startswith("linear_auc_f") else c
              for c in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, c, 4 if c.startswith("w1_") else 3) for c in shown) + " |")
    notes = ["", "Each cell: mean ± std over the repeat seeds (each seed draws its own labelled subset, shared by "
             "every variant). linear AUC @ x%: frozen-encoder convex linear probe on the nominal test view with x% "
             f"of the training labels. w1_{held}: Wasserstein-1 distance between the linear-probe scores on nominal "
             f"and on {held}, a view no variant was pre-trained on, at {100 * frac_w1:g}% of the labels (smaller = "
             "more robust). invariance_auc: AUC of a classifier telling a view's embeddings from nominal's, mean "
             "over views (0.5 = invariant); parameter_r2: R² of the simulator parameter regressed from the "
             "embedding, mean over the scan views; ratio_r2_<view>: R² of log(θ_u/θ_v) regressed (linear) from the "
             "difference of the embeddings of two draws u, v of the same jet (the CSV has the MLP's and the per-jet "
             "regression's on the same jets); retrieval_top1: share of test jets whose particle embedding is the "
             "nearest to the embedding of their observables (clip variants); pretext: the pretext head's target and "
             f"weight λ ({DASH}: none, λ = 0); anomaly_auc: the excluded class against the rest (rs3l "
             f"science). {DASH}: not measured. Rows with objective {DASH}: the variant-independent baselines "
             "(random encoder; substructure BDT, whose AUC sits in the linear AUC columns).", "", *statements]
    return "\n".join(lines + notes) + "\n"


def report(cfg: dict, ablation_dir, out_dir=None) -> dict:
    """Write ablation.csv, ablation.md and the plots to ``out_dir`` (default ``ablation_dir``)."""
    from rs3l.atomic import write_text
    from rs3l.evaluation import plots
    from rs3l.evaluation.report import log_to_parent, to_csv

    if not enabled(cfg):
        raise ConfigError("the config has no ablation grid (ablation.objectives/augmentations or ablation.variants)")
    ablation_dir = Path(ablation_dir)
    out_dir = Path(out_dir or ablation_dir)
    configs = {name: variant_config(cfg, name) for name in grid(cfg)}
    held, frac_w1 = held_out_view(cfg, configs), robustness_fraction(cfg)
    columns, rows = table(cfg, ablation_dir)
    statements = sentences(cfg, rows, held, frac_w1)
    md = to_markdown(cfg, columns, rows, held, frac_w1, statements)
    write_text(out_dir / "ablation.csv", to_csv(columns, rows))
    write_text(out_dir / "ablation.md", md)
    figures = [plots.ablation_label_efficiency(rows, sorted(cfg["finetune"]["label_fractions"]),
                                               out_dir / "ablation_label_efficiency.png"),
               plots.ablation_panels(rows, [f"w1_{held}", "invariance_auc", "parameter_r2"]
                                     + _ratio_columns(columns)
                                     + ["anomaly_auc"], out_dir / "ablation_panels.png")]
    parent = log_to_parent(cfg, [out_dir / "ablation.csv", out_dir / "ablation.md", *figures],
                            artifact_path="ablation")
    print(md, end="")
    return {"columns": columns, "rows": rows, "sentences": statements, "markdown": md, "plots": figures,
            "parent_run_id": parent}


def main(cfg: dict, args) -> None:
    """``rs3l ablation-report``."""
    report(cfg, args.dir, args.out_dir)

"""``rs3l report``: the results table, paired comparisons and plots from the records of ``rs3l evaluate`` and ``rs3l probe``.

Inputs: JSON files holding one record (``rs3l evaluate``) or a list of records (``rs3l probe``);
one record per (task, method, mode, label_fraction, seed).

Writes to ``--out-dir``:

- ``results.csv`` and ``results.md``: one row per (task, method, mode, label_fraction): ``n_labels``,
  ``n_seeds``, and for ``accuracy``, ``auc``, ``rejection_at_<eff>``, ``w1_<view>`` and
  ``fpr_shift_at_<eff>_<view>`` the mean over the repeat seeds with ``<metric>_std`` (sample std);
  ``auc_ci_low``/``auc_ci_high``: bootstrap interval over the test jets of the seed-averaged AUC;
  ``converged``: fraction of the seeds whose training converged (deep arms: early stopping before
  the step budget; probes: the solver converged; BDT: the val loss turned up);
- ``comparisons.json`` and, under the markdown table, one sentence per paired comparison
  (:func:`rs3l.evaluation.stats.paired_bootstrap`): pre-trained linear probe vs random-encoder
  probe, pre-trained ``full`` vs ``scratch``, the best deep arm vs the substructure BDT, per task
  and label fraction; and the held-out views' W1 of pre-trained vs scratch;
- in ``plots/``: ``roc_<task>.png``, ``scores_<task>.png`` (seed 0, largest fraction),
  ``label_efficiency_<task>.png`` and ``robustness_<task>.png`` (mean ± std over seeds);
- with ``--data``: ``jet_mass.png`` (mass and soft-drop mass per class and view, test split);
- with ``<results_dir>/evaluate/science.json`` (``rs3l science``), a section "What the representation kept"
  under the table: invariance AUC per view, parameter R² per scan view, anomaly AUC;
- ``embeddings.png``, copied from ``<results_dir>/pretrain/embeddings.png`` if pre-training made one.

Everything is logged as an artifact of the workflow's MLflow parent run, which is then
marked FINISHED. The markdown table is printed to stdout.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from rs3l.atomic import atomic_path, write_text
from rs3l.config import results_path
from rs3l.evaluation import plots, stats

log = logging.getLogger(__name__)

ID_COLUMNS = ["task", "method", "mode", "label_fraction", "n_labels", "n_seeds"]
REQUIRED = ("task", "method", "mode", "label_fraction", "metrics", "views", "robustness")
DEEP_MODES = ("mlp", "full", "scratch")


def load_results(paths) -> list[dict]:
    """Read the evaluation records; each gets ``_path``. Raises on a missing file, a bad record or a duplicate."""
    results, seen = [], {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"evaluation result '{p}' does not exist; run `rs3l evaluate --out {p}` first")
        try:
            content = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"'{p}' is not valid JSON: {exc}") from exc
        for r in content if isinstance(content, list) else [content]:
            missing = [k for k in REQUIRED if k not in r]
            if missing:
                raise ValueError(f"'{p}' is not an `rs3l evaluate` result: missing keys {missing}")
            r.setdefault("seed", 0)
            key = (r["task"], r["method"], r["mode"], float(r["label_fraction"]), int(r["seed"]))
            if key in seen:
                raise ValueError(f"'{p}' and '{seen[key]}' are both results of {key}; pass each arm and seed once")
            seen[key] = p
            r["_path"] = str(p)
            results.append(r)
    if not results:
        raise ValueError("no evaluation results given (--inputs)")
    return sorted(results, key=lambda r: (r["task"], r["method"], r["mode"], r["label_fraction"], r["seed"]))


def _eff(e: float) -> str:
    return f"{e:g}"


def group(results: list[dict]) -> dict:
    """{(task, method, mode, label_fraction): [records over seeds]}, in sorted order."""
    groups = defaultdict(list)
    for r in results:
        groups[(r["task"], r["method"], r["mode"], r["label_fraction"])].append(r)
    return dict(groups)


def aligned_scores(records: list[dict]):
    """(jet_ids, is_signal (n,), scores (seeds, n)) of the nominal test jets, sorted by jet id.

    Every record must have scored the same jets; None without scores.
    """
    if not all(r.get("test_scores") for r in records):
        return None
    out, ref = [], None
    for r in records:
        ts = r["test_scores"]
        order = np.argsort(ts["jet_id"], kind="mergesort")
        ids = np.asarray(ts["jet_id"])[order]
        if ref is None:
            ref = (ids, np.asarray(ts["is_signal"], bool)[order])
        if not np.array_equal(ids, ref[0]):
            raise ValueError(f"{r['_path']}: {r['method']} {r['mode']} scored other test jets than the other arms of "
                             f"task {r['task']}; evaluate every arm on the same data")
        out.append(np.asarray(ts["score"], np.float64)[order])
    return ref[0], ref[1], np.stack(out)


def _rejection(r: dict, e: str):
    m = r["metrics"]
    v = m.get(f"rejection_at_{e}")
    return math.inf if v is None and m.get(f"fpr_at_{e}") == 0 else v


def table(results: list[dict], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per (task, method, mode, label_fraction) with mean and std over the seeds."""
    effs = list(dict.fromkeys(_eff(e) for r in results for e in r.get("efficiencies", [0.3, 0.5, 0.7])))
    views = list(dict.fromkeys(v for r in results for v in r["robustness"]))
    robust_eff = _eff(results[0].get("robustness_efficiency", 0.5))
    getters = {"accuracy": lambda r: r["metrics"].get("accuracy"), "auc": lambda r: r["metrics"].get("auc")}
    getters.update({f"rejection_at_{e}": (lambda r, e=e: _rejection(r, e)) for e in effs})
    getters.update({f"w1_{v}": (lambda r, v=v: r["robustness"].get(v, {}).get("w1")) for v in views})
    getters.update({f"fpr_shift_at_{robust_eff}_{v}":
                    (lambda r, v=v: r["robustness"].get(v, {}).get(f"fpr_shift_at_{robust_eff}")) for v in views})
    columns = list(ID_COLUMNS)
    for name in getters:
        columns += [name, f"{name}_std"] + (["auc_ci_low", "auc_ci_high"] if name == "auc" else [])
    columns += ["converged"]
    rows = []
    for (task, method, mode, fraction), recs in group(results).items():
        row = {"task": task, "method": method, "mode": mode, "label_fraction": fraction,
               "n_labels": recs[0].get("n_labels"), "n_seeds": len(recs)}
        for name, get in getters.items():
            vals = [get(r) for r in recs]
            finite = [v for v in vals if v is not None and math.isfinite(v)]
            if name.startswith("rejection") and any(v == math.inf for v in vals):
                row[name], row[f"{name}_std"] = (math.inf if len(finite) < len(vals) / 2 else stats.mean_std(finite)[0],
                                                 None)
            else:
                row[name], row[f"{name}_std"] = stats.mean_std(finite)
        scores = aligned_scores(recs)
        if scores is not None and 0 < scores[1].sum() < scores[1].size:
            row["auc_ci_low"], row["auc_ci_high"] = stats.bootstrap_interval("auc", scores[1], scores[2], n_boot,
                                                                             level, seed)
        conv = [bool(r.get("training", {}).get("converged", True)) for r in recs]
        row["converged"] = sum(conv) / len(conv)
        rows.append(row)
    return columns, rows


# ----------------------------------------------------------------------------- paired comparisons

def _verdict(c: dict) -> str:
    if not (math.isfinite(c["low"]) and math.isfinite(c["high"])):
        return "undetermined"
    if c["low"] > 0:
        return "better beyond the noise"
    if c["high"] < 0:
        return "worse beyond the noise"
    return "no difference beyond the noise"


def comparisons(results: list[dict], n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> list[dict]:
    """Paired bootstrap comparisons per task and label fraction (see the module docstring)."""
    groups = group(results)
    out = []
    tasks = dict.fromkeys(k[0] for k in groups)
    for task in tasks:
        fractions = sorted({k[3] for k in groups if k[0] == task})
        methods = {k[1] for k in groups if k[0] == task}
        enc = next((m.split("-", 1)[1] for m in sorted(methods) if m.startswith("rs3l-")), None)
        for f in fractions:
            def arm(method, mode):
                return groups.get((task, method, mode, f))
            pairs = []
            if enc:
                pairs.append(("pre-training vs random init (frozen linear probe)", arm(f"rs3l-{enc}", "linear"),
                              arm(f"random-{enc}", "linear"), ("auc",)))
                pairs.append(("pre-trained fine-tune vs training from scratch", arm(f"rs3l-{enc}", "full"),
                              arm(f"supervised-{enc}", "scratch"), ("auc", "rejection_at_0.5")))
            deep = [(k, v) for k, v in groups.items() if k[0] == task and k[3] == f and k[2] in DEEP_MODES]
            if deep:
                best_key, best = max(deep, key=lambda kv: np.mean([r["metrics"].get("auc") or 0 for r in kv[1]]))
                pairs.append((f"best deep arm ({best_key[1]} {best_key[2]}) vs substructure BDT", best,
                              arm("substructure-bdt", "baseline"), ("auc", "rejection_at_0.5")))
            for what, a, b, metrics in pairs:
                if not a or not b:
                    continue
                sa, sb = aligned_scores(a), aligned_scores(b)
                if sa is None or sb is None:
                    continue
                if not np.array_equal(sa[0], sb[0]):
                    raise ValueError(f"task {task}: {a[0]['method']} and {b[0]['method']} were scored on different "
                                     "test jets; a paired comparison needs the same jets")
                for metric in metrics:
                    c = stats.paired_bootstrap(metric, sa[1], sa[2], sb[2], n_boot, level, seed)
                    out.append({"task": task, "label_fraction": f, "comparison": what, "metric": metric,
                                "a": f"{a[0]['method']} {a[0]['mode']}", "b": f"{b[0]['method']} {b[0]['mode']}",
                                "n_seeds_a": len(a), "n_seeds_b": len(b), **c, "verdict": _verdict(c)})
    return out


def one_std_apart(a: float, sa: float | None, b: float, sb: float | None) -> bool | None:
    """True when the mean ± std bars of ``a`` and ``b`` do not overlap; None when a std is missing (one seed)."""
    if sa is None or sb is None:
        return None
    return a + sa < b - sb or a - sa > b + sb


def robustness_statements(rows: list[dict], held_out: list[str]) -> list[str]:
    """One sentence per task, fraction and held-out view: W1 (mean ± std) of pre-trained full vs scratch."""
    out = []
    for row in rows:
        if row["mode"] != "full" or not row["method"].startswith("rs3l-"):
            continue
        twin = next((r for r in rows if r["task"] == row["task"] and r["label_fraction"] == row["label_fraction"]
                     and r["mode"] == "scratch"), None)
        for v in held_out:
            a, b = row.get(f"w1_{v}"), (twin or {}).get(f"w1_{v}")
            if a is None or b is None:
                continue
            apart = one_std_apart(a, row.get(f"w1_{v}_std"), b, twin.get(f"w1_{v}_std"))
            if apart is None:
                word = "one seed only, no spread to judge the difference by"
            else:
                word = ("compatible within one std" if not apart else "smaller" if a < b else "larger")
            out.append(f"{row['task']}, {_fmt('label_fraction', row['label_fraction'])} of the labels, held-out view "
                       f"{v}: W1 of the score shift {_pm(row, f'w1_{v}')} (pre-trained, full) vs "
                       f"{_pm(twin, f'w1_{v}')} (scratch): {word}.")
    return out


def _sentence(c: dict) -> str:
    pct = f"{100 * c['level']:.0f}%"
    fmt = ".4f" if c["metric"] == "auc" else ".2f"
    return (f"{c['task']}, {_fmt('label_fraction', c['label_fraction'])} of the labels, {c['comparison']}: "
            f"Δ{c['metric']} = {c['delta']:+{fmt}} [{c['low']:+{fmt}}, {c['high']:+{fmt}}] ({pct} paired bootstrap "
            f"over test jets and seeds; {c['a']} − {c['b']}): {c['verdict']}.")


# ----------------------------------------------------------------------------- formatting

def _fmt(col: str, v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        if math.isnan(v):
            return "–"
        if col.startswith("rejection"):
            return f"{v:.1f}"
        if col == "label_fraction":
            return f"{100 * v:g}%" if v < 1 else "100%"
        if col == "converged":
            return f"{v:.0%}"
        return f"{v:.3f}" if col.startswith(("accuracy", "auc")) else f"{v:.4f}"
    return str(v)


def to_csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({c: ("" if row.get(c) is None else row[c]) for c in columns})
    return buf.getvalue()


def _pm(row: dict, col: str) -> str:
    v, s = row.get(col), row.get(f"{col}_std")
    return _fmt(col, v) + ("" if s is None or v is None or not math.isfinite(v) else f" ± {_fmt(col, s)}")


def to_markdown(columns: list[str], rows: list[dict], held_out: list[str] = (), statements: list[str] = ()) -> str:
    shown = [c for c in columns if not c.endswith("_std") and not c.startswith(("fpr_shift", "auc_ci"))]
    header = [("auc [95% CI]" if c == "auc" else c) for c in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        cells = []
        for c in shown:
            if c in ID_COLUMNS:
                cells.append(_fmt(c, row.get(c)) if c == "label_fraction" else str(row.get(c)))
            elif c == "auc" and row.get("auc_ci_low") is not None:
                cells.append(f"{_pm(row, c)} [{row['auc_ci_low']:.3f}, {row['auc_ci_high']:.3f}]")
            else:
                cells.append(_pm(row, c) if f"{c}_std" in columns else _fmt(c, row.get(c)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Each row: mean ± standard deviation over the repeat seeds (n_seeds; every seed draws its own "
             "labelled subset, shared by all arms); [95% CI]: bootstrap interval over the test jets of the "
             "seed-averaged AUC. accuracy, auc, rejection_at_<eff> (1/FPR at that signal efficiency): nominal test "
             "view. w1_<view>: Wasserstein-1 distance between the classifier-score distributions on nominal and on "
             "<view> (smaller = more robust). converged: share of seeds whose training converged. "
             "substructure-bdt = gradient-boosted trees on jet mass, soft-drop mass, tau21, tau32, multiplicity and "
             "pT (the physicist's baseline); random-<encoder> = the same probe on a randomly initialised encoder "
             "(what pre-training added)."]
    if held_out:
        notes.append(f"Views not used in pre-training (held out): {', '.join(held_out)}.")
    if statements:
        notes += ["", "Paired comparisons:", ""] + [f"- {s}" for s in statements]
    return "\n".join(lines + notes) + "\n"


def pm(v, s, digits: int = 3, missing: str = "–") -> str:
    """'mean ± std' with ``digits`` decimals; just the mean without a std, ``missing`` without a value."""
    if v is None or not math.isfinite(v):
        return missing
    return f"{v:.{digits}f}" + ("" if s is None or not math.isfinite(s) else f" ± {s:.{digits}f}")


def science_markdown(science: dict) -> str:
    """Section "What the representation kept" from ``rs3l science``'s JSON (missing parts are left out)."""
    lines = ["", "## What the representation kept", "",
             f"Frozen pre-trained encoder `{science.get('encoder', '?')}` (`rs3l science`; ± = bootstrap std "
             "over the test jets)."]
    inv = science.get("invariance") or {}
    if inv:
        lines += ["", "Invariance: AUC of a classifier telling the view's embeddings from the nominal view's "
                  "(0.5 = the encoder cannot tell them apart, i.e. invariant; 1 = fully separable).", "",
                  "| view | invariance AUC | jets |", "|---|---|---|"]
        lines += [f"| {v} | {pm(e.get('auc'), e.get('auc_std'))} | {e.get('n_jets', '–')} |"
                  for v, e in inv.items()]
    par = science.get("parameter") or {}
    if par:
        lines += ["", "Simulator parameter regressed from the embedding (R² 1 = fully recoverable, 0 = not at all; "
                  "resolution = std of the residual, in the parameter's units).", "",
                  "| view | parameter | R² | resolution | jets |", "|---|---|---|---|---|"]
        lines += [f"| {v} | {e.get('parameter', '–')} | {pm(e.get('r2'), e.get('r2_std'))} | "
                  f"{pm(e.get('resolution'), e.get('resolution_std'), 4)} | {e.get('n_jets', '–')} |"
                  for v, e in par.items()]
    from rs3l.evaluation.science import markdown_lines  # log ratio of paired re-simulations; clip retrieval
    lines += markdown_lines(science)
    an = science.get("anomaly") or {}
    if an:
        ci = an.get("auc_ci")
        lines += ["", f"Anomaly: class {an.get('class', '?')} (never seen in pre-training) against "
                  f"{', '.join(map(str, an.get('background') or [])) or '?'}: AUC "
                  f"{pm(an.get('auc'), an.get('auc_std'))}"
                  + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                  + f" ({an.get('n_signal', '?')} signal, {an.get('n_background', '?')} background jets)."]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def make_plots(results: list[dict], rows: list[dict], out_dir: Path, data_dir=None, embeddings=None) -> list[Path]:
    """Per task: ROC and score plots of seed 0 at the largest label fraction (readable), label efficiency and
    robustness from the table's rows (mean ± std over seeds)."""
    out = []
    for task in dict.fromkeys(r["task"] for r in results):
        rs = [r for r in results if r["task"] == task]
        top = max(r["label_fraction"] for r in rs)
        first = [r for r in rs if r["label_fraction"] == top and r["seed"] == min(x["seed"] for x in rs)]
        rows_t = [row for row in rows if row["task"] == task]
        t = _safe(task)
        out.append(plots.roc_curves(first, out_dir / f"roc_{t}.png"))
        out.append(plots.score_distributions(first, out_dir / f"scores_{t}.png"))
        out.append(plots.label_efficiency(rows_t, out_dir / f"label_efficiency_{t}.png"))
        views = list(dict.fromkeys(v for r in rs for v in r["robustness"]))
        if views:
            held = set(v for r in rs for v in r.get("held_out_views", []))
            out.append(plots.robustness_bars([row for row in rows_t if row["label_fraction"] == top], views, held,
                                             out_dir / f"robustness_{t}.png"))
    if data_dir is not None:
        out.append(plots.jet_mass(data_dir, out_dir / "jet_mass.png"))
    if embeddings is not None and Path(embeddings).exists():
        with atomic_path(out_dir / "embeddings.png") as tmp:
            shutil.copyfile(embeddings, tmp)
        out.append(out_dir / "embeddings.png")
    elif embeddings is not None:
        log.info("no pre-training embedding plot at %s; skipped", embeddings)
    return out


def report(cfg: dict, inputs, out_dir, data_dir=None) -> dict:
    """Write the table, comparisons and plots; log them to the MLflow parent run and finish it."""
    results = load_results(inputs)
    if data_dir is not None and not (Path(data_dir) / "manifest.json").exists():
        raise FileNotFoundError(f"no manifest.json in data folder '{data_dir}' (--data)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = cfg["evaluate"]
    boot = {"n_boot": ev["bootstrap"], "level": ev["confidence_level"], "seed": cfg["seed"]}
    columns, rows = table(results, **boot)
    held = list(dict.fromkeys(v for r in results for v in r.get("held_out_views", [])))
    comps = comparisons(results, **boot)
    md = to_markdown(columns, rows, held, [_sentence(c) for c in comps] + robustness_statements(rows, held))
    science = results_path(cfg, "evaluate", "science.json")
    if science.exists():  # written by the workflow's `science` rule (rs3l science)
        md += science_markdown(json.loads(science.read_text()))
    write_text(out_dir / "results.csv", to_csv(columns, rows))
    write_text(out_dir / "results.md", md)
    write_text(out_dir / "comparisons.json", json.dumps(comps, indent=1, default=float))
    (out_dir / "plots").mkdir(exist_ok=True)
    figures = make_plots(results, rows, out_dir / "plots", data_dir, results_path(cfg, "pretrain", "embeddings.png"))
    files = [out_dir / "results.csv", out_dir / "results.md", out_dir / "comparisons.json", *figures]
    parent = log_to_parent(cfg, files)
    print(md, end="")
    return {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md", "plots": figures, "rows": rows,
            "columns": columns, "comparisons": comps, "parent_run_id": parent}


def log_to_parent(cfg: dict, files: list[Path], artifact_path: str = "summary") -> str:
    """Log ``files`` as artifacts of the workflow's MLflow parent run (under ``artifact_path``) and finish it."""
    from rs3l import tracking

    c = tracking.client(cfg)
    parent = tracking.init_parent(cfg)
    for f in files:
        c.log_artifact(parent, str(f), artifact_path=artifact_path)
    c.set_terminated(parent, "FINISHED")
    return parent


def main(cfg: dict, args) -> None:
    """``rs3l report``."""
    report(cfg, args.inputs, args.out_dir, args.data)

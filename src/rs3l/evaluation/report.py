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
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from rs3l.atomic import atomic_path, write_text
from rs3l.config import results_path
from rs3l.evaluation import plots, stats
from rs3l.evaluation.stats import pm
from rs3l.evaluation.tasks import describe_labels, labels_order, parse_labels, record_labels

log = logging.getLogger(__name__)

ID_COLUMNS = ["task", "method", "mode", "labels", "n_labels", "n_seeds"]
#: in results.csv besides the ID columns: the labelled set as a number, and the pre-training pool
CSV_EXTRA = ["label_fraction", "label_count", "pool_jets"]
REQUIRED = ("task", "method", "mode", "label_fraction", "metrics", "views", "robustness")
_POOL = re.compile(r"^rs3l-(?P<encoder>.+)-pool(?P<jets>\d+)$")
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
            r["labels"] = record_labels(r)
            key = (r["task"], r["method"], r["mode"], r["labels"], int(r["seed"]))
            if key in seen:
                raise ValueError(f"'{p}' and '{seen[key]}' are both results of {key}; pass each arm and seed once")
            seen[key] = p
            r["_path"] = str(p)
            results.append(r)
    if not results:
        raise ValueError("no evaluation results given (--inputs)")
    return sorted(results, key=lambda r: (r["task"], r["method"], r["mode"], labels_order(r["labels"]), r["seed"]))


def _eff(e: float) -> str:
    return f"{e:g}"


def group(results: list[dict]) -> dict:
    """{(task, method, mode, labels): [records over seeds]}, in sorted order."""
    groups = defaultdict(list)
    for r in results:
        groups[(r["task"], r["method"], r["mode"], record_labels(r))].append(r)
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


def pool_jets(method: str) -> int | None:
    """Jets in the pre-training pool of a pool-scan method (``rs3l-particlenet-pool2000`` -> 2000), else None."""
    m = _POOL.match(method)
    return int(m.group("jets")) if m else None


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
    columns = list(ID_COLUMNS) + CSV_EXTRA
    for name in getters:
        columns += [name, f"{name}_std"] + (["auc_ci_low", "auc_ci_high"] if name == "auc" else [])
        columns += [f"{name}_lower_bound"] if name.startswith("rejection") else []
    columns += ["n_background", "converged"]
    rows = []
    for (task, method, mode, labels), recs in group(results).items():
        fraction, count = parse_labels(labels)
        n_bkg = min(int(r["metrics"].get("n_background") or 0) for r in recs)
        row = {"task": task, "method": method, "mode": mode, "labels": labels, "label_fraction": fraction,
               "label_count": count, "pool_jets": pool_jets(method), "n_labels": recs[0].get("n_labels"),
               "n_seeds": len(recs), "n_background": n_bkg}
        for name, get in getters.items():
            vals = [get(r) for r in recs]
            finite = [v for v in vals if v is not None and math.isfinite(v)]
            if name.startswith("rejection") and any(v == math.inf for v in vals):
                # no background jet passed: the rejection exceeds the number of background test jets. The row
                # then holds a lower bound of the seed mean (those seeds counted at that number), never inf.
                bounds = [v if math.isfinite(v) else float(r["metrics"].get("n_background") or 0)
                          for v, r in zip(vals, recs) if v is not None]
                row[name], row[f"{name}_std"] = None, None
                row[f"{name}_lower_bound"] = float(np.mean(bounds))
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
    """Paired bootstrap comparisons per task and labelled set (see the module docstring).

    Every pre-trained method (``rs3l-<encoder>``, or one per pool of a pool-size scan) is compared with
    the random-encoder probe and with ``scratch``; the best deep arm with the BDT; in a scan, the
    largest pool with the smallest (linear probe and ``full``)."""
    groups = group(results)
    out = []
    tasks = dict.fromkeys(k[0] for k in groups)
    for task in tasks:
        label_sets = sorted({k[3] for k in groups if k[0] == task}, key=labels_order)
        methods = sorted({k[1] for k in groups if k[0] == task}, key=lambda m: (pool_jets(m) or 0, m))
        pretrained = [m for m in methods if m.startswith("rs3l-")]
        pools = [m for m in pretrained if pool_jets(m) is not None]
        for labels in label_sets:
            def arm(method, mode):
                return groups.get((task, method, mode, labels))
            pairs = []
            for m in pretrained:
                enc = _POOL.match(m).group("encoder") if pool_jets(m) is not None else m.split("-", 1)[1]
                tag = f" [{m}]" if len(pretrained) > 1 else ""
                pairs.append((f"pre-training vs random init (frozen linear probe){tag}", arm(m, "linear"),
                              arm(f"random-{enc}", "linear"), ("auc",)))
                pairs.append((f"pre-trained fine-tune vs training from scratch{tag}", arm(m, "full"),
                              arm(f"supervised-{enc}", "scratch"), ("auc", "rejection_at_0.5")))
            if len(pools) > 1:
                for mode in ("linear", "full"):
                    pairs.append((f"largest vs smallest pre-training pool ({mode}; {pool_jets(pools[-1])} vs "
                                  f"{pool_jets(pools[0])} jets)", arm(pools[-1], mode), arm(pools[0], mode), ("auc",)))
            deep = [(k, v) for k, v in groups.items() if k[0] == task and k[3] == labels and k[2] in DEEP_MODES]
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
                fraction, count = parse_labels(labels)
                for metric in metrics:
                    c = stats.paired_bootstrap(metric, sa[1], sa[2], sb[2], n_boot, level, seed)
                    out.append({"task": task, "labels": labels, "label_fraction": fraction, "label_count": count,
                                "n_labels": a[0].get("n_labels"), "comparison": what, "metric": metric,
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
        twin = next((r for r in rows if r["task"] == row["task"] and r["labels"] == row["labels"]
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
            out.append(f"{row['task']}, {_labels_phrase(row)}, held-out view {v}: W1 of the score shift "
                       f"{_pm(row, f'w1_{v}')} ({row['method']} full) vs {_pm(twin, f'w1_{v}')} (scratch): {word}.")
    return out


def _sentence(c: dict) -> str:
    pct = f"{100 * c['level']:.0f}%"
    fmt = ".4f" if c["metric"] == "auc" else ".2f"
    if not math.isfinite(c["delta"]):  # a rejection with no background test jet left: nothing to subtract
        return (f"{c['task']}, {_labels_phrase(c)}, {c['comparison']}: Δ{c['metric']} not measurable: no background "
                f"test jet passes the cut for {c['a']} or {c['b']} ({c['verdict']}).")
    return (f"{c['task']}, {_labels_phrase(c)}, {c['comparison']}: "
            f"Δ{c['metric']} = {c['delta']:+{fmt}} [{c['low']:+{fmt}}, {c['high']:+{fmt}}] ({pct} paired bootstrap "
            f"over test jets and seeds; {c['a']} − {c['b']}): {c['verdict']}.")


# ----------------------------------------------------------------------------- formatting

def _labels_phrase(row: dict) -> str:
    """'10% of the labels (224 jets)' or '300 labelled jets'."""
    fraction, count = parse_labels(row["labels"])
    n = row.get("n_labels")
    if count is not None:
        return f"{count} labelled jets" + (f" ({n} available)" if n is not None and n < count else "")
    return f"{describe_labels(row['labels'])} of the labels" + (f" ({n} jets)" if n is not None else "")


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
    bound = row.get(f"{col}_lower_bound")
    if v is None and bound is not None:  # no background test jet passed (footnote of the table)
        return f"> {bound:.0f}¹"
    return _fmt(col, v) + ("" if s is None or v is None or not math.isfinite(v) else f" ± {_fmt(col, s)}")


def _auc_cell(row: dict | None) -> str:
    if not row or row.get("auc") is None:
        return "–"
    ci = (f" [{row['auc_ci_low']:.3f}, {row['auc_ci_high']:.3f}]" if row.get("auc_ci_low") is not None else "")
    return _pm(row, "auc") + ci


REJECTION_NOTE = ("¹ No background test jet passed the cut in at least one seed: the rejection exceeds the number "
                  "of background test jets ({n}), and the cell gives a lower bound of the seed mean (such seeds "
                  "counted at that number).")


def to_markdown(columns: list[str], rows: list[dict], held_out: list[str] = (), statements: list[str] = ()) -> str:
    """The full table (one row per task, method, mode and labelled set) and its notes."""
    shown = [c for c in columns if not c.endswith(("_std", "_lower_bound")) and c not in CSV_EXTRA
             and c != "n_background" and not c.startswith(("fpr_shift", "auc_ci"))]
    header = [("auc [95% CI]" if c == "auc" else c) for c in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        cells = []
        for c in shown:
            if c == "labels":
                cells.append(describe_labels(row[c]))
            elif c in ID_COLUMNS:
                cells.append(str(row.get(c)))
            elif c == "auc":
                cells.append(_auc_cell(row))
            else:
                cells.append(_pm(row, c) if f"{c}_std" in columns else _fmt(c, row.get(c)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Each row: mean ± standard deviation over the repeat seeds (n_seeds; every seed draws its own "
             "labelled subset, shared by all arms); [95% CI]: bootstrap interval over the test jets of the "
             "seed-averaged AUC. labels: the labelled set (a share of the task's train jets, or a number of jets "
             "split equally between signal and background); n_labels: jets actually labelled. accuracy, auc, "
             "rejection_at_<eff> (1/FPR at that signal efficiency): nominal test "
             "view. w1_<view>: Wasserstein-1 distance between the classifier-score distributions on nominal and on "
             "<view> (smaller = more robust). converged: share of seeds whose training converged. "
             "substructure-bdt = gradient-boosted trees on jet mass, soft-drop mass, tau21, tau32, multiplicity and "
             "pT (the physicist's baseline); random-<encoder> = the same probe on a randomly initialised encoder "
             "(what pre-training added); rs3l-<encoder>-pool<n> = pre-trained on a pool of n unlabelled jets."]
    bounded = [row["n_background"] for row in rows if any(row.get(f"{c}_lower_bound") is not None for c in columns
                                                             if c.startswith("rejection"))]
    if bounded:
        notes += ["", REJECTION_NOTE.format(n=", ".join(str(n) for n in sorted(set(bounded))))]
    if held_out:
        notes.append(f"Views not used in pre-training (held out): {', '.join(held_out)}.")
    if statements:
        notes += ["", "Paired comparisons:", ""] + [f"- {s}" for s in statements]
    return "\n".join(lines + notes) + "\n"


# ----------------------------------------------------------------------------- the answer first

def _best_pretrained(rows: list[dict]) -> dict | None:
    cands = [r for r in rows if r["method"].startswith("rs3l-") and r.get("auc") is not None]
    return max(cands, key=lambda r: r["auc"]) if cands else None


UNCONVERGED_NOTE = ("² Not every seed of this arm converged (the full table's `converged` column gives the share): "
                    "a seed that never improved on its untrained start keeps its random initialisation, whose AUC "
                    "can lie below 0.5; its logs say so.")


def _unconverged(row: dict | None) -> bool:
    return row is not None and row.get("converged") is not None and row["converged"] < 1


def _headline_cell(row: dict | None) -> str:
    return _auc_cell(row) + ("²" if _unconverged(row) else "")


def headline(rows: list[dict], comps: list[dict], robustness: list[str]) -> str:
    """The section results.md opens with: per task a compact table (rows: labelled sets; columns: the best
    pre-trained arm, scratch, the BDT, the random-encoder probe; AUC with its interval), the paired
    comparisons (beyond the noise first) and the held-out-shower robustness."""
    lines, unconverged = ["## The answer first", ""], False
    for task in dict.fromkeys(r["task"] for r in rows):
        rt = [r for r in rows if r["task"] == task]
        lines += [f"**{task}** — AUC on the nominal test view, mean ± std over seeds [95% bootstrap interval]:", "",
                  "| labelled jets | best pre-trained arm | supervised from scratch | substructure BDT | "
                  "random-encoder linear probe |", "|---|---|---|---|---|"]
        for labels in sorted({r["labels"] for r in rt}, key=labels_order):
            at = [r for r in rt if r["labels"] == labels]
            best = _best_pretrained(at)
            pick = {m: next((r for r in at if r["method"].startswith(m[0]) and r["mode"] == m[1]), None)
                    for m in (("supervised-", "scratch"), ("substructure-bdt", "baseline"), ("random-", "linear"))}
            n = at[0].get("n_labels")
            name = describe_labels(labels) + (f" ({n})" if parse_labels(labels)[0] is not None else "")
            first = f"{_headline_cell(best)} ({best['method']} {best['mode']})" if best else "–"
            lines.append(f"| {name} | {first} | " + " | ".join(_headline_cell(pick[m]) for m in pick) + " |")
            unconverged |= any(_unconverged(r) for r in [best, *pick.values()])
        lines.append("")
    if unconverged:
        lines += [UNCONVERGED_NOTE, ""]
    ordered = sorted(comps, key=lambda c: (c["verdict"] == "no difference beyond the noise",
                                           c["verdict"] == "undetermined"))
    if ordered:
        n_beyond = sum(c["verdict"].endswith("beyond the noise") and not c["verdict"].startswith("no")
                       for c in ordered)
        lines += [f"Paired comparisons ({n_beyond} of {len(ordered)} beyond the noise, listed first; "
                  "95% paired bootstrap over test jets and seeds):", ""]
        lines += [f"- {_sentence(c)}" for c in ordered]
        lines.append("")
    if robustness:
        lines += ["Robustness to the held-out simulator (views never seen in pre-training):", ""]
        lines += [f"- {s}" for s in robustness]
        lines.append("")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the pool-size scan

def pool_scan(rows: list[dict], modes=("linear", "full")) -> list[dict]:
    """Rows of a pool-size scan: per (task, mode, labels) the AUC mean/std at each pool size, with the
    matching baseline (random-encoder probe for ``linear``, ``scratch`` for ``full``). Empty without a scan."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        rt = [r for r in rows if r["task"] == task]
        scan = [r for r in rt if r["pool_jets"] is not None and r["mode"] in modes]
        if len({r["pool_jets"] for r in scan}) < 2:
            continue
        for mode in modes:
            for labels in sorted({r["labels"] for r in scan if r["mode"] == mode}, key=labels_order):
                pts = sorted((r["pool_jets"], r["auc"], r.get("auc_std")) for r in scan
                             if r["mode"] == mode and r["labels"] == labels and r.get("auc") is not None)
                base = next((r for r in rt if r["labels"] == labels and (
                    (mode == "linear" and r["method"].startswith("random-") and r["mode"] == "linear")
                    or (mode != "linear" and r["mode"] == "scratch"))), None)
                out.append({"task": task, "mode": mode, "labels": labels, "n_labels": next(
                    (r["n_labels"] for r in scan if r["labels"] == labels), None), "points": pts,
                    "baseline": None if base is None else (base["method"], base["mode"], base.get("auc"),
                                                          base.get("auc_std"))})
    return out


def pool_scan_markdown(scan: list[dict]) -> str:
    if not scan:
        return ""
    pools = sorted({p for s in scan for p, _, _ in s["points"]})
    lines = ["", "## Pre-training pool scan", "",
             "AUC (nominal test view, mean ± std over seeds) against the number of unlabelled jets pre-training saw; "
             "the baseline is the random-encoder probe (linear) or the same network trained from scratch (full).", "",
             "| task | mode | labelled jets | " + " | ".join(f"pool {p}" for p in pools) + " | baseline |",
             "|---|---|---|" + "---|" * len(pools) + "---|"]
    for s in scan:
        by_pool = {p: (m, sd) for p, m, sd in s["points"]}
        cells = [pm(*by_pool[p]) if p in by_pool else "–" for p in pools]
        base = s["baseline"]
        lines.append(f"| {s['task']} | {s['mode']} | {describe_labels(s['labels'])} | " + " | ".join(cells)
                     + f" | {pm(base[2], base[3]) + f' ({base[0]} {base[1]})' if base else '–'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- where the time went

#: rules counted as the simulation and as the evaluation in the job-seconds budget
SIMULATION_STAGES = ("generate", "split_lhe", "resimulate")
EVALUATION_STAGES = ("finetune", "probe", "science")


def job_seconds(benchmarks_dir) -> dict[str, dict]:
    """{stage: {"jobs", "seconds", "max_rss_mb"}} from Snakemake's benchmark files under ``benchmarks_dir``
    (``<rule>.tsv``, ``<rule>_<wildcards>.tsv`` or ``<rule>/<...>.tsv``); stage = the rule (pool scans' rules
    ``pretrain_pool<n>``/``probe_pool<n>`` count as pretrain/probe)."""
    out: dict[str, dict] = {}
    root = Path(benchmarks_dir)
    for tsv in sorted(root.rglob("*.tsv")):
        rel = tsv.relative_to(root)
        stage = rel.parts[0] if len(rel.parts) > 1 else re.split(r"_(?=pool|\d)", rel.stem)[0]
        try:
            head, values = tsv.read_text().splitlines()[:2]
            rec = dict(zip(head.split("\t"), values.split("\t")))
            sec, rss = float(rec["s"]), float(rec.get("max_rss", "nan"))
        except (ValueError, KeyError):
            continue  # a benchmark file of a job still running or killed
        e = out.setdefault(stage, {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
        e["jobs"] += 1
        e["seconds"] += sec
        if math.isfinite(rss):
            e["max_rss_mb"] = max(e["max_rss_mb"], rss)
    return out


def job_seconds_markdown(stages: dict[str, dict]) -> str:
    if not stages:
        return ""
    sim = sum(v["seconds"] for k, v in stages.items() if k in SIMULATION_STAGES)
    ev = sum(v["seconds"] for k, v in stages.items() if k in EVALUATION_STAGES)
    lines = ["", "## Where the time went", "", "Job seconds per stage (Snakemake benchmark files; wall seconds of each "
             "job, summed over its jobs):", "", "| stage | jobs | job seconds | peak memory (MB) |", "|---|---|---|---|"]
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]["seconds"]):
        lines.append(f"| {k} | {v['jobs']} | {v['seconds']:.0f} | {v['max_rss_mb']:.0f} |")
    lines.append(f"| **total** | {sum(v['jobs'] for v in stages.values())} | "
                 f"{sum(v['seconds'] for v in stages.values()):.0f} | |")
    if sim:
        lines += ["", f"Evaluation (fine-tuning + probes + science) {ev:.0f} s against simulation {sim:.0f} s: "
                      f"{ev / sim:.2f} of it."]
    return "\n".join(lines) + "\n"


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


def make_plots(results: list[dict], rows: list[dict], out_dir: Path, data_dir=None, embeddings=None,
               scan: list[dict] = ()) -> list[Path]:
    """Per task: ROC and score plots of seed 0 at the largest labelled set (readable), label efficiency and
    robustness from the table's rows (mean ± std over seeds); with a pool-size scan, AUC against the pool."""
    out = []
    for task in dict.fromkeys(r["task"] for r in results):
        rs = [r for r in results if r["task"] == task]
        top = max((r["labels"] for r in rs), key=lambda t: (rows_n_labels(rows, task, t), labels_order(t)))
        first = [r for r in rs if r["labels"] == top and r["seed"] == min(x["seed"] for x in rs)]
        rows_t = [row for row in rows if row["task"] == task]
        t = _safe(task)
        out.append(plots.roc_curves(first, out_dir / f"roc_{t}.png"))
        out.append(plots.score_distributions(first, out_dir / f"scores_{t}.png"))
        out.append(plots.label_efficiency(rows_t, out_dir / f"label_efficiency_{t}.png"))
        views = list(dict.fromkeys(v for r in rs for v in r["robustness"]))
        if views:
            held = set(v for r in rs for v in r.get("held_out_views", []))
            out.append(plots.robustness_bars([row for row in rows_t if row["labels"] == top], views, held,
                                             out_dir / f"robustness_{t}.png", _labels_phrase({"labels": top})))
        scan_t = [sc for sc in scan if sc["task"] == task]
        if scan_t:
            out.append(plots.pool_scan(scan_t, out_dir / f"pool_scan_{t}.png"))
    if data_dir is not None:
        out.append(plots.jet_mass(data_dir, out_dir / "jet_mass.png"))
    if embeddings is not None and Path(embeddings).exists():
        with atomic_path(out_dir / "embeddings.png") as tmp:
            shutil.copyfile(embeddings, tmp)
        out.append(out_dir / "embeddings.png")
    elif embeddings is not None:
        log.info("no pre-training embedding plot at %s; skipped", embeddings)
    return out


def rows_n_labels(rows: list[dict], task: str, labels: str) -> int:
    """Labelled jets of a (task, labelled set) in the table (0 if unknown)."""
    return max((r.get("n_labels") or 0 for r in rows if r["task"] == task and r["labels"] == labels), default=0)


def _embeddings_plot(cfg: dict) -> Path:
    """The pre-training's embedding plot; in a pool-size scan the largest pool's."""
    pools = cfg["pretrain"].get("pools") or []
    if pools:
        from rs3l.plan import pool_name

        return results_path(cfg, "pretrain", pool_name(max(pools)), "embeddings.png")
    return results_path(cfg, "pretrain", "embeddings.png")


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
    robust = robustness_statements(rows, held)
    scan = pool_scan(rows)
    stages = job_seconds(results_path(cfg, "benchmarks"))
    md = f"# Results: {cfg['run_name']}\n\n" + headline(rows, comps, robust) + pool_scan_markdown(scan)
    md += "\n## Every arm\n\n" + to_markdown(columns, rows, held, [_sentence(c) for c in comps] + robust)
    science = results_path(cfg, "evaluate", "science.json")
    if science.exists():  # written by the workflow's `science` rule (rs3l science)
        md += science_markdown(json.loads(science.read_text()))
    md += job_seconds_markdown(stages)
    write_text(out_dir / "results.csv", to_csv(columns, rows))
    write_text(out_dir / "results.md", md)
    write_text(out_dir / "comparisons.json", json.dumps(comps, indent=1, default=float))
    write_text(out_dir / "job_seconds.json", json.dumps(stages, indent=1))
    (out_dir / "plots").mkdir(exist_ok=True)
    figures = make_plots(results, rows, out_dir / "plots", data_dir, _embeddings_plot(cfg), scan)
    files = [out_dir / "results.csv", out_dir / "results.md", out_dir / "comparisons.json",
             out_dir / "job_seconds.json", *figures]
    parent = log_to_parent(cfg, files)
    print(md, end="")
    return {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md", "plots": figures, "rows": rows,
            "columns": columns, "comparisons": comps, "pool_scan": scan, "job_seconds": stages,
            "parent_run_id": parent}


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

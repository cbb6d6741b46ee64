"""``rs3l report``: the results table and plots from the JSON files of ``rs3l evaluate``.

Writes to ``--out-dir``:

- ``results.csv`` and ``results.md``: one row per (task, method, mode, label_fraction)
  with the nominal-view ``accuracy``, ``auc``, ``rejection_at_<eff>``, and per
  non-nominal view ``w1_<view>`` (Wasserstein-1 of the score vs nominal) and
  ``fpr_shift_at_<eff>_<view>`` (FPR change at the nominal 50%-efficiency threshold);
- in ``plots/``: ``roc_<task>.png``, ``scores_<task>.png``, ``label_efficiency_<task>.png``, ``robustness_<task>.png``;
- with ``--data``: ``jet_mass.png`` (mass and soft-drop mass per class and view, test split);
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
from pathlib import Path

from rs3l.atomic import atomic_path, write_text
from rs3l.config import results_path
from rs3l.evaluation import plots

log = logging.getLogger(__name__)

ID_COLUMNS = ["task", "method", "mode", "label_fraction", "n_labels"]
REQUIRED = ("task", "method", "mode", "label_fraction", "metrics", "views", "robustness")


def load_results(paths) -> list[dict]:
    """Read the evaluation JSONs; each gets ``_path``. Raises on a missing file, a bad file or a duplicate arm."""
    results, seen = [], {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"evaluation result '{p}' does not exist; run `rs3l evaluate --out {p}` first")
        try:
            r = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"'{p}' is not valid JSON: {exc}") from exc
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"'{p}' is not an `rs3l evaluate` result: missing keys {missing}")
        key = (r["task"], r["method"], r["mode"], float(r["label_fraction"]))
        if key in seen:
            raise ValueError(f"'{p}' and '{seen[key]}' are both results of {key}; pass each arm once")
        seen[key] = p
        r["_path"] = str(p)
        results.append(r)
    if not results:
        raise ValueError("no evaluation results given (--inputs)")
    return sorted(results, key=lambda r: (r["task"], r["method"], r["mode"], r["label_fraction"]))


def _eff(e: float) -> str:
    return f"{e:g}"


def table(results: list[dict]) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per arm; metric columns are the union over the results, in first-seen order."""
    effs = list(dict.fromkeys(_eff(e) for r in results for e in r.get("efficiencies", [0.3, 0.5, 0.7])))
    views = list(dict.fromkeys(v for r in results for v in r["robustness"]))
    robust_eff = _eff(results[0].get("robustness_efficiency", 0.5))
    columns = ID_COLUMNS + ["accuracy", "auc"] + [f"rejection_at_{e}" for e in effs]
    columns += [f"w1_{v}" for v in views] + [f"fpr_shift_at_{robust_eff}_{v}" for v in views]
    rows = []
    for r in results:
        m = r["metrics"]
        row = {"task": r["task"], "method": r["method"], "mode": r["mode"], "label_fraction": r["label_fraction"],
               "n_labels": r.get("n_labels"), "accuracy": m.get("accuracy"), "auc": m.get("auc")}
        row.update({f"rejection_at_{e}": m.get(f"rejection_at_{e}") for e in effs})
        # evaluate stores None for an infinite rejection (no background passes); show it as inf
        row.update({f"rejection_at_{e}": math.inf for e in effs
                    if row[f"rejection_at_{e}"] is None and m.get(f"fpr_at_{e}") == 0})
        for v in views:
            rv = r["robustness"].get(v, {})
            row[f"w1_{v}"] = rv.get("w1")
            row[f"fpr_shift_at_{robust_eff}_{v}"] = rv.get(f"fpr_shift_at_{robust_eff}")
        rows.append(row)
    return columns, rows


def _fmt(col: str, v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        if col.startswith("rejection"):
            return f"{v:.1f}"
        if col == "label_fraction":
            return f"{v:g}"
        return f"{v:.4f}"
    return str(v)


def to_csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({c: ("" if row.get(c) is None else row[c]) for c in columns})
    return buf.getvalue()


def to_markdown(columns: list[str], rows: list[dict], held_out: list[str] = ()) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(c, row.get(c)) for c in columns) + " |" for row in rows]
    notes = ["", "accuracy, auc, rejection_at_<eff> (1/FPR at that signal efficiency): nominal test view. "
             "w1_<view>: Wasserstein-1 distance between the classifier-score distributions on nominal and on <view>; "
             "fpr_shift_at_<eff>_<view>: FPR on <view> minus FPR on nominal, at the threshold giving <eff> signal "
             "efficiency on nominal."]
    if held_out:
        notes.append(f"Views not used in pre-training (held out): {', '.join(held_out)}.")
    return "\n".join(lines + notes) + "\n"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def make_plots(results: list[dict], rows: list[dict], out_dir: Path, data_dir=None, embeddings=None) -> list[Path]:
    out = []
    for task in dict.fromkeys(r["task"] for r in results):
        rs = [r for r in results if r["task"] == task]
        rows_t = [row for row in rows if row["task"] == task]
        t = _safe(task)
        out.append(plots.roc_curves(rs, out_dir / f"roc_{t}.png"))
        out.append(plots.score_distributions(rs, out_dir / f"scores_{t}.png"))
        out.append(plots.label_efficiency(rows_t, out_dir / f"label_efficiency_{t}.png"))
        if any(r["robustness"] for r in rs):
            out.append(plots.robustness_bars(rs, out_dir / f"robustness_{t}.png"))
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
    """Write the table and plots; log them to the MLflow parent run and finish it. Returns paths and rows."""
    results = load_results(inputs)
    if data_dir is not None and not (Path(data_dir) / "manifest.json").exists():
        raise FileNotFoundError(f"no manifest.json in data folder '{data_dir}' (--data)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns, rows = table(results)
    held = list(dict.fromkeys(v for r in results for v in r.get("held_out_views", [])))
    md = to_markdown(columns, rows, held)
    write_text(out_dir / "results.csv", to_csv(columns, rows))
    write_text(out_dir / "results.md", md)
    (out_dir / "plots").mkdir(exist_ok=True)
    figures = make_plots(results, rows, out_dir / "plots", data_dir, results_path(cfg, "pretrain", "embeddings.png"))
    files = [out_dir / "results.csv", out_dir / "results.md", *figures]
    parent = _log_to_parent(cfg, files)
    print(md, end="")
    return {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md", "plots": figures, "rows": rows,
            "columns": columns, "parent_run_id": parent}


def _log_to_parent(cfg: dict, files: list[Path]) -> str:
    from rs3l import tracking

    c = tracking.client(cfg)
    parent = tracking.init_parent(cfg)
    for f in files:
        c.log_artifact(parent, str(f), artifact_path="summary")
    c.set_terminated(parent, "FINISHED")
    return parent


def main(cfg: dict, args) -> None:
    """``rs3l report``."""
    report(cfg, args.inputs, args.out_dir, args.data)

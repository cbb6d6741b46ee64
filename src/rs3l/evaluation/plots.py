"""Plots of the results report (PNG, matplotlib Agg; no pyplot state, so safe in batch jobs).

Every function takes evaluation results (the dicts written by ``rs3l evaluate``) or a
data folder, writes one PNG and returns its path. Masses in GeV.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rs3l.atomic import atomic_path  # noqa: E402


def arm_label(r: dict) -> str:
    from rs3l.evaluation.tasks import describe_labels, record_labels

    return f"{r['method']} {r['mode']} ({describe_labels(record_labels(r))})"


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: the temp name has no .png suffix
            fig.savefig(fh, format="png", dpi=110)
    return path


def _row_style(method: str) -> dict:
    if method.startswith("supervised"):
        return {"linestyle": "--"}
    if method.startswith(("random", "substructure")):
        return {"linestyle": ":"}
    return {"linestyle": "-"}


def _view_style(view: str) -> dict:
    """Nominal in thick black, the variations in the colour cycle."""
    return {"linewidth": 1.8, "color": "black", "zorder": 3} if view == "nominal" else {"linewidth": 1.0}


def roc_curves(results: list[dict], path, view: str = "nominal") -> Path:
    """Background rejection 1/FPR vs signal efficiency on ``view``, one line per arm (log y)."""
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    for r in results:
        roc = r["views"].get(view, {}).get("roc")
        if not roc:
            continue
        eff, fpr = np.asarray(roc["efficiency"]), np.asarray(roc["fpr"], dtype=float)
        ok = (eff > 0) & (fpr > 0)
        ax.plot(eff[ok], 1.0 / fpr[ok], label=f"{arm_label(r)} (AUC {r['views'][view].get('auc', float('nan')):.3f})",
                **_row_style(r["method"]))
    ax.set_yscale("log")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background rejection 1/FPR")
    ax.set_xlim(0, 1)
    ax.set_title(f"{results[0]['task']}: ROC on the {view} test view" if results else "ROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def score_distributions(results: list[dict], path) -> Path:
    """Classifier score per view (normalised), signal and background side by side, one row per arm."""
    n = max(len(results), 1)
    fig = Figure(figsize=(10, 2.4 * n + 0.6))
    axes = fig.subplots(n, 2, squeeze=False)
    for row, r in zip(axes, results):
        for ax, kind in zip(row, ("signal", "background")):
            for view, vm in r["views"].items():
                h = vm["score_hist"]
                edges, counts = np.asarray(h["edges"]), np.asarray(h[kind], dtype=float)
                if counts.sum() == 0:
                    continue
                density = counts / counts.sum() / np.diff(edges)
                ax.stairs(density, edges, label=view, **_view_style(view))
            ax.set_title(f"{arm_label(r)}: {kind}", fontsize=9)
            ax.set_xlabel("classifier score")
            ax.set_ylabel("density")
        row[0].legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _row_label(row: dict) -> str:
    return f"{row['method']} {row['mode']}"


def label_efficiency(rows: list[dict], path, metrics=("auc", "rejection_at_0.5")) -> Path:
    """``metrics`` on nominal vs the number of labelled jets (log x), one line per (method, mode), error bars =
    std over seeds (a rejection known only as a lower bound is drawn as an upward triangle at that bound)."""
    fig = Figure(figsize=(5.2 * len(metrics), 4.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    arms = sorted({(r["method"], r["mode"]) for r in rows})
    for ax, metric in zip(axes, metrics):
        for method, mode in arms:
            mine = [r for r in rows if (r["method"], r["mode"]) == (method, mode) and r.get("n_labels")]
            pts = sorted((r["n_labels"], r.get(metric), r.get(f"{metric}_std") or 0.0) for r in mine
                         if r.get(metric) is not None and np.isfinite(r.get(metric)))
            if pts:
                x, y, err = zip(*pts)
                line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{method} {mode}",
                                   **_row_style(method))
                bounds = [(r["n_labels"], r[f"{metric}_lower_bound"]) for r in mine
                          if r.get(f"{metric}_lower_bound") is not None]
                if bounds:
                    ax.plot(*zip(*bounds), "^", color=line[0].get_color())
        ax.set_xscale("log")
        if metric.startswith("rejection"):
            ax.set_yscale("log")
        ax.set_xlabel("labelled training jets")
        ax.set_ylabel(f"{metric} (nominal test view)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"label efficiency: {rows[0]['task']} (mean ± std over seeds)" if rows else "label efficiency")
    return _save(fig, path)


def robustness_bars(rows: list[dict], views: list[str], held_out, path, labels: str = "", key: str = "w1") -> Path:
    """Per non-nominal view, ``key``_<view> (W1 of the score vs nominal) per arm, error bars = std over seeds;
    held-out views marked *."""
    fig = Figure(figsize=(max(6.0, 1.4 * len(views) + 3), 4.4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        vals = [row.get(f"{key}_{v}") for v in views]
        errs = [row.get(f"{key}_{v}_std") or 0.0 for v in views]
        ax.bar(np.arange(len(views)) + i * width, [np.nan if v is None else v for v in vals], width, yerr=errs,
               capsize=2, label=_row_label(row), hatch="//" if row["method"].startswith("supervised") else None)
    ax.set_xticks(np.arange(len(views)) + 0.4 - width / 2, [v + ("*" if v in held_out else "") for v in views])
    ax.set_ylabel(f"{key}: score shift vs nominal")
    ax.set_title(f"robustness{' with ' + labels if labels else ''} (* = view not used in pre-training)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def pool_scan(scan: list[dict], path) -> Path:
    """AUC (mean ± std over seeds) against the pre-training pool size (log x), one line per labelled set, one
    panel per mode (linear probe, full fine-tune); the baseline of each labelled set (random-encoder probe,
    scratch) as a dashed line of the same colour. ``scan``: :func:`rs3l.evaluation.report.pool_scan` rows."""
    from rs3l.evaluation.tasks import describe_labels

    modes = list(dict.fromkeys(s["mode"] for s in scan))
    fig = Figure(figsize=(5.6 * len(modes), 4.4))
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    for ax, mode in zip(axes, modes):
        for s in (s for s in scan if s["mode"] == mode):
            x, y, err = zip(*s["points"])
            line = ax.errorbar(x, y, yerr=[e or 0.0 for e in err], marker="o", capsize=3,
                               label=f"{describe_labels(s['labels'])} labelled")
            base = s["baseline"]
            if base and base[2] is not None:
                ax.axhline(base[2], linestyle="--", linewidth=1, color=line[0].get_color())
        ax.set_xscale("log")
        ax.set_xlabel("unlabelled jets in the pre-training pool")
        ax.set_ylabel("AUC, nominal test view")
        what = "frozen encoder, linear probe (dashed: random encoder)" if mode == "linear" else \
            f"{mode} fine-tune (dashed: trained from scratch)"
        ax.set_title(f"{scan[0]['task']}: {what}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def jet_mass(data_dir, path, split: str = "test", mass_max: float = 300.0, bins: int = 30) -> Path:
    """Physics validation: jet mass and soft-drop mass (GeV) per class (columns) and per view (lines)."""
    import pyarrow.parquet as pq

    from rs3l.training.data import read_manifest, shard_paths

    manifest = read_manifest(data_dir)
    shards = shard_paths(data_dir, split, manifest)
    cols = ["label_name", "view", "mass", "soft_drop_mass"]
    tables = [pq.read_table(s, columns=cols) for s in shards]
    if not tables:
        raise ValueError(f"no {split} shards listed in {data_dir}/manifest.json")
    t = {c: np.concatenate([tb.column(c).to_numpy(zero_copy_only=False) for tb in tables]) for c in cols}
    classes = [c for c in manifest.get("classes", []) if np.any(t["label_name"] == c)] or sorted(set(t["label_name"]))
    views = [v for v in manifest.get("views", []) if np.any(t["view"] == v)] or sorted(set(t["view"]))
    # at most 5 classes side by side; each class has its mass panel above its soft-drop mass panel
    ncols = min(len(classes), 5)
    nblocks = -(-len(classes) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 5.6 * nblocks))
    axes = fig.subplots(2 * nblocks, ncols, squeeze=False)
    for k in range(len(classes), nblocks * ncols):
        axes[2 * (k // ncols), k % ncols].set_visible(False)
        axes[2 * (k // ncols) + 1, k % ncols].set_visible(False)
    edges = np.linspace(0.0, mass_max, bins + 1)
    for j, cls in enumerate(classes):
        for i, (var, label) in enumerate((("mass", "jet mass [GeV]"), ("soft_drop_mass", "soft-drop mass [GeV]"))):
            ax = axes[2 * (j // ncols) + i, j % ncols]
            for view in views:
                sel = (t["label_name"] == cls) & (t["view"] == view)
                if sel.any():
                    counts, _ = np.histogram(np.clip(t[var][sel], 0, mass_max), bins=edges)
                    ax.stairs(counts / max(sel.sum(), 1), edges, label=view, **_view_style(view))
            ax.set_xlabel(label)
            ax.set_ylabel("fraction of jets")
            ax.set_title(f"{cls} ({split})", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path)


def ablation_label_efficiency(rows: list[dict], fractions: list[float], path) -> Path:
    """Linear-probe AUC vs label fraction (log x), one line per ablation variant (baselines dotted), one panel
    per task; error bars = std over seeds. ``rows``: ``rs3l ablation-report`` rows (``linear_auc_f<f>``)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = Figure(figsize=(6.0 * max(len(tasks), 1), 4.6))
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        for r in (r for r in rows if r["task"] == task):
            pts = [(f, r.get(f"linear_auc_f{f:g}"), r.get(f"linear_auc_f{f:g}_std") or 0.0) for f in fractions]
            pts = [p for p in pts if p[1] is not None and np.isfinite(p[1])]
            if pts:
                x, y, err = zip(*pts)
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=r["variant"], **_row_style(
                    r["variant"] if r.get("views_per_jet") is None else "rs3l"))
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training labels")
        ax.set_ylabel("AUC, nominal test view (linear probe; BDT: its own)")
        ax.set_title(f"{task}: label efficiency per variant (mean ± std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def ablation_panels(rows: list[dict], metrics: list[str], path) -> Path:
    """One panel per metric (e.g. held-out W1, invariance AUC, parameter R², anomaly AUC): a point ± std per
    variant of the first task (the science metrics do not depend on the task); missing values are left out."""
    task = rows[0]["task"] if rows else None
    variants = [r for r in rows if r["task"] == task and r.get("views_per_jet") is not None]
    fig = Figure(figsize=(3.6 * len(metrics), 0.32 * max(len(variants), 4) + 1.6))
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    y = np.arange(len(variants))
    for ax, metric in zip(axes, metrics):
        vals = np.array([np.nan if r.get(metric) is None else r[metric] for r in variants], dtype=float)
        errs = np.array([r.get(f"{metric}_std") or 0.0 for r in variants], dtype=float)
        ok = np.isfinite(vals)
        if ok.any():
            ax.errorbar(vals[ok], y[ok], xerr=errs[ok], fmt="o", capsize=3)
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_xlabel(metric + (f" ({task})" if metric.startswith("w1_") else ""), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(y, [r["variant"] for r in variants], fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("ablation: robustness (smaller W1 = more robust), invariance, parameter R², anomaly AUC", fontsize=9)
    return _save(fig, path)

"""What the smoke workflow leaves behind for a physicist: the pre-training learned something,
the results table has every arm, the label subsets are shared, and MLflow holds the parent
run with its child runs, also through a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import requests

from conftest import VENV_BIN
from rs3l.resolve import load


def test_smoke_pretraining_lowers_the_loss_and_separates_pairs(smoke_run):
    summary = json.loads((smoke_run["results"] / "pretrain" / "summary.json").read_text())
    history = summary["history"]
    assert len(history) == 2
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    final = summary["final_metrics"]
    # views of the same jet end up closer than views of different jets
    assert final["train/pos_sim"] > final["train/neg_sim"]
    assert (smoke_run["results"] / "pretrain" / "embeddings.png").exists()


def test_results_table_has_every_arm_with_values_in_range(smoke_run):
    results = smoke_run["results"]
    cfg = load(results / "config.yaml")
    rows = list(csv.DictReader((results / "summary" / "results.csv").open()))
    arms = {(r["task"], r["method"], r["mode"], float(r["label_fraction"])) for r in rows}
    ft, ev = cfg["finetune"], cfg["evaluate"]
    enc = cfg["pretrain"]["encoder"]
    methods = {("rs3l-" + enc, "full"), ("supervised-" + enc, "scratch"), ("substructure-bdt", "baseline")}
    methods |= {(f"{m}-{enc}", p) for m in ("rs3l", "random") for p in ev["probes"]}
    assert arms == {(t, m, mode, f) for t in ft["tasks"] for m, mode in methods for f in ft["label_fractions"]}
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["auc"]) <= 1
        assert int(r["n_seeds"]) == (ft["seeds"] if r["mode"] in ("full", "scratch") else ev["seeds"])
        for view in ("seed", "fsr_up"):
            assert 0 <= float(r[f"w1_{view}"]) <= 1
    md = (results / "summary" / "results.md").read_text()
    assert md.startswith("# Results: smoke") and "## The answer first" in md and "## Where the time went" in md
    assert {p.name for p in (results / "summary" / "plots").glob("*.png")} >= {
        "roc_top_vs_qcd.png", "scores_top_vs_qcd.png", "label_efficiency_top_vs_qcd.png", "jet_mass.png"}


def test_every_arm_of_a_label_fraction_trains_on_the_same_jets(smoke_run):
    """Deep arms (labels.json), probes and the BDT (their records): one jet-id hash per fraction and seed."""
    base = smoke_run["results"] / "finetune" / "top_vs_qcd"
    probes = json.loads((smoke_run["results"] / "evaluate" / "probes.json").read_text())
    for token in ("f0.5", "f1"):
        subsets = {m: json.loads((base / m / token / "s0" / "labels.json").read_text())["jet_ids_sha256"]
                   for m in ("full", "scratch")}
        subsets |= {f"{r['method']} {r['mode']}": r["labels_sha256"] for r in probes
                    if r["labels"] == token and r["seed"] == 0}
        assert len(subsets) == 7 and len(set(subsets.values())) == 1, subsets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_on_the_smoke_store_shows_parent_and_child_runs(smoke_run):
    results = smoke_run["results"]
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(VENV_BIN) / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{results / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no GenAI job workers to start
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180  # a loaded 2-core machine took over 90 s to start it
        while True:
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "mlflow server did not come up"
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
        exp = requests.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                           params={"experiment_name": "rs3l"}, timeout=10).json()["experiment"]
        runs = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                             json={"experiment_ids": [exp["experiment_id"]], "max_results": 500}, timeout=10).json()["runs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags) if t.get("rs3l.stage") == "workflow"]
    assert len(parents) == 1
    parent_id = parents[0]["info"]["run_id"]
    assert parents[0]["info"]["status"] == "FINISHED"
    children = [(r, t) for r, t in zip(runs, tags) if t.get("mlflow.parentRunId") == parent_id]
    stages = sorted(t["rs3l.stage"] for _, t in children)
    assert stages.count("pretrain") == 1 and stages.count("finetune") == 4 and stages.count("evaluate") == 4
    assert stages.count("probe") == 1
    pretrain = next(r for r, t in children if t["rs3l.stage"] == "pretrain")
    assert any(p["key"] == "pretrain.objective" for p in pretrain["data"]["params"])
    assert any(m["key"].startswith("train/loss") for m in pretrain["data"]["metrics"])


def test_snakemake_report_includes_the_results_and_plots(smoke_run, tmp_path):
    from conftest import snakemake

    report = tmp_path / "report.html"
    snakemake("--report", str(report), results_dir=smoke_run["results"])
    html = report.read_text(errors="replace")
    assert "results.md" in html and "roc_top_vs_qcd.png" in html

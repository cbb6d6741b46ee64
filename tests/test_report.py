"""`rs3l report`: results table, plots and the MLflow parent run, from evaluation results.

The results here are built from known score distributions with the same functions
`rs3l evaluate` uses, so the table's numbers can be checked; the end-to-end path
(fine-tune -> evaluate -> report) is in test_finetune.py.
"""

import copy
import csv
import json

import numpy as np
import pytest

from rs3l import config
from rs3l.resolve import resolve
from rs3l.evaluation.evaluate import robustness, view_metrics
from rs3l.evaluation.report import report

VIEWS = {"nominal": 0.0, "seed": 0.01, "fsr_up": 0.1}  # score shift of each view


@pytest.fixture(scope="module")
def rcfg(cfg, tmp_path_factory):
    c = copy.deepcopy(cfg)
    c["results_dir"] = str(tmp_path_factory.mktemp("report") / "results")  # one MLflow store for the module
    c["pretrain"]["augment_views"] = ["nominal", "seed"]
    c["evaluate"]["bootstrap"] = 200
    return c


def fake_result(cfg, task, method, mode, fraction, separation, seed=0):
    """An `rs3l evaluate` result for scores ~ sigmoid(normal(+-separation)), shifted per view; the same
    1000 test jets (ids 0..999) for every arm, scores differing per seed."""
    r = np.random.default_rng([seed, int(100 * separation)])
    y = np.r_[np.ones(500, int), np.zeros(500, int)]
    base = r.normal(np.where(y == 1, separation, -separation), 1.0)
    views, scores = {}, {}
    for view, shift in VIEWS.items():
        s = 1.0 / (1.0 + np.exp(-(base + shift)))
        views[view] = view_metrics(y, s, False, cfg)
        scores[view] = (y == 1, s)
    rob = {v: robustness(scores["nominal"], scores[v], 0.5) | {"in_pretraining": v in cfg["pretrain"]["augment_views"]}
           for v in VIEWS if v != "nominal"}
    nominal = {k: v for k, v in views["nominal"].items() if not isinstance(v, dict)}
    return {"task": task, "method": method, "mode": mode, "label_fraction": fraction, "n_labels": int(1000 * fraction),
            "seed": seed, "efficiencies": [0.3, 0.5, 0.7], "robustness_efficiency": 0.5, "held_out_views": ["fsr_up"],
            "metrics": nominal, "views": views, "robustness": rob, "training": {"converged": True},
            "test_scores": {"jet_id": list(range(1000)), "is_signal": (y == 1).tolist(),
                            "score": scores["nominal"][1].tolist()}}


ARMS = (("rs3l-deepsets", "full", 1.0), ("supervised-deepsets", "scratch", 0.5), ("rs3l-deepsets", "linear", 0.9),
        ("random-deepsets", "linear", 0.3), ("substructure-bdt", "baseline", 0.95))


def write_results(cfg, folder, seeds=(0, 1, 2)):
    """Deep arms one file per seed (as `rs3l evaluate`), the probe and BDT arms in one list (as `rs3l probe`)."""
    paths, probes = [], []
    for method, mode, sep in ARMS:
        for fraction in (0.1, 1.0):
            for seed in seeds:
                res = fake_result(cfg, "top_vs_qcd", method, mode, fraction, sep * (1 + fraction), seed)
                if mode in ("full", "scratch"):
                    p = folder / f"{mode}_{fraction}_s{seed}.json"
                    p.write_text(json.dumps(res))
                    paths.append(p)
                else:
                    probes.append(res)
    (folder / "probes.json").write_text(json.dumps(probes))
    return paths + [folder / "probes.json"]


def test_report_table_plots_and_parent_run(rcfg, tmp_path, capsys):
    inputs = write_results(rcfg, tmp_path)
    out = report(rcfg, inputs, tmp_path / "summary")

    with open(tmp_path / "summary" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["method"], r["mode"], float(r["label_fraction"])) for r in rows} == {
        (m, mode, f) for m, mode, _ in ARMS for f in (0.1, 1.0)}
    for col in ("task", "method", "mode", "label_fraction", "n_labels", "n_seeds", "accuracy", "accuracy_std", "auc",
                "auc_std", "auc_ci_low", "auc_ci_high", "rejection_at_0.3", "rejection_at_0.3_std", "rejection_at_0.5",
                "rejection_at_0.5_std", "rejection_at_0.7", "rejection_at_0.7_std", "w1_seed", "w1_seed_std",
                "w1_fsr_up", "w1_fsr_up_std", "fpr_shift_at_0.5_fsr_up", "converged"):
        assert col in rows[0], col
    by_arm = {(r["method"], r["mode"], r["label_fraction"]): r for r in rows}
    full = by_arm[("rs3l-deepsets", "full", "1.0")]
    assert full["n_seeds"] == "3" and float(full["auc_std"]) > 0 and float(full["converged"]) == 1.0
    assert float(full["auc_ci_low"]) < float(full["auc"]) < float(full["auc_ci_high"])
    for r in rows:
        # a rejection that exceeds what the background test jets measure is a lower bound, never inf
        rej = r["rejection_at_0.5"] or r["rejection_at_0.5_lower_bound"]
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["auc"]) <= 1 and float(rej) >= 1
        assert r["labels"] in ("f0.1", "f1") and r["label_count"] == ""
    # larger separation -> larger AUC; a 0.1 shift in logit moves the scores more than a 0.01 shift
    assert float(full["auc"]) > float(by_arm[("supervised-deepsets", "scratch", "0.1")]["auc"])
    assert float(full["w1_fsr_up"]) > float(full["w1_seed"]) > 0

    md = (tmp_path / "summary" / "results.md").read_text()
    # the answer first: a compact table per task, the comparisons beyond the noise first, then every arm
    assert md.startswith("# Results: ") and md.index("## The answer first") < md.index("## Every arm")
    assert "| labelled jets | best pre-trained arm | supervised from scratch | substructure BDT |" in md
    first = md[md.index("Paired comparisons ("):md.index("Robustness to the held-out simulator")]
    verdicts = [line.rsplit(": ", 1)[-1] for line in first.splitlines() if line.startswith("- ")]
    beyond = [not v.startswith(("no difference", "undetermined")) for v in verdicts]
    assert beyond == sorted(beyond, reverse=True) and any(beyond)
    assert "| task | method | mode | labels | n_labels | n_seeds | accuracy | auc [95% CI]" in md
    assert "inf" not in md.replace("info", "")
    assert "held out" in md and "fsr_up" in md
    assert "| top_vs_qcd | supervised-deepsets | scratch | 10% | 100 | 3 | 0." in capsys.readouterr().out
    # the paired comparisons, one sentence each, with the verdict the scores imply
    comps = {(c["comparison"].split(" (")[0], c["label_fraction"], c["metric"]): c for c in out["comparisons"]}
    c = comps[("pre-trained fine-tune vs training from scratch", 0.1, "auc")]
    assert c["verdict"] == "better beyond the noise" and c["low"] > 0
    assert comps[("pre-training vs random init", 1.0, "auc")]["delta"] > 0
    assert comps[("best deep arm", 1.0, "auc")]["b"] == "substructure-bdt baseline"
    assert "pre-trained fine-tune vs training from scratch: Δauc = +" in md
    assert "held-out view fsr_up: W1 of the score shift" in md

    names = {p.name for p in out["plots"]}
    assert {"roc_top_vs_qcd.png", "scores_top_vs_qcd.png", "label_efficiency_top_vs_qcd.png",
            "robustness_top_vs_qcd.png"} <= names
    for p in out["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from rs3l import tracking

    c = tracking.client(rcfg)
    parent = c.get_run(tracking.parent_run_id(rcfg))
    assert parent.info.status == "FINISHED"
    logged = {a.path.split("/")[-1] for a in c.list_artifacts(parent.info.run_id, "summary")}
    assert {"results.csv", "results.md", "roc_top_vs_qcd.png"} <= logged


def test_report_copies_pretrain_embedding_plot(rcfg, tmp_path):
    emb = config.results_path(rcfg, "pretrain", "embeddings.png")
    emb.parent.mkdir(parents=True, exist_ok=True)
    emb.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = report(rcfg, write_results(rcfg, tmp_path), tmp_path / "summary")
    assert (tmp_path / "summary" / "plots" / "embeddings.png").read_bytes() == emb.read_bytes()
    assert tmp_path / "summary" / "plots" / "embeddings.png" in out["plots"]


def test_report_unmeasurable_rejection_is_a_lower_bound_never_inf(rcfg, tmp_path):
    """No background jet passes at 30% efficiency: the rejection exceeds the number of background test jets,
    so the page shows '> N' with a footnote giving N, and the CSV a lower bound, never inf."""
    res = fake_result(rcfg, "t", "rs3l-deepsets", "full", 1.0, separation=20.0)  # no background passes at 0.3
    assert res["metrics"]["fpr_at_0.3"] == 0.0
    res["metrics"]["rejection_at_0.3"] = None  # what evaluate's JSON holds for 1/0
    p = tmp_path / "r.json"
    p.write_text(json.dumps(res))
    out = report(rcfg, [p], tmp_path / "summary")
    row = out["rows"][0]
    n_bkg = res["metrics"]["n_background"]
    assert row["rejection_at_0.3"] is None and row["rejection_at_0.3_lower_bound"] == n_bkg == row["n_background"]
    md = (tmp_path / "summary" / "results.md").read_text()
    assert f"> {n_bkg}¹" in md and f"background test jets ({n_bkg})" in md
    assert "inf" not in md.replace("info", "")


def test_report_bad_inputs(rcfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        report(rcfg, [tmp_path / "missing.json"], tmp_path / "summary")
    a, b = write_results(rcfg, tmp_path)[:2]
    b.write_text(a.read_text())  # the same arm and seed twice
    with pytest.raises(ValueError, match="both results of"):
        report(rcfg, [a, b], tmp_path / "summary")
    b.write_text(json.dumps({"task": "t"}))
    with pytest.raises(ValueError, match="missing keys"):
        report(rcfg, [b], tmp_path / "summary")
    assert not (tmp_path / "summary" / "results.csv").exists()


def test_report_cli_exits_2_on_missing_input(tmp_path, capsys):
    import yaml

    from rs3l.cli import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results")}))
    code = main(["report", "--config", str(cfg_file), "--inputs", str(tmp_path / "nope.json"),
                 "--out-dir", str(tmp_path / "summary")])
    assert code == 2
    assert "nope.json" in capsys.readouterr().err


def test_config_defaults_for_evaluation(cfg):
    assert cfg["evaluate"]["efficiencies"] == [0.3, 0.5, 0.7]
    assert resolve({})["finetune"]["train_views"] == ["nominal"]


def test_answer_table_marks_an_arm_whose_seeds_did_not_all_converge():
    """A scratch arm of which one seed never improved on its untrained start (kept at random
    initialisation, AUC below 0.5 possible) is marked in the answer table, with the note saying why;
    a table whose arms all converged has neither."""
    from rs3l.evaluation.report import UNCONVERGED_NOTE, headline

    def row(method, mode, auc, converged=1.0):
        return {"task": "top_vs_qcd", "labels": "f0.01", "method": method, "mode": mode, "auc": auc,
                "auc_std": 0.01, "auc_ci_low": auc - 0.02, "auc_ci_high": auc + 0.02, "n_labels": 11,
                "converged": converged}

    rows = [row("rs3l-particlenet", "full", 0.85), row("supervised-particlenet", "scratch", 0.667, 2 / 3),
            row("substructure-bdt", "baseline", 0.86), row("random-particlenet", "linear", 0.75)]
    md = headline(rows, [], [])
    line = next(ln for ln in md.splitlines() if ln.startswith("| 1% (11) |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2].endswith("²") and not any(c.endswith("²") for c in (cells[1], cells[3], cells[4])), cells
    assert UNCONVERGED_NOTE in md
    rows[1]["converged"] = 1.0
    assert "²" not in headline(rows, [], [])

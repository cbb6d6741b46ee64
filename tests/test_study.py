"""The machinery of a pool-size study (issue: the RS3L question at a scale where it has an answer).

- the pre-training pool is nested and deterministic (a 2k pool is a subset of the 8k pool; same seed,
  same jets), and pre-training reads only its jets;
- labelled sets given as counts are honoured per class (half signal, half background), nested with
  the other sets of a seed, and shared by every arm;
- arms trained together in one process give the weights of arms trained alone;
- the pool-scan report (table, plot) is built from synthetic results with values in range.
"""

import copy
import json

import numpy as np
import pytest
import torch

from rs3l.evaluation import report as rep
from rs3l.evaluation.tasks import Task, describe_labels, label_sets, labelled_subset, select_labels
from rs3l.training import pool
from rs3l.training.data import JetDataset
from rs3l.training.finetune import arm_dir, finetune, finetune_arms

from conftest import REPO
from synthetic import make_dataset
from test_finetune import CLASSES, VIEWS, tiny_cfg, write_encoder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("study") / "data",
                        n_jets_per_split={"train": 400, "val": 80, "test": 120}, views=VIEWS, classes=CLASSES, seed=3)


# ----------------------------------------------------------------------------- the pre-training pool

def test_pools_are_nested_deterministic_and_respect_held_out_classes(data):
    eligible = pool.eligible_jets(data)
    assert len(eligible) == 400 and np.all(np.diff(eligible) > 0)
    small, large = (pool.pool_jet_ids(7, eligible, n) for n in (50, 200))
    assert len(small) == 50 and len(large) == 200
    assert set(small) <= set(large)  # a smaller pool is a subset of a larger one
    np.testing.assert_array_equal(small, pool.pool_jet_ids(7, eligible, 50))  # same seed: same jets
    assert not np.array_equal(small, pool.pool_jet_ids(8, eligible, 50))  # the master seed decides
    assert len(pool.pool_jet_ids(7, eligible, 0.25)) == 100  # a fraction of the train jets
    assert pool.pool_jet_ids(7, eligible, None) is None  # all
    with pytest.raises(ValueError, match="pretrain.pool = 401 jets, but the train split holds only 400"):
        pool.pool_jet_ids(7, eligible, 401)
    # a class held out of pre-training (pretrain.exclude_classes) never counts
    without_top = pool.eligible_jets(data, exclude_labels=(CLASSES.index("top"),))
    assert 0 < len(without_top) < 400 and set(without_top) < set(eligible)


def test_pretraining_stream_reads_only_the_pool(cfg, data, tmp_path):
    c = tiny_cfg(cfg, tmp_path)
    c["pretrain"]["pool"] = 64
    ids = pool.from_config(c, data)
    ds = JetDataset(data, "train", c["training"]["features"], 24, 16, mode="pairs", views=["nominal", "seed"],
                    jet_ids=ids, seed=1)
    seen = np.concatenate([b["jet_id"].numpy() for b in ds])
    assert len(seen) == ds.n_items == 64 and set(seen) <= set(ids)


# ----------------------------------------------------------------------------- labelled sets as counts

def test_label_counts_are_balanced_per_class_nested_and_seeded():
    task = Task("t", ("top",), ("q",))
    jet_id = np.arange(1000)
    target = (np.arange(1000) < 200).astype(int)  # 200 signal, 800 background
    n100, n300 = (select_labels(7, task, f"n{n}", jet_id, target) for n in (100, 300))
    assert (target[n100] == 1).sum() == 50 and (target[n100] == 0).sum() == 50  # half signal, half background
    assert (target[n300] == 1).sum() == 150 and (target[n300] == 0).sum() == 150
    assert set(n100) <= set(n300)  # nested
    # counts and fractions draw from the same permutation per seed: the first jets agree
    assert set(select_labels(7, task, "n20", jet_id, target)) <= set(select_labels(7, task, 0.2, jet_id, target))
    # more than a class holds: all of it
    n1000 = select_labels(7, task, "n1000", jet_id, target)
    assert (target[n1000] == 1).sum() == 200 and (target[n1000] == 0).sum() == 500
    assert not np.array_equal(n100, select_labels(7, task, "n100", jet_id, target, seed=1))
    assert label_sets({"finetune": {"label_counts": [300, 30], "label_fractions": [1.0]}}) == ["n30", "n300", "f1"]
    assert describe_labels("n300") == "300 jets" and describe_labels("f0.01") == "1%"


# ----------------------------------------------------------------------------- arms in one process

@pytest.fixture(scope="module")
def shared(cfg, data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arms")
    c = tiny_cfg(cfg, tmp / "results")
    c["finetune"]["label_counts"] = [40]
    enc = write_encoder(c, tmp / "encoder.pt")
    arms = [("n40", 0), ("f0.5", 1), ("n40", 1)]
    records = finetune_arms(c, data, "top_vs_q", "full", arms, tmp / "full", encoder_path=enc,
                            evaluate_out=tmp / "deep.json")
    return {"tmp": tmp, "cfg": c, "encoder": enc, "arms": arms, "records": records}


def test_arms_sharing_a_process_equal_arms_run_alone(shared, data):
    """Same seed, same weights: an arm's result does not depend on the arms trained before it in its process."""
    token, seed = shared["arms"][2]
    alone = shared["tmp"] / "alone"
    finetune(shared["cfg"], data, "top_vs_q", "full", token, alone, encoder_path=shared["encoder"], seed=seed)
    a = torch.load(alone / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(arm_dir(shared["tmp"] / "full", token, seed) / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)


def test_shared_process_records_every_arm_and_its_labels(shared, data):
    recs = json.loads((shared["tmp"] / "deep.json").read_text())
    assert [(r["labels"], r["seed"]) for r in recs] == shared["arms"]
    r40 = next(r for r in recs if r["labels"] == "n40" and r["seed"] == 0)
    assert r40["label_count"] == 40 and r40["label_fraction"] is None and r40["n_labels"] == 40
    labels = json.loads((arm_dir(shared["tmp"] / "full", "n40", 0) / "labels.json").read_text())
    assert labels["per_class"] == {"background": 20, "signal": 20}
    # the probes and the BDT label the same jets for the same (task, labelled set, seed)
    from rs3l.evaluation.tasks import load_task_split, resolve_task, task_targets

    task = resolve_task(shared["cfg"], "top_vs_q")
    train = load_task_split(data, "train", task, CLASSES, [], 24, views=["nominal"])
    assert labelled_subset(shared["cfg"], task, "n40", 0, train)[1]["jet_ids_sha256"] == r40["labels_sha256"]


def test_a_rerun_keeps_finished_arms(shared, data, caplog):
    """A killed job's rerun resumes: arms whose evaluation exists for this config are not trained again."""
    import logging

    caplog.set_level(logging.INFO)
    before = {p: p.stat().st_mtime for p in (shared["tmp"] / "full").rglob("model.pt")}
    again = finetune_arms(shared["cfg"], data, "top_vs_q", "full", shared["arms"], shared["tmp"] / "full",
                          encoder_path=shared["encoder"])
    assert [r["labels_sha256"] for r in again] == [r["labels_sha256"] for r in shared["records"]]
    assert {p: p.stat().st_mtime for p in (shared["tmp"] / "full").rglob("model.pt")} == before
    assert caplog.text.count("already evaluated") == 3


# ----------------------------------------------------------------------------- the pool-scan report

def _scan_results(cfg, folder):
    """Synthetic records of a pool scan: the AUC rises with the pool at each label count."""
    from test_report import fake_result

    paths = []
    for labels, sep0 in (("n100", 0.4), ("n1000", 0.8)):
        for method, mode, gain in [(f"rs3l-deepsets-pool{n}", m, g) for n, g in ((1000, 0.0), (4000, 0.2),
                                                                                  (16000, 0.4))
                                   for m in ("linear", "full")] + [("supervised-deepsets", "scratch", 0.0),
                                                                   ("random-deepsets", "linear", -0.2),
                                                                   ("substructure-bdt", "baseline", 0.3)]:
            recs = []
            for seed in range(3):
                r = fake_result(cfg, "top_vs_qcd", method, mode, 1.0, sep0 + gain, seed)
                count = int(labels[1:])
                r.update(labels=labels, label_fraction=None, label_count=count, n_labels=count)
                recs.append(r)
            p = folder / f"{method}-{mode}-{labels}.json"
            p.write_text(json.dumps(recs))
            paths.append(p)
    return paths


def test_pool_scan_report_on_synthetic_results(cfg, tmp_path):
    c = copy.deepcopy(cfg)
    c["results_dir"] = str(tmp_path / "results")
    c["pretrain"]["augment_views"] = ["nominal", "seed"]
    c["evaluate"]["bootstrap"] = 200
    out = rep.report(c, _scan_results(c, tmp_path), tmp_path / "summary")
    scan = out["pool_scan"]
    assert {(s["mode"], s["labels"]) for s in scan} == {(m, t) for m in ("linear", "full") for t in ("n100", "n1000")}
    for s in scan:
        pools = [p for p, _, _ in s["points"]]
        aucs = [a for _, a, _ in s["points"]]
        assert pools == [1000, 4000, 16000] and all(0.5 < a < 1 for a in aucs)
        assert aucs == sorted(aucs)  # the planted gain with the pool
        assert s["baseline"][0] == ("random-deepsets" if s["mode"] == "linear" else "supervised-deepsets")
    assert (tmp_path / "summary" / "plots" / "pool_scan_top_vs_qcd.png").stat().st_size > 10_000
    md = (tmp_path / "summary" / "results.md").read_text()
    assert "## Pre-training pool scan" in md and "| pool 1000 | pool 4000 | pool 16000 |" in md
    comps = [c for c in out["comparisons"] if c["comparison"].startswith("largest vs smallest pre-training pool")]
    assert {(c["labels"], c["comparison"].split("(")[1][:4]) for c in comps} == {
        (t, m) for t in ("n100", "n1000") for m in ("line", "full")}
    assert all(c["delta"] > 0 for c in comps)


def test_stage_wall_reads_a_snakemake_log(tmp_path):
    """scripts/stage_wall.py: per rule the jobs, first start, last end and the union of its jobs' running times
    (two overlapping jobs of one rule count once), from Snakemake's log lines."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_wall", REPO / "scripts" / "stage_wall.py")
    sw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sw)
    log = """[Sun Dec  6 18:00:00 2026]
localrule generate:
    output: a
    jobid: 1
[Sun Dec  6 18:00:00 2026]
localrule generate:
    jobid: 2
[Sun Dec  6 18:01:00 2026]
Finished jobid: 1 (Rule: generate)
[Sun Dec  6 18:02:00 2026]
Finished jobid: 2 (Rule: generate)
[Sun Dec  6 18:04:00 2026]
rule merge:
    jobid: 3
[Sun Dec  6 18:10:00 2026]
Finished jobid: 3 (Rule: merge)
""".splitlines(keepends=True)
    s = sw.summary(sw.parse(log))
    assert s["wall_min"] == 10
    assert s["rules"]["generate"] == {"jobs": 2, "unfinished": 0, "first_start_min": 0, "last_end_min": 2, "busy_min": 2}
    assert s["rules"]["merge"]["busy_min"] == 6 and "| merge | 1 | 4.0 | 10.0 | 6.0 |" in sw.markdown(s)

"""``rs3l export-jetclass``: files in the JetClass format that weaver-core trains on, unmodified.

- schema version 2 on real Pythia jets: the constituents' four-momenta add up to the jet
  (E-scheme), impact-parameter resolutions are set exactly for tracks, tau_4 <= tau_3;
- the export holds JetClass's names and types (as ``tree.show()`` of the JetClass example
  file prints them), one entry per jet of the chosen view, one-hot labels mapped from rs3l's
  classes, GeV/mm values equal to the merged shards, and ``part_deta`` flipped for eta < 0;
  ``.root`` and ``.parquet`` hold the same;
- a class without a JetClass label is refused by name, or dropped when configured;
- weaver-core's ``weaver`` trains the Particle Transformer authors' ParticleNet with their
  ``JetClass_full.yaml`` (both byte-identical to upstream, tests/data/README.md) on a ``.root``
  export, predicts on a ``.parquet`` export, and its output has one row per jet with our labels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import uproot

from conftest import VENV_BIN
from rs3l import schema
from rs3l.config import ConfigError
from rs3l.data.export_jetclass import export_jetclass
from synthetic import make_config, make_dataset

DATA = Path(__file__).parent / "data"
UPSTREAM_SHA256 = {  # tests/data/README.md: jet-universe/particle_transformer @ 2925bdb
    "JetClass_full.yaml": "185454c9614a72b244b716f4f8281f14ec83226833ecea102484036805dcf7a0",
    "example_ParticleNet.py": "da25a56e9342bbf71aac7e8e46ad58ad86e4e68f9d7d652dc983523432e49a3c",
}
# the branches of a JetClass file and their types (JetClass101.ipynb, tree.show() of JetClass_example_100k.root)
F4, I4, B = np.dtype("float32"), np.dtype("int32"), np.dtype("bool")
PARTICLE_TYPES = {**{b: F4 for b in ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi",
                                      "part_d0val", "part_d0err", "part_dzval", "part_dzerr", "part_charge")},
                  **{b: I4 for b in ("part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton",
                                      "part_isElectron", "part_isMuon")}}
JET_TYPES = {b: F4 for b in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass",
                             "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4")}
LABELS = ["label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q", "label_Hqql", "label_Zqq", "label_Wqq",
          "label_Tbqq", "label_Tbl"]
LABEL_TYPES = {"label_QCD": F4, **{b: B for b in LABELS[1:6]}, **{b: I4 for b in LABELS[6:]}}
CLASSES = ["q", "g", "top", "wqq", "zbb", "hbb"]
JETCLASS_OF = {"q": "label_QCD", "g": "label_QCD", "top": "label_Tbqq", "wqq": "label_Wqq", "zbb": "label_Zqq",
               "hbb": "label_Hbb"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Merged shards (synthetic, in the format rs3l merge writes) with classes of five JetClass labels."""
    out = tmp_path_factory.mktemp("jetclass")
    data = make_dataset(out / "data", n_jets_per_split={"train": 400, "val": 100, "test": 64},
                        views=["nominal", "seed"], classes=CLASSES, jets_per_shard=200, row_group_jets=50)
    return {"data": data, "cfg": make_config(out / "results", classes=CLASSES, views=["nominal", "seed"]), "out": out}


def _nominal_rows(data: Path, split: str) -> pa.Table:
    t = pa.concat_tables(pq.read_table(p) for p in sorted((data / split).glob("*.parquet")))
    return t.filter(pc.equal(t.column("view"), "nominal"))


def test_real_jets_carry_schema_v2_four_momenta_resolutions_and_tau4(cfg, lhe_files, tmp_path):
    """Real top jets: constituent four-momenta sum to the jet, d0err/dzerr > 0 exactly for tracks."""
    from rs3l.physics.resimulate import resimulate

    out = tmp_path / "top.parquet"
    resimulate(cfg, lhe_files["top"], "nominal", out, max_events=40)
    t = pq.read_table(out)
    schema.check_schema(t.schema, schema.fragment_schema(), "fragment")
    assert t.num_rows > 10
    counts = t.column("n_constituents").to_numpy()
    jet_of = np.repeat(np.arange(t.num_rows), counts)
    flat = {c: t.column(c).combine_chunks().flatten().to_numpy().astype(np.float64)
            for c in ("part_px", "part_py", "part_pz", "part_energy", "part_log_pt", "part_charge", "part_d0err", "part_dzerr")}
    summed = {c: np.bincount(jet_of, weights=flat[c], minlength=t.num_rows) for c in ("part_px", "part_py", "part_energy")}
    np.testing.assert_allclose(np.hypot(summed["part_px"], summed["part_py"]), t.column("pt").to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(summed["part_energy"], t.column("energy").to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(np.log(np.hypot(flat["part_px"], flat["part_py"])), flat["part_log_pt"], atol=1e-4)
    charged = flat["part_charge"] != 0
    assert charged.any() and (~charged).any()
    assert np.all(flat["part_d0err"][charged] > 0) and np.all(flat["part_dzerr"][charged] > 0)
    assert np.all(flat["part_d0err"][~charged] == 0) and np.all(flat["part_dzerr"][~charged] == 0)
    # resolution = an entry of the detector's (|eta|, pT) table (CMS track-resolution table) for each
    # track; soft tracks are measured worse. (Not recomputed from the stored momentum: energy flow
    # may pull a track's momentum towards its calorimeter tower after its resolution was taken.)
    pt = np.hypot(flat["part_px"], flat["part_py"])[charged]
    det = cfg["detector"]
    ip = det["impact_parameter_resolution"]
    for col, key in (("part_d0err", "d0"), ("part_dzerr", "dz")):
        table = np.asarray(ip[key], dtype=np.float32).ravel() * np.float32(det["ip_resolution_scale"])
        assert np.isin(flat[col][charged].astype(np.float32), table).all(), col
        assert np.median(flat[col][charged][pt < 2]) > np.median(flat[col][charged][pt > 10]), col
    tau3, tau4 = t.column("tau3").to_numpy(), t.column("tau4").to_numpy()
    assert np.all(tau4 <= tau3 + 1e-7) and np.all(tau4 >= 0)


@pytest.mark.parametrize("suffix", [".root", ".parquet"])
def test_export_has_jetclass_names_types_labels_and_values(dataset, suffix):
    out = dataset["out"] / f"train{suffix}"
    result = export_jetclass(dataset["cfg"], dataset["data"], "train", out)
    if suffix == ".root":
        tree = uproot.open(out)["tree"]
        # JetClass's branches in its order; n_part: uproot's counter of the particle lists
        assert tree.keys() == ["n_part", *PARTICLE_TYPES, *LABELS, *JET_TYPES]
        arr = tree.arrays(library="ak")
    else:
        arr = ak.from_parquet(out)
        assert arr.fields == [*PARTICLE_TYPES, *LABELS, *JET_TYPES]
    for b, dt in PARTICLE_TYPES.items():
        assert ak.to_numpy(ak.flatten(arr[b])).dtype == dt, b
    for b, dt in {**JET_TYPES, **LABEL_TYPES}.items():
        assert ak.to_numpy(arr[b]).dtype == dt, b
    ref = _nominal_rows(dataset["data"], "train")
    assert len(arr) == result["jets"] == ref.num_rows == 400  # one entry per jet (nominal view)
    # one-hot labels, mapped from the rs3l class
    onehot = np.stack([ak.to_numpy(arr[b]).astype(int) for b in LABELS], axis=1)
    assert np.all(onehot.sum(axis=1) == 1)
    expected = [LABELS.index(JETCLASS_OF[c]) for c in ref.column("label_name").to_pylist()]
    np.testing.assert_array_equal(onehot.argmax(axis=1), expected)
    assert {LABELS[i] for i in expected} == set(JETCLASS_OF.values())
    # values are the merged shards' (GeV, mm), per particle and per jet
    for b, c in (("part_px", "part_px"), ("part_energy", "part_energy"), ("part_d0val", "part_d0"),
                 ("part_dzerr", "part_dzerr"), ("part_isMuon", "part_is_muon"), ("part_dphi", "part_dphi")):
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(arr[b])),
                                      ref.column(c).combine_chunks().flatten().to_numpy().astype(PARTICLE_TYPES[b]), b)
    for b, c in (("jet_energy", "energy"), ("jet_sdmass", "soft_drop_mass"), ("jet_tau4", "tau4"),
                 ("jet_nparticles", "n_constituents")):
        np.testing.assert_array_equal(ak.to_numpy(arr[b]), ref.column(c).to_numpy().astype(np.float32), b)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(arr["part_px"])), ref.column("n_constituents").to_numpy())
    # JetClass's delta eta: sign(jet eta) * (eta - jet eta), eta from the exported four-momentum
    eta = np.arcsinh(arr["part_pz"] / np.hypot(arr["part_px"], arr["part_py"]))
    jet_eta = ak.to_numpy(arr["jet_eta"])
    flipped = ak.flatten(np.sign(jet_eta) * (eta - jet_eta))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(arr["part_deta"])), ak.to_numpy(flipped), atol=2e-4)
    assert (jet_eta < 0).sum() > 50 and (jet_eta > 0).sum() > 50  # both signs were exercised


def test_root_and_parquet_exports_are_identical(dataset):
    a = export_jetclass(dataset["cfg"], dataset["data"], "test", dataset["out"] / "same.root")
    b = export_jetclass(dataset["cfg"], dataset["data"], "test", dataset["out"] / "same.parquet")
    assert a == b
    root = uproot.open(dataset["out"] / "same.root")["tree"].arrays(library="ak")
    parquet = ak.from_parquet(dataset["out"] / "same.parquet")
    for b in [*PARTICLE_TYPES, *JET_TYPES, *LABELS]:
        assert ak.all(ak.flatten(root[b], axis=None) == ak.flatten(parquet[b], axis=None)), b


def test_export_other_view_and_bad_requests(dataset, tmp_path):
    cfg, data = dataset["cfg"], dataset["data"]
    seed = export_jetclass(cfg, data, "val", tmp_path / "seed.parquet", view="seed")
    nominal = export_jetclass(cfg, data, "val", tmp_path / "nominal.parquet")
    assert seed["jets"] == nominal["jets"] == 100
    # another re-simulation of the same jets: same labels, other constituents
    a, b = ak.from_parquet(tmp_path / "seed.parquet"), ak.from_parquet(tmp_path / "nominal.parquet")
    assert ak.all(a.label_Tbqq == b.label_Tbqq) and not ak.all(ak.num(a.part_px) == ak.num(b.part_px))
    with pytest.raises(ValueError, match="view 'fsr_up' is not in the data; views in the data: nominal, seed"):
        export_jetclass(cfg, data, "val", tmp_path / "x.root", view="fsr_up")
    with pytest.raises(ValueError, match=r"unknown format '\.h5'; known: \.root, \.parquet"):
        export_jetclass(cfg, data, "val", tmp_path / "x.h5")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        export_jetclass(cfg, data, "dev", tmp_path / "x.root")
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob(".x*"))


def test_export_of_a_real_merge_leaves_out_jets_missing_in_the_view(tmp_path):
    """Fragments through `rs3l merge` (missing views kept): each jet with a nominal row once, no other."""
    from fragments import make_fragments
    from rs3l.data.merge import merge

    views = ["nominal", "seed", "fsr_up"]
    cfg = make_config(tmp_path / "r", views=views, simulation={"views": views, "processes": ["q", "top"], "chunks": 2},
                      merge={"shard_size": 25, "row_group_size": 5})
    merge(cfg, make_fragments(cfg, tmp_path / "fragments", events=20, missing=0.3), tmp_path / "data")
    for split in ("train", "test"):
        rows = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "data" / split).glob("*.parquet")))
        nominal = rows.filter(pc.equal(rows.column("view"), "nominal"))
        assert 0 < nominal.num_rows < len(np.unique(rows.column("jet_id").to_numpy()))  # some jets lack nominal
        out = tmp_path / f"{split}.parquet"
        assert export_jetclass(cfg, tmp_path / "data", split, out)["jets"] == nominal.num_rows
        np.testing.assert_array_equal(ak.to_numpy(ak.from_parquet(out).jet_pt), nominal.column("pt").to_numpy())


def test_class_without_jetclass_label_is_refused_or_dropped(tmp_path):
    """'zprime' has no JetClass counterpart: an error naming it, or (unmapped: drop) its jets left out."""
    classes = ["q", "top", "zprime"]
    data = make_dataset(tmp_path / "data", n_jets_per_split=90, views=["nominal", "seed"], classes=classes)
    cfg = make_config(tmp_path / "results", classes=classes, views=["nominal", "seed"])
    with pytest.raises(ValueError, match=r"\['zprime'\] have no JetClass label in jetclass.labels"):
        export_jetclass(cfg, data, "test", tmp_path / "x.root")
    assert not (tmp_path / "x.root").exists()
    cfg = make_config(tmp_path / "results", classes=classes, views=["nominal", "seed"], jetclass={"unmapped": "drop"})
    result = export_jetclass(cfg, data, "test", tmp_path / "x.root")
    n_zprime = int((_nominal_rows(data, "test").column("label_name").to_numpy(zero_copy_only=False) == "zprime").sum())
    assert n_zprime > 0 and result["dropped"] == n_zprime and result["jets"] == 90 - n_zprime
    assert result["label_QCD"] + result["label_Tbqq"] == result["jets"]
    tree = uproot.open(tmp_path / "x.root")["tree"]
    assert tree.num_entries == result["jets"]


def test_bad_jetclass_config_is_rejected_naming_key_and_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"jetclass.labels.top.*Tbqq"):
        make_config(tmp_path, jetclass={"labels": {"top": "Top"}})
    with pytest.raises(ConfigError, match=r"jetclass.unmapped.*error.*drop"):
        make_config(tmp_path, jetclass={"unmapped": "skip"})


def test_upstream_files_are_unmodified():
    for name, sha in UPSTREAM_SHA256.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == sha, name


@pytest.mark.slow
def test_weaver_trains_particlenet_on_the_export_with_the_unmodified_jetclass_config(dataset, tmp_path):
    """weaver-core 0.5.3 with JetClass_full.yaml + example_ParticleNet.py: train on .root, predict on .parquet.

    Two runs, as weaver is used: training (3 steps) writes ``net_epoch-0_state.pt``; ``--predict``
    loads it. (A single train+test run loads ``net_best_epoch_state.pt``, which weaver writes only
    if the validation accuracy beats 0: not guaranteed after 3 steps.)
    """
    cfg, data = dataset["cfg"], dataset["data"]
    train = export_jetclass(cfg, data, "train", tmp_path / "train.root")
    export_jetclass(cfg, data, "val", tmp_path / "val.root")
    test = export_jetclass(cfg, data, "test", tmp_path / "test.parquet")
    work = tmp_path / "weaver"
    work.mkdir()
    # weaver writes its resolved data config next to the one it is given: hand it a copy
    for name in UPSTREAM_SHA256:
        shutil.copy(DATA / name, work / name)
    common = ["--data-config", "JetClass_full.yaml", "--network-config", "example_ParticleNet.py",
              "--batch-size", "16", "--gpus", "", "--num-workers", "0", "--fetch-step", "1"]
    runs = [["--data-train", str(tmp_path / "train.root"), "--data-val", str(tmp_path / "val.root"),
             "--model-prefix", str(work / "net"), "--num-epochs", "1", "--steps-per-epoch", "3", "--steps-per-epoch-val", "1"],
            ["--predict", "--data-test", str(tmp_path / "test.parquet"), "--model-prefix", str(work / "net_epoch-0_state.pt"),
             "--predict-output", str(work / "pred.root")]]
    logs = []
    for args in runs:
        run = subprocess.run([str(Path(VENV_BIN) / "weaver"), *args, *common], cwd=work, capture_output=True, text=True,
                             timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
        logs.append(run.stdout + run.stderr)
    assert train["jets"] == 400 and "Processed 48 entries in total" in logs[0]  # 3 training steps of 16 jets
    assert "Test metric" in logs[1]
    pred = uproot.open(work / "pred.root")["Events"].arrays(library="np")
    assert len(pred["jet_pt"]) == test["jets"] == 64  # one row per jet
    exported = ak.from_parquet(tmp_path / "test.parquet")
    np.testing.assert_array_equal(pred["jet_pt"], ak.to_numpy(exported.jet_pt))  # same jets, same order
    np.testing.assert_array_equal(pred["jet_tau4"], ak.to_numpy(exported.jet_tau4))
    scores = np.stack([pred[f"score_{b}"] for b in LABELS], axis=1)
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)  # softmax over the ten JetClass classes
    for b in LABELS:  # weaver's truth columns are the labels we wrote
        np.testing.assert_array_equal(pred[b].astype(bool), ak.to_numpy(exported[b]).astype(bool), b)


def test_cli_writes_the_export_and_reports_errors(dataset, tmp_path, capsys):
    """`rs3l export-jetclass` end to end; an unknown view exits 2 with the error and leaves no file."""
    import yaml

    from rs3l import cli

    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(dataset["cfg"]))
    args = ["export-jetclass", "--config", str(cfg_path), "--data", str(dataset["data"]), "--split", "val"]
    assert cli.main([*args, "--out", str(tmp_path / "val.root")]) == 0
    assert uproot.open(tmp_path / "val.root")["tree"].num_entries == 100
    assert cli.main([*args, "--view", "vincia", "--out", str(tmp_path / "bad.root")]) == 2
    assert "view 'vincia' is not in the data" in capsys.readouterr().err
    assert not (tmp_path / "bad.root").exists()

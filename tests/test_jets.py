"""The columnar pieces of the simulation hot path agree with the reference implementations they replace.

Real Pythia events (top and QCD) through the detector and anti-kT clustering; then:
- soft drop from the C/A clustering tree equals fastjet contrib's SoftDrop on the same jets;
- N-subjettiness from one winner-take-all kT clustering equals fastjet contrib's Nsubjettiness
  with WTA_KT_Axes and the normalised measure (beta = 1);
- the final-state particles read from nextBatch's buffers equal awkward's own selection;
- charges from the sorted lookup equal Pythia's particle data;
- a re-simulation job never imports pandas (an import of about 0.5 s per job).
"""

from __future__ import annotations

import subprocess
import sys

import awkward as ak
import fastjet
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rs3l import schema, seeds
from rs3l.physics import detector, jets
from rs3l.physics.resimulate import Charges, _final_particles, generator_level, seeded_pythia


@pytest.fixture(scope="module")
def real_jets(cfg, lhe_files):
    """Anti-kT jets (pT window of the config) of 40 top and 40 QCD events, with their constituents."""
    out = []
    for process in ("top", "qcd"):
        for index, particles in generator_level(cfg, lhe_files[process], "nominal", max_events=40):
            cands = detector.respond(particles, particles["charge"], cfg["detector"], seeds.rng(1, "test", process))
            found = jets.cluster(cands, len(index), cfg["jets"])
            out.append((cands, found))
    assert sum(len(f["pt"]) for _, f in out) > 40
    return out


def _momenta(cands, found):
    const = found["constituents"]
    return jets.momenta(*(cands[c][const] for c in ("px", "py", "pz", "e")), found["n_constituents"])


def test_cluster_keeps_jets_in_window_with_constituents_by_descending_pt(cfg, real_jets):
    for cands, found in real_jets:
        assert np.all((found["pt"] >= cfg["jets"]["pt_min"]) & (np.abs(found["eta"]) < cfg["jets"]["eta_max"]))
        # the constituents add up to the jet (E-scheme recombination)
        jet_of = np.repeat(np.arange(len(found["pt"])), found["n_constituents"])
        for c in ("px", "py", "pz", "e"):
            summed = np.bincount(jet_of, weights=cands[c][found["constituents"]], minlength=len(found["pt"]))
            np.testing.assert_allclose(summed, found[c], rtol=1e-9)
        pt = np.hypot(cands["px"], cands["py"])[found["constituents"]]
        assert np.all((np.diff(pt) <= 0) | (np.diff(jet_of) != 0))


@pytest.mark.parametrize("beta, zcut", [(0.0, 0.1), (1.0, 0.2), (2.0, 0.05)])
def test_soft_drop_mass_equals_fastjet_contrib_softdrop(real_jets, beta, zcut):
    for cands, found in real_jets:
        ca = fastjet.ClusterSequence(_momenta(cands, found), fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
        reference = ak.to_numpy(ca.exclusive_jets_softdrop_grooming(njets=1, beta=beta, symmetry_cut=zcut, R0=0.8).msoftdrop)
        ours = jets.soft_drop_mass(ca, beta, zcut, 0.8)
        np.testing.assert_allclose(ours, np.maximum(reference, 0), rtol=1e-9, atol=1e-9)
        # grooming removes mass, never adds it
        assert np.all(ours <= found["mass"] * (1 + 1e-9))


def test_nsubjettiness_equals_fastjet_contrib_with_wta_kt_axes(real_jets):
    ratios = []
    for cands, found in real_jets:
        parts = _momenta(cands, found)
        ca = fastjet.ClusterSequence(parts, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
        reference = ak.to_numpy(ca.njettiness(axes_definition="WTA_KT_Axes", njets=[1, 2, 3, 4], beta=1.0, R0=0.8))
        const = found["constituents"]
        wta_kt = fastjet.ClusterSequence(parts, fastjet.JetDefinition(fastjet.kt_algorithm, 10.0, fastjet.WTA_pt_scheme,
                                                                      fastjet.Best, 1))
        ours = jets.nsubjettiness(wta_kt, *(cands[c][const] for c in ("px", "py", "pz", "e")),
                                  found["n_constituents"], 0.8, n_max=4)
        np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
        ratios.append(ours)
    taus = np.concatenate(ratios)
    assert np.all(np.diff(taus, axis=1) <= 0)  # more axes, smaller tau


def test_final_particles_and_charges_equal_awkward_and_pythia(cfg, lhe_files):
    pythia, hooks = seeded_pythia(cfg, lhe_files["top"], "nominal", 0, 160)
    batch = pythia.nextBatch(5)
    ours = _final_particles(batch.prt)
    final = batch.prt[batch.prt.status > 0]
    np.testing.assert_array_equal(ours["event"], np.repeat(np.arange(5), ak.to_numpy(ak.num(final.id))))
    np.testing.assert_array_equal(ours["id"], ak.to_numpy(ak.flatten(final.id)))
    for ours_name, field in (("px", "px"), ("e", "e")):
        np.testing.assert_array_equal(ours[ours_name], ak.to_numpy(ak.flatten(final.p[field])))
    np.testing.assert_array_equal(ours["vz"], ak.to_numpy(ak.fill_none(ak.flatten(final.vProd.pz), 0.0)))
    assert np.any(ours["vz"] != 0)  # displaced decays are there
    charges = Charges(pythia)
    got = charges(ours["id"])
    np.testing.assert_array_equal(got, [pythia.particleData.charge(int(i)) for i in ours["id"]])
    assert set(np.unique(got)) <= {-2.0, -1.0, 0.0, 1.0, 2.0} and np.any(got != 0)


def test_to_arrow_builds_each_column_type():
    assert schema.to_arrow(np.array([1, 2]), pa.int16()).to_pylist() == [1, 2]
    assert schema.to_arrow(np.array([0.5]), pa.float32()).type == pa.float32()
    assert schema.to_arrow(["top", "", "qcd"], pa.string()).to_pylist() == ["top", "", "qcd"]
    lists = schema.to_arrow((np.arange(3.0), np.array([2, 0, 1])), pa.list_(pa.float32()))
    assert lists.to_pylist() == [[0.0, 1.0], [], [2.0]]


def test_resimulate_job_does_not_import_pandas(lhe_files, tmp_path):
    code = ("import sys; from rs3l import cli; "
            f"cli.main(['resimulate', '--lhe', r'{lhe_files['qcd']}', '--view', 'nominal', '--max-events', '5', "
            f"'--out', r'{tmp_path / 'f.parquet'}']); print('pandas' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"


def test_resimulate_reports_its_time_split_and_calls_after_batch(cfg, lhe_files, tmp_path):
    from rs3l.physics.resimulate import resimulate

    batches = []
    counts = resimulate(cfg, lhe_files["qcd"], "nominal", tmp_path / "f.parquet", max_events=30,
                        after_batch=batches.append)
    assert sum(batches) == counts["events"] == 30
    sec = counts["seconds"]
    assert 0 < sec["pythia_init"] and 0 < sec["pythia_events"] and sec["pythia_init"] + sec["pythia_events"] < sec["total"]
    # the timing stays out of the fragment (same config, bit-identical data)
    assert "seconds" not in schema.read_metadata(pq.read_schema(tmp_path / "f.parquet"))["counts"]

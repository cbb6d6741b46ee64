"""The config schema rejects bad input before any job, naming the key and the allowed values."""

import pytest

from rs3l import config, seeds


def test_defaults_are_filled_from_the_schema(cfg):
    assert cfg["views"]["fsr_up"]["settings"] == ["TimeShower:renormMultFac = 0.25"]
    assert cfg["views"]["fsr_up"]["intervention"] == "hard"
    assert cfg["detector"]["ecal"]["energy_min"] == pytest.approx(0.5)  # nested defaults too
    assert cfg["jets"]["radius"] == pytest.approx(0.8)


@pytest.mark.parametrize("bad, message", [
    ({"simulation": {"events_per_chunk": -5}}, "simulation.events_per_chunk"),
    ({"simulation": {"chunks": 0}}, "simulation.chunks"),
    ({"simulation": {"views": ["nominal", "fsr_upp"]}}, "unknown view 'fsr_upp'; known: nominal"),
    ({"simulation": {"processes": ["ttbar"]}}, "unknown process 'ttbar'; known: qcd, top"),
    ({"processes": {"top": {"labelling": {"kind": "resonance"}}}}, "processes.top: give exactly one of 'settings'"),
    ({"pretrain": {"encoder": "resnet"}}, "allowed values: particlenet, transformer, deepsets"),
    ({"views": {"nominal": {"intervention": "reco"}}}, "allowed values: hard, parton, detector"),
    ({"views": {"nominal": {}, "x": {"intervention": "parton", "settings": ["TimeShower:pTmin = 1"]}},
      "simulation": {"views": ["nominal", "x"]}}, "may only change hadronization settings"),
    ({"finetune": {"tasks": {"t": {"signal": ["higgs"], "background": ["q"]}}}}, "unknown class 'higgs'"),
    ({"simulatoin": {}}, "allowed keys"),
])
def test_invalid_config_is_rejected_with_the_key_named(bad, message):
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(bad)


def test_seed_derivation_is_deterministic_and_separates_streams():
    a = seeds.derive_seed(1, "top", 0, "nominal", 0, "shower", 7)
    assert a == seeds.derive_seed(1, "top", 0, "nominal", 0, "shower", 7)
    others = {seeds.derive_seed(1, "top", 0, v, r, "shower", 7) for v in ("nominal", "seed") for r in (0, 1)}
    assert len(others) == 4
    assert seeds.derive_seed(2, "top", 0, "nominal", 0, "shower", 7) != a
    assert 1 <= a <= seeds.PYTHIA_SEED_MAX

"""The config schema rejects bad input before any job, naming the key and the allowed values."""

import pytest

from rs3l import config, seeds
from rs3l.resolve import resolve


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
        resolve(bad)


def test_seed_derivation_is_deterministic_and_separates_streams():
    a = seeds.derive_seed(1, "top", 0, "nominal", 0, "shower", 7)
    assert a == seeds.derive_seed(1, "top", 0, "nominal", 0, "shower", 7)
    others = {seeds.derive_seed(1, "top", 0, v, r, "shower", 7) for v in ("nominal", "seed") for r in (0, 1)}
    assert len(others) == 4
    assert seeds.derive_seed(2, "top", 0, "nominal", 0, "shower", 7) != a
    assert 1 <= a <= seeds.PYTHIA_SEED_MAX


def test_the_core_points_callers_of_the_old_resolve_to_rs3l_resolve():
    """rs3l.config no longer resolves (it would skip the stages' checks): the error says where it went."""
    with pytest.raises(AttributeError, match=r"rs3l\.config\.load moved to rs3l\.resolve\.load"):
        config.load("config/config.yaml")

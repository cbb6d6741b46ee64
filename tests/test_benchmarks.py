"""The benchmarks' core functions run and measure what they claim (tiny sizes; no timing targets)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("encoder", ["particlenet", "particle_transformer"])
def test_bench_weaver_trains_both_models(cfg, encoder):
    bench = _load("bench_weaver")
    r = bench.compare(encoder, cfg, batch_size=8, particles=16, rounds=2, steps=2, warmup=1, device="cpu",
                      n_batches=1)  # one batch: its loss changes only if the model trains
    assert len(r["rs3l"]) == len(r["weaver"]) == len(r["ratio"]) == 2
    assert all(v > 0 and math.isfinite(v) for v in r["ratio"])
    for side in ("rs3l", "weaver"):
        losses = r[f"losses_{side}"]
        assert len(losses) == 1 + 2 * 2
        assert all(math.isfinite(v) for v in losses), (side, losses)
        assert losses[-1] != losses[0], (side, losses)
        assert r[f"nonfinite_{side}"] == 0
        assert r[f"params_{side}"] > 0


def test_bench_weaver_batches_are_padded_jets(cfg):
    bench = _load("bench_weaver")
    features = cfg["training"]["features"]
    (b,) = bench.make_batches(1, 32, 64, features, (30, 60), seed=1)
    assert b["x"].shape == (32, 64, len(features)) and b["mask"].shape == (32, 64)
    counts = b["mask"].sum(1)
    assert counts.min() >= 30 and counts.max() <= 60
    assert (b["x"][~b["mask"]] == 0).all()
    assert b["mask"][:, 0].all() and not b["mask"][:, -1].any()

"""The one seed-derivation function. Every random stream in rs3l comes from here.

A seed is a pure function of the run's master seed and a path of names, e.g.
``derive_seed(master, "top", 3, "fsr_up", 0, "detector")``. Two different paths
give statistically independent streams; the same path gives the same stream on
every machine, so the same config gives bit-identical data.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Pythia accepts Random:seed in [1, 900_000_000]; 0 would mean "seed from the clock".
PYTHIA_SEED_MAX = 900_000_000


def _digest(master: int, parts: tuple) -> bytes:
    text = "/".join([str(int(master))] + [str(p) for p in parts])
    return hashlib.sha256(text.encode()).digest()


def derive_seed(master: int, *parts) -> int:
    """Seed in [1, 900_000_000] (valid for Pythia and numpy) derived from ``master`` and ``parts``."""
    return int.from_bytes(_digest(master, parts)[:8], "little") % PYTHIA_SEED_MAX + 1


def derive_seeds(master: int, *parts, events: np.ndarray) -> np.ndarray:
    """Vectorised form: one seed per entry of ``events`` (appended as the last part).

    Equal to ``[derive_seed(master, *parts, e) for e in events]``; used for per-event
    Pythia seeds, so event ``e`` gets the same random numbers whatever chunk order.
    """
    return np.array([derive_seed(master, *parts, int(e)) for e in events], dtype=np.int64)


def rng(master: int, *parts) -> np.random.Generator:
    """A numpy Generator whose stream is derived from ``master`` and ``parts``."""
    return np.random.Generator(np.random.PCG64(int.from_bytes(_digest(master, parts)[:16], "little")))


def unit_hash(*parts) -> float:
    """Deterministic number in [0, 1) from ``parts`` (used for split assignment)."""
    return int.from_bytes(_digest(0, parts)[:8], "little") / 2**64

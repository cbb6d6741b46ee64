"""Throughput of `rs3l resimulate` against a bare Pythia loop on the same LHE file, in one run.

Both read the same hard events with the same Pythia settings (MPI on, the default):
the bare loop only calls ``pythia.nextBatch`` until the file ends; rs3l adds per-event
seeding, the detector, jet clustering, truth matching, substructure, features and the
Parquet write. Target: ratio (rs3l / bare) >= 0.90.

    python benchmarks/bench_resimulate.py [--process top] [--events 400] [--view nominal]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from rs3l import config, seeds
from rs3l.physics.generate import generate
from rs3l.physics.pythia import make_pythia
from rs3l.physics.resimulate import pythia_settings, resimulate


def bare_pythia(cfg, lhe_path, view) -> float:
    t0 = time.perf_counter()
    pythia = make_pythia(pythia_settings(cfg, lhe_path, view), seeds.derive_seed(cfg["seed"], "pythia-init"))
    n = 0
    while not pythia.infoPython().atEndOfFile():  # infoPython() returns a copy: ask every time
        n += len(pythia.nextBatch(cfg["simulation"]["batch_size"]))
    return n / (time.perf_counter() - t0)


def rs3l_resimulate(cfg, lhe_path, view, out) -> float:
    t0 = time.perf_counter()
    counts = resimulate(cfg, lhe_path, view, out)
    return counts["events"] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--process", default="top")
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--view", default="nominal")
    ap.add_argument("--repeat", type=int, default=2, help="alternating repetitions; the best of each is kept")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = config.load(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        lhe_path = Path(tmp) / "bench.lhe.gz"
        generate(cfg, args.process, args.events, lhe_path)
        bare, ours = [], []
        for _ in range(args.repeat):
            bare.append(bare_pythia(cfg, lhe_path, args.view))
            ours.append(rs3l_resimulate(cfg, lhe_path, args.view, Path(tmp) / "out.parquet"))
    b, o = max(bare), max(ours)
    print(f"process={args.process} view={args.view} events={args.events} (MPI on unless the view turns it off)")
    print(f"bare Pythia nextBatch loop : {b:8.1f} events/s")
    print(f"rs3l resimulate            : {o:8.1f} events/s")
    print(f"ratio rs3l / bare          : {o / b:8.3f}   (target >= 0.90)")


if __name__ == "__main__":
    main()

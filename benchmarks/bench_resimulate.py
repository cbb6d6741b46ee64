"""Throughput of `rs3l resimulate` against a bare Pythia loop on the same LHE file, in one run.

All loops read the same hard events with the same Pythia settings (MPI on, the default) and
call ``pythia.nextBatch`` until the file ends:

- ``bare``: Pythia with rs3l's per-event seeding hooks, nothing else; it generates exactly the
  events rs3l generates, so ``rs3l / bare`` is the cost of what rs3l adds: reading the particles,
  the detector, jet clustering, truth matching, substructure, features and the Parquet write;
- ``bare, one stream``: plain Pythia with a single random stream (no hooks); different showers of
  the same hard events, so its ratio also carries that sample's statistical spread;
- ``rs3l``: ``rs3l.physics.resimulate.resimulate``, which also reports how much of its own time
  was spent in Pythia (init and ``nextBatch``), measured in the same run, so free of the drifts
  of this machine's speed between runs.

The loops alternate, ``--repeat`` times; the medians are printed. Every side includes Pythia's
initialisation, as a job does. Target: rs3l / bare >= 0.90.

    python benchmarks/bench_resimulate.py [--process top] [--events 400] [--view nominal] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from rs3l import config, seeds
from rs3l.physics.generate import generate
from rs3l.physics.pythia import make_pythia
from rs3l.physics.resimulate import pythia_settings, resimulate, seeded_pythia


def timed(run) -> tuple[float, dict]:
    """(events per wall-clock second, whatever ``run()`` returned besides the event count)."""
    t0 = time.perf_counter()
    n, extra = run()
    return n / (time.perf_counter() - t0), extra


def loop(pythia, batch_size: int) -> int:
    n = 0
    while not pythia.infoPython().atEndOfFile():  # infoPython() returns a copy: ask every time
        n += len(pythia.nextBatch(batch_size))
    return n


def bare(cfg, lhe_path, view, n_events):
    pythia, hooks = seeded_pythia(cfg, lhe_path, view, 0, n_events)
    return loop(pythia, cfg["simulation"]["batch_size"]), {}


def bare_one_stream(cfg, lhe_path, view):
    pythia = make_pythia(pythia_settings(cfg, lhe_path, view), seeds.derive_seed(cfg["seed"], "pythia-init"))
    return loop(pythia, cfg["simulation"]["batch_size"]), {}


def rs3l(cfg, lhe_path, view, out):
    counts = resimulate(cfg, lhe_path, view, out)
    return counts["events"], counts["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--process", default="top")
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--view", default="nominal")
    ap.add_argument("--repeat", type=int, default=3, help="alternating repetitions; medians are reported")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = config.load(args.config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lhe_path = Path(tmp) / "bench.lhe.gz"
        generate(cfg, args.process, args.events, lhe_path)
        rs3l(cfg, lhe_path, args.view, Path(tmp) / "warm.parquet")  # first-call costs (imports, caches)
        for i in range(args.repeat):
            b, _ = timed(lambda: bare(cfg, lhe_path, args.view, args.events))
            o, _ = timed(lambda: bare_one_stream(cfg, lhe_path, args.view))
            r, sec = timed(lambda: rs3l(cfg, lhe_path, args.view, Path(tmp) / "out.parquet"))
            rows.append((b, o, r, (sec["pythia_init"] + sec["pythia_events"]) / sec["total"]))
            print(f"run {i}: bare {b:6.1f} ev/s, bare one stream {o:6.1f} ev/s, rs3l {r:6.1f} ev/s; "
                  f"rs3l/bare {r / b:.3f}, rs3l/one-stream {r / o:.3f}, Pythia's share of rs3l's time {rows[-1][3]:.3f}",
                  flush=True)
    med = lambda f: statistics.median(f(row) for row in rows)  # noqa: E731
    print(f"process={args.process} view={args.view} events={args.events} (MPI on unless the view turns it off); "
          f"medians of {args.repeat} alternating runs")
    print(f"bare Pythia nextBatch loop (same per-event seeds) : {med(lambda x: x[0]):7.1f} events/s")
    print(f"bare Pythia nextBatch loop (one random stream)    : {med(lambda x: x[1]):7.1f} events/s")
    print(f"rs3l resimulate                                   : {med(lambda x: x[2]):7.1f} events/s")
    print(f"ratio rs3l / bare                                 : {med(lambda x: x[2] / x[0]):7.3f}   (target >= 0.90)")
    print(f"ratio rs3l / bare one stream                      : {med(lambda x: x[2] / x[1]):7.3f}")
    print(f"Pythia's share of rs3l's time (init + nextBatch)  : {med(lambda x: x[3]):7.3f}")


if __name__ == "__main__":
    main()

"""Throughput of `rs3l resimulate` against a bare Pythia loop on the same LHE file, in one run.

All loops read the same hard events with the same Pythia settings (MPI on, the default) through
``pythia.nextBatch``:

- ``bare``: Pythia with rs3l's per-event seeding hooks and nothing else. It generates exactly the
  events rs3l generates, so ``rs3l / bare`` is the cost of what rs3l adds: reading the particles,
  the detector, jet clustering, truth matching, substructure, features and the Parquet write;
- ``bare, one stream``: plain Pythia with one random stream (no hooks): other showers of the same
  hard events, so its ratio also carries that sample's statistical spread and the hooks' cost;
- ``rs3l``: ``rs3l.physics.resimulate.resimulate``.

Interleaved: after each rs3l batch, both bare loops generate the same number of events, so all
three see the machine in the same state (on a shared VM its speed drifts by up to 20% between
consecutive identical runs; sequential runs would mostly measure that drift). Each side includes
its Pythia initialisation, as a job does. Target: rs3l / bare >= 0.90, i.e. rs3l's own work costs
at most 10% of the generator. Also printed: Pythia's share of rs3l's own time, measured inside
rs3l (init + nextBatch over the whole call).

    python benchmarks/bench_resimulate.py [--process top] [--events 500] [--view nominal] [--repeat 5]
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time
from pathlib import Path

from rs3l import seeds
from rs3l.resolve import load
from rs3l.physics.generate import generate
from rs3l.physics.pythia import make_pythia
from rs3l.physics.resimulate import pythia_settings, resimulate, seeded_pythia


class BareLoop:
    """A Pythia nextBatch loop that is advanced n events at a time and times itself (init included)."""

    def __init__(self, make):
        self.make, self.pythia, self.seconds, self.events = make, None, 0.0, 0

    def run(self, n: int) -> None:
        t0 = time.perf_counter()
        if self.pythia is None:
            self.pythia = self.make()  # (pythia, hooks) or pythia; keep the hooks alive with it
        pythia = self.pythia[0] if isinstance(self.pythia, tuple) else self.pythia
        done = 0
        while done < n and not pythia.infoPython().atEndOfFile():  # infoPython() returns a copy
            done += len(pythia.nextBatch(n - done))
        self.events += done
        self.seconds += time.perf_counter() - t0


def one_run(cfg, lhe_path, view, n_events, out) -> dict:
    bare = BareLoop(lambda: seeded_pythia(cfg, lhe_path, view, 0, n_events))
    one_stream = BareLoop(lambda: make_pythia(pythia_settings(cfg, lhe_path, view),
                                              seeds.derive_seed(cfg["seed"], "pythia-init")))

    def after_batch(n):
        bare.run(n)
        one_stream.run(n)

    counts = resimulate(cfg, lhe_path, view, out, after_batch=after_batch)
    sec = counts["seconds"]
    return {"bare": bare.events / bare.seconds, "one_stream": one_stream.events / one_stream.seconds,
            "rs3l": counts["events"] / sec["total"],
            "pythia_share": (sec["pythia_init"] + sec["pythia_events"]) / sec["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--process", default="top")
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--view", default="nominal")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="events per batch, the interleaving step (default: simulation.batch_size of the config)")
    ap.add_argument("--repeat", type=int, default=5, help="runs; medians are reported")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = copy.deepcopy(load(args.config))
    cfg["simulation"]["batch_size"] = args.batch_size = args.batch_size or cfg["simulation"]["batch_size"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        lhe_path = Path(tmp) / "bench.lhe.gz"
        generate(cfg, args.process, args.events, lhe_path)
        resimulate(cfg, lhe_path, args.view, Path(tmp) / "warm.parquet", max_events=20)  # imports, first calls
        for i in range(args.repeat):
            r = one_run(cfg, lhe_path, args.view, args.events, Path(tmp) / "out.parquet")
            runs.append(r)
            print(f"run {i}: bare {r['bare']:6.1f} ev/s, bare one stream {r['one_stream']:6.1f} ev/s, "
                  f"rs3l {r['rs3l']:6.1f} ev/s; rs3l/bare {r['rs3l'] / r['bare']:.3f}, "
                  f"rs3l/one-stream {r['rs3l'] / r['one_stream']:.3f}, Pythia's share of rs3l {r['pythia_share']:.3f}",
                  flush=True)
    med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
    print(f"process={args.process} view={args.view} events={args.events} batch={args.batch_size} "
          f"(MPI on unless the view turns it off); medians of {args.repeat} interleaved runs")
    print(f"bare Pythia nextBatch loop (same per-event seeds) : {med(lambda r: r['bare']):7.1f} events/s")
    print(f"bare Pythia nextBatch loop (one random stream)    : {med(lambda r: r['one_stream']):7.1f} events/s")
    print(f"rs3l resimulate                                   : {med(lambda r: r['rs3l']):7.1f} events/s")
    print(f"ratio rs3l / bare                                 : {med(lambda r: r['rs3l'] / r['bare']):7.3f}"
          "   (target >= 0.90)")
    print(f"ratio rs3l / bare one stream                      : {med(lambda r: r['rs3l'] / r['one_stream']):7.3f}")
    print(f"Pythia's share of rs3l's time (init + nextBatch)  : {med(lambda r: r['pythia_share']):7.3f}")


if __name__ == "__main__":
    main()

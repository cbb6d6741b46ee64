"""Cost of a parameter-scan view (``views.<v>.draw``) against the nominal view, on the same LHE file.

A scan view runs one Pythia initialisation per block of ``draw_block`` events (Pythia reads
shower parameters at ``init()``). Runs ``rs3l resimulate`` for ``nominal`` and ``fsr_scan`` at
each block size, alternating (nominal, scan, nominal, scan, ...) so that both see the machine
in the same state, and prints events/s, the ratio scan / nominal and the measured seconds per
Pythia initialisation.

    python benchmarks/bench_draw.py [--events 300] [--blocks 1 10 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
from pathlib import Path

from rs3l.resolve import load
from rs3l.physics.generate import generate
from rs3l.physics.resimulate import resimulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--process", default="top")
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        lhe_path = Path(tmp) / "hard.lhe.gz"
        generate(cfg, args.process, args.events, lhe_path, chunk=0)
        print(f"{args.process}, {args.events} events, MPI as in {args.config}")
        for block in args.blocks:
            c = copy.deepcopy(cfg)
            c["views"]["fsr_scan"]["draw_block"] = block
            n = args.events if block >= 10 else min(args.events, 20 * block)  # one init per event is slow
            rates = {"nominal": [], "fsr_scan": []}
            init = []
            for _ in range(args.repeat):
                for view in rates:
                    r = resimulate(c, lhe_path, view, Path(tmp) / f"{view}.parquet", max_events=n)
                    rates[view].append(r["events"] / r["seconds"]["total"])
                    if view == "fsr_scan":
                        init.append(r["seconds"]["pythia_init"] / -(-n // block))
            nom, scan = statistics.median(rates["nominal"]), statistics.median(rates["fsr_scan"])
            print(f"draw_block {block:4d} ({n} events): nominal {nom:6.1f} ev/s, fsr_scan {scan:6.1f} ev/s, "
                  f"ratio {scan / nom:.2f}; {statistics.median(init):.2f} s per Pythia init")


if __name__ == "__main__":
    main()

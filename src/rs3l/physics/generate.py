"""``rs3l generate``: hard-scattering events with Pythia 8, written as a Les Houches Event file.

Parton shower and hadronization are off, resonance decays on; the hard record
(``pythia.process``) is the intervention point every view re-simulates from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rs3l import seeds
from rs3l.config import simulation_hash
from rs3l.physics import lhe
from rs3l.physics.pythia import PythiaError, make_pythia, process_settings
from rs3l.progress import Progress

log = logging.getLogger(__name__)
MB_TO_PB = 1e9


def hard_event(process, info) -> lhe.HardEvent:
    """Convert ``pythia.process`` (system + 2 beams + hard record) to LHE rows.

    A loop over the ~10-20 entries of the hard record: this stage runs at ~3000 ev/s
    and is never the bottleneck (the shower is ~50x slower).
    """
    n = process.size()
    rows = np.zeros((n - 3, len(lhe.LHE_COLUMNS)))
    for i in range(3, n):
        q = process[i]
        status = q.status()
        lhe_status = -1 if status == -21 else (1 if q.isFinal() else 2)
        m1, m2 = q.mother1(), q.mother2()
        rows[i - 3] = (q.id(), lhe_status, max(m1 - 2, 0), max(m2 - 2, 0), q.col(), q.acol(),
                       q.px(), q.py(), q.pz(), q.e(), q.m(), 0.0, 9.0)
    return lhe.HardEvent(rows, scale=process.scale(), alpha_qed=info.alphaEM(), alpha_qcd=info.alphaS(),
                         weight=1.0, process_id=info.code())


def generate(cfg: dict, process: str, events: int, out: str | Path, chunk: int = 0, seed: int | None = None) -> int:
    if events <= 0:
        raise ValueError(f"--events must be a positive number of events; got {events}")
    settings = process_settings(cfg, process)
    if seed is None:
        seed = seeds.derive_seed(cfg["seed"], process, chunk, "hard")
    half = cfg["simulation"]["sqrt_s"] / 2
    pythia = make_pythia([f"Beams:eCM = {cfg['simulation']['sqrt_s']}", "PartonLevel:all = off",
                          "HadronLevel:all = off", "ProcessLevel:resonanceDecays = on"] + settings, seed)
    max_fail = max(10, int(cfg["simulation"]["max_failure_fraction"] * events))
    failures = 0
    progress = Progress(events, f"generate {process} chunk {chunk}")
    records = []
    while len(records) < events:
        if not pythia.next():
            failures += 1
            if failures > max_fail:
                raise PythiaError(f"generate {process}: {failures} failed events (more than {max_fail})")
            continue
        records.append(hard_event(pythia.process, pythia.infoPython()))
        progress.update(1)
    progress.close()
    info = pythia.infoPython()
    header = (f"<!-- rs3l generate process={process} chunk={chunk} seed={seed} events={events} "
              f"simulation_hash={simulation_hash(cfg)} -->\n<rs3l process=\"{process}\" chunk=\"{chunk}\" "
              f"seed=\"{seed}\"/>\n<!-- settings:\n" + "\n".join(settings) + "\n-->")
    init = lhe.format_init((2212, 2212), (half, half), info.sigmaGen() * MB_TO_PB, info.sigmaErr() * MB_TO_PB,
                           records[0].process_id)
    lhe.write_atomic(out, header, init, records)
    log.info("wrote %d events of %s to %s (%d failures, sigma = %.3g pb)", events, process, out, failures,
             info.sigmaGen() * MB_TO_PB)
    return events


def main(cfg: dict, args) -> None:
    generate(cfg, args.process, args.events, args.out, chunk=args.chunk, seed=args.seed)

"""Les Houches Event files: the intervention point between the hard process and everything after.

Writing: one event = the hard record of ``pythia.process`` (incoming partons
status -1, intermediate resonances 2, outgoing 1; mothers re-indexed to LHE
lines). Reading: columnar, into awkward arrays, with loud failures on missing
or truncated files.

This reader takes only rs3l's own files (``rs3l generate``, ``rs3l split-lhe``): on a 500-event top
chunk it reads 8,900 ev/s against 2,600 ev/s for ``pylhe.to_awkward`` (6,300 ev/s for pylhe's events
alone), and it checks the event count its writer recorded, where pylhe stops at a truncation with a
warning. LHE files of other generators are read with pylhe in ``rs3l.physics.lhe_input``.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from rs3l.atomic import atomic_path

LHE_COLUMNS = ["id", "status", "mother1", "mother2", "col1", "col2", "px", "py", "pz", "e", "m", "vtim", "spin"]
_COUNT = re.compile(r"rs3l-events=(\d+)")


class LHEError(ValueError):
    pass


@dataclass
class HardEvent:
    """One hard-scattering event as numpy rows (LHE line order; mothers are 1-based LHE lines, 0 = none)."""

    particles: np.ndarray  # (n, 13) float64 in LHE_COLUMNS order
    scale: float
    alpha_qed: float
    alpha_qcd: float
    weight: float
    process_id: int


def open_text(path: str | Path, mode: str = "rt"):
    """Text handle on ``path``, gzip by suffix. Written gzip files carry no time stamp and no file
    name, so the same content gives the same bytes (split chunks are compared by hash)."""
    path = Path(path)
    if path.suffix != ".gz":
        return open(path, mode)
    if "r" in mode:
        return gzip.open(path, mode)
    raw = open(path, mode.replace("t", "") + ("b" if "b" not in mode else ""))
    return io.TextIOWrapper(_OwningGzip(raw), encoding="utf-8")


class _OwningGzip(gzip.GzipFile):
    """GzipFile that closes the file object it writes to (gzip.GzipFile leaves it open)."""

    def __init__(self, raw):
        super().__init__(filename="", mode="wb", fileobj=raw, mtime=0)
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def init_block(beam_ids: tuple[int, int], beam_energies: tuple[float, float], processes: list[tuple[float, float, float, int]],
               pdf_groups: tuple[int, int] = (0, 0), pdf_sets: tuple[int, int] = (0, 0), weighting: int = 3) -> str:
    """The ``<init>`` block: beams (PDG ids, energies in GeV), PDF ids, weighting strategy (IDWTUP) and one
    line (cross section, its error in pb, maximum weight, process id LPRUP) per process."""
    lines = [f" {beam_ids[0]} {beam_ids[1]} {beam_energies[0]:.8e} {beam_energies[1]:.8e} {pdf_groups[0]} {pdf_groups[1]}"
             f" {pdf_sets[0]} {pdf_sets[1]} {weighting} {len(processes)}"]
    lines += [f" {x:.8e} {dx:.8e} {xmax:.8e} {pid}" for x, dx, xmax, pid in processes]
    return "<init>\n" + "\n".join(lines) + "\n</init>\n"


def format_init(beam_ids: tuple[int, int], beam_energies: tuple[float, float], xsec_pb: float, xerr_pb: float, process_id: int) -> str:
    return init_block(beam_ids, beam_energies, [(xsec_pb, xerr_pb, 1.0, process_id)])


def format_event(ev: HardEvent) -> str:
    p = ev.particles
    lines = [f"<event>\n {len(p)} {ev.process_id} {ev.weight:.8e} {ev.scale:.8e} {ev.alpha_qed:.8e} {ev.alpha_qcd:.8e}"]
    for row in p:
        lines.append(" %d %d %d %d %d %d %.10e %.10e %.10e %.10e %.10e %.3e %.1f" % tuple(row))
    lines.append("</event>\n")
    return "\n".join(lines)


def write(path: str | Path, header: str, init: str, events) -> int:
    """Write an LHE file (gzip if ``path`` ends in .gz). ``events`` yields HardEvent. Returns the count.

    The caller passes a temporary path (rs3l.atomic) so a killed job leaves nothing complete.
    """
    n = 0
    with open_text(path, "wt") as fh:
        fh.write('<LesHouchesEvents version="3.0">\n<header>\n' + header + "\n</header>\n" + init)
        for ev in events:
            fh.write(format_event(ev))
            n += 1
        fh.write(f"<!-- rs3l-events={n} -->\n</LesHouchesEvents>\n")
    return n


def write_atomic(out: str | Path, header: str, init: str, events) -> int:
    """:func:`write` to ``out`` through rs3l.atomic: a killed job leaves no file under the final name."""
    with atomic_path(out) as tmp:
        # gzip decides by suffix: keep the target's suffix on the temporary file
        tmp_gz = tmp.with_name(tmp.name + Path(out).suffix)
        try:
            n = write(tmp_gz, header, init, events)
            tmp_gz.replace(tmp)
        finally:
            tmp_gz.unlink(missing_ok=True)
    return n


def write_subset(src: str | Path, out: str | Path, keep: np.ndarray) -> int:
    """Copy the events ``keep`` (0-based indices, ascending) of rs3l's LHE file ``src`` to ``out``.

    Header and init block are copied as they are (``rs3l resimulate`` reads the process and chunk
    there), the event blocks byte for byte; the event count is recorded anew. Not atomic: ``out``
    is a scratch file of the caller. Returns the number of events written.
    """
    text = _read_text(Path(src))
    head, *blocks = text.split("<event>")
    keep = np.asarray(keep, dtype=np.int64)
    if len(keep) and (keep.min() < 0 or keep.max() >= len(blocks)):
        raise LHEError(f"LHE file '{src}' holds {len(blocks)} events; cannot keep event {int(keep.max())}")
    with open_text(out, "wt") as fh:
        fh.write(head)
        for i in keep:
            fh.write("<event>" + blocks[i].split("</event>", 1)[0] + "</event>\n")
        fh.write(f"<!-- rs3l-events={len(keep)} -->\n</LesHouchesEvents>\n")
    return len(keep)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"LHE file '{path}' does not exist")
    try:
        with open_text(path) as fh:
            return fh.read()
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        raise LHEError(f"LHE file '{path}' is corrupt or truncated ({exc})") from exc


def read(path: str | Path) -> ak.Array:
    """Read all events of an LHE file into an awkward array of records.

    Fields: ``particles`` (var * record of LHE_COLUMNS; int columns as int32, momenta float64),
    ``scale``. Raises LHEError if the file is truncated (no closing tag, or fewer events than
    its writer recorded).
    """
    path = Path(path)
    text = _read_text(path)
    if not text.rstrip().endswith("</LesHouchesEvents>"):
        raise LHEError(f"LHE file '{path}' is truncated: it does not end with </LesHouchesEvents>")
    blocks = text.split("<event>")[1:]
    counted = _COUNT.search(text[-200:])
    if counted and int(counted.group(1)) != len(blocks):
        raise LHEError(f"LHE file '{path}' holds {len(blocks)} events but its writer recorded {counted.group(1)}")
    if not blocks:
        raise LHEError(f"LHE file '{path}' holds no events")
    heads = np.empty((len(blocks), 6))
    counts = np.empty(len(blocks), dtype=np.int64)
    bodies = []
    for i, block in enumerate(blocks):  # per event, not per particle
        body = block.split("</event>", 1)[0].strip().split("\n")
        head = body[0].split()
        heads[i] = head
        counts[i] = int(head[0])
        bodies.append("\n".join(body[1:1 + counts[i]]))
    try:
        flat = np.array(" ".join(bodies).split(), dtype=np.float64).reshape(-1, len(LHE_COLUMNS))
    except ValueError as exc:
        raise LHEError(f"LHE file '{path}' has malformed particle lines ({exc})") from exc
    if len(flat) != counts.sum():
        raise LHEError(f"LHE file '{path}': event headers announce {counts.sum()} particles, found {len(flat)}")
    fields = {}
    for j, name in enumerate(LHE_COLUMNS):
        col = flat[:, j]
        fields[name] = col.astype(np.int32) if j < 6 else col
    particles = ak.unflatten(ak.zip(fields), counts)
    return ak.zip({"particles": particles, "scale": heads[:, 3], "process_id": heads[:, 1].astype(np.int32)}, depth_limit=1)

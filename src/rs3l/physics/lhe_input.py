"""``rs3l split-lhe``: external hard-process samples (LHE files) -> rs3l's LHE chunks.

A process may be defined by ``lhe: <path or glob>`` instead of Pythia ``settings``: Les Houches
event files of MadGraph5_aMC@NLO, POWHEG or any LHEF 1.0/3.0 writer, gzipped or not. The files
are read with pylhe in sorted path order, every event is checked, and the first
``min(N, simulation.chunks * simulation.events_per_chunk)`` events are written as
``chunk{c}.lhe.gz`` (``events_per_chunk`` each, the last one possibly fewer) in the format
``rs3l generate`` writes, so ``rs3l resimulate`` and everything after it are unchanged.
``lhe_sources.json`` beside the chunks records the source files (sha256) and the event range of
each chunk; ``rs3l merge`` copies it into ``manifest.json`` under ``lhe_sources``.

What a chunk keeps of an event: the particle lines, the process id (IDPRUP), the nominal weight
(XWGTUP), scale and couplings. Dropped: ``#`` comment lines, ``<rwgt>``/``<mgrwt>``/``<weights>``
blocks and the source header (rs3l does not reweight; the sha256 in the record names the source).

Light at import (stdlib only): the workflow counts events at parse time through :func:`n_chunks`.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import math
import os
import warnings
import zlib
from pathlib import Path

RECORD = "lhe_sources.json"
_BLOCK = 1 << 24
_SCANS: dict[tuple, tuple[int, bytes, bytes]] = {}


class LHEInputError(ValueError):
    """An LHE source file that cannot be used; the message names the file and what is wrong."""


def is_lhe(proc: dict) -> bool:
    """Whether a ``processes.<name>`` entry is an external LHE sample (else: Pythia settings)."""
    return "lhe" in proc


def source_files(pattern: str) -> list[Path]:
    """Files matching ``pattern`` (a path or glob, ``**`` allowed; a relative one is relative to the
    working directory, like ``results_dir``), in sorted path order."""
    return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))


def check_config(cfg: dict) -> None:
    """The ``lhe`` pattern of every simulated process matches a file (ConfigError naming the key otherwise).
    Counting its events is left to the workflow (``rs3l.plan``)."""
    from rs3l.config import ConfigError

    for name in cfg["simulation"]["processes"]:
        proc = cfg["processes"][name]
        if is_lhe(proc) and not source_files(proc["lhe"]):
            raise ConfigError(f"processes.{name}.lhe: no file matches '{proc['lhe']}' (relative to the working "
                              f"directory {os.getcwd()})")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"  # by content, not by name: pylhe decides the same way


def _open_binary(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _scan(path: Path) -> tuple[int, bytes, bytes]:
    """(number of ``</event>`` tags, first and last 4 kB of the text) of an LHE file, gzip or not:
    one pass, no parsing (~1 s per GB of text). Cached per (path, size, mtime) in this process."""
    if not path.is_file():
        raise LHEInputError(f"LHE file '{path}' does not exist")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SCANS:
        if st.st_size == 0:
            raise LHEInputError(f"LHE file '{path}' is empty (0 bytes)")
        n, head, tail = 0, b"", b""
        try:
            with _open_binary(path) as fh:
                while block := fh.read(_BLOCK):
                    # 7 bytes carried over: a tag split between blocks is found, a whole one not counted twice
                    data = tail[-7:] + block
                    n += data.count(b"</event>")
                    head = head or block[:4096]
                    tail = (tail + block)[-4096:]
        except (OSError, EOFError, zlib.error) as exc:
            raise LHEInputError(f"LHE file '{path}' is truncated or not valid gzip ({exc})") from exc
        _SCANS[key] = (n, head, tail)
    return _SCANS[key]


def count_events(path: str | Path) -> int:
    """Number of ``</event>`` tags in an LHE file (gzip or not), without parsing.

    Raises LHEInputError for a missing or empty file or a damaged gzip stream. ``rs3l split-lhe``
    checks that the events it parses agree with this count.
    """
    return _scan(Path(path))[0]


def n_chunks(cfg: dict, process: str) -> int:
    """Chunks of ``process``: ``simulation.chunks`` for a Pythia process; for an LHE process
    ``ceil(events / events_per_chunk)`` of its files' events, at most ``simulation.chunks``."""
    sim, proc = cfg["simulation"], cfg["processes"][process]
    if not is_lhe(proc):
        return sim["chunks"]
    events = source_events(proc, process)
    return min(sim["chunks"], math.ceil(events / sim["events_per_chunk"]))


def source_events(proc: dict, process: str) -> int:
    """Events in the files of an ``lhe`` process entry (counted tags); an error if there are none."""
    files = source_files(proc["lhe"])
    if not files:
        raise LHEInputError(f"processes.{process}.lhe: no file matches '{proc['lhe']}'")
    events = sum(count_events(f) for f in files)
    if events == 0:
        for f in files:
            _check_container(f)  # a more precise reason: not LHE, truncated
        raise LHEInputError(f"processes.{process}.lhe: the files matching '{proc['lhe']}' hold no <event> "
                            f"({', '.join(map(str, files))})")
    return events


def _check_container(path: Path) -> None:
    """Errors a parser would report obscurely: missing, empty, damaged gzip, not LHE, no closing tag."""
    _, head, tail = _scan(path)
    head, tail = head.lstrip(), tail.rstrip()
    if not head:
        raise LHEInputError(f"LHE file '{path}' is empty (nothing after decompression)")
    if b"<LesHouchesEvents" not in head:
        raise LHEInputError(f"LHE file '{path}' is not an LHE file: no <LesHouchesEvents> tag at its start "
                            f"(begins with {head[:40]!r})")
    if not tail.endswith(b"</LesHouchesEvents>"):
        raise LHEInputError(f"LHE file '{path}' is truncated: it does not end with </LesHouchesEvents> "
                            f"(ends with {tail[-40:]!r})")


def iter_source(path: str | Path):
    """Read one LHE file with pylhe, checking every event; a generator.

    Yields the pylhe ``LHEInit`` first, then per event ``(head, particles)``: ``head`` = (NUP, IDPRUP,
    XWGTUP, SCALUP, AQEDUP, AQCDUP), ``particles`` a (NUP, 13) float64 array in LHE column order.
    Raises LHEInputError naming the file: damaged gzip, not LHE, truncated, malformed, no events, an event
    whose particle count differs from NUP, that does not start with two incoming partons, or whose process
    id is not in ``<init>``; and if the parsed events differ from :func:`count_events`.
    """
    import numpy as np
    import pylhe

    path = Path(path)
    _check_container(path)
    n = 0
    # pylhe reports an XML error with a RuntimeWarning and then stops as if the file ended: make it an error
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            lhef = pylhe.LHEFile.fromfile(path, with_attributes=False)
            known = {p.procId for p in lhef.init.procInfo}
            yield lhef.init
            for ev in lhef.events:
                info = ev.eventinfo
                if info.nparticles != len(ev.particles):
                    raise LHEInputError(f"LHE file '{path}': event {n} announces {info.nparticles} particles "
                                        f"but has {len(ev.particles)} particle lines")
                rows = np.array([(p.id, p.status, p.mother1, p.mother2, p.color1, p.color2, p.px, p.py, p.pz, p.e,
                                  p.m, p.lifetime, p.spin) for p in ev.particles], dtype=np.float64)
                if len(rows) < 2 or rows[0, 1] != -1 or rows[1, 1] != -1:
                    raise LHEInputError(f"LHE file '{path}': event {n} does not start with two incoming partons "
                                        f"(status -1)")
                if info.pid not in known:
                    raise LHEInputError(f"LHE file '{path}': event {n} is of process id {info.pid}, which <init> "
                                        f"does not list (it lists {sorted(known)})")
                yield (info.nparticles, info.pid, info.weight, info.scale, info.aqed, info.aqcd), rows
                n += 1
        except RuntimeWarning as exc:
            raise LHEInputError(f"LHE file '{path}' is malformed or truncated after {n} events ({exc})") from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise LHEInputError(f"LHE file '{path}' is truncated or not valid gzip ({exc})") from exc
        except (ValueError, IndexError) as exc:
            if isinstance(exc, LHEInputError):
                raise
            raise LHEInputError(f"LHE file '{path}' is malformed after {n} events ({exc})") from exc
    if n == 0:
        raise LHEInputError(f"LHE file '{path}' holds no events")
    if n != count_events(path):
        raise LHEInputError(f"LHE file '{path}': {n} events parsed but {count_events(path)} </event> tags counted "
                            f"(is '</event>' written inside a comment?)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _beams(init) -> tuple:
    i = init.initInfo
    return (i.beamA, i.beamB, i.energyA, i.energyB, i.PDFgroupA, i.PDFgroupB, i.PDFsetA, i.PDFsetB, i.weightingStrategy)


def _check_beams(path: Path, beams: tuple, cfg: dict) -> None:
    if abs(beams[8]) not in (3, 4):
        raise LHEInputError(f"LHE file '{path}': weighting strategy IDWTUP = {beams[8]}; rs3l re-showers every event "
                            f"once, so only +-3 (unweighted) and +-4 (weighted) files are accepted (+-1/+-2 ask "
                            f"the shower program to unweight)")
    half = cfg["simulation"]["sqrt_s"] / 2
    if not (math.isclose(beams[2], half, rel_tol=1e-6) and math.isclose(beams[3], half, rel_tol=1e-6)):
        raise LHEInputError(f"LHE file '{path}': beam energies {beams[2]:g} + {beams[3]:g} GeV, but simulation.sqrt_s = "
                            f"{cfg['simulation']['sqrt_s']:g} GeV asks for {half:g} each")


class _Sources:
    """The source files of one process read in order: their events (checked), and what the chunks and
    the record need from them (beams and processes of ``<init>``, per-file counts)."""

    def __init__(self, cfg: dict, process: str, files: list[Path]):
        self.cfg, self.process, self.files = cfg, process, files
        self.beams, self.init_processes, self.records = None, {}, []

    def events(self):
        """Yield (head, particles) of every event of every file (see :func:`iter_source`)."""
        refuse = self.cfg["processes"][self.process]["negative_weights"] == "refuse"
        for path in self.files:
            reader = iter_source(path)
            init = next(reader)
            beams = _beams(init)
            if self.beams is None:
                _check_beams(path, beams, self.cfg)
                self.beams, self.first = beams, path
            elif beams != self.beams:
                raise LHEInputError(f"LHE file '{path}': <init> beams/PDF/weighting {beams} differ from those of "
                                    f"'{self.first}' {self.beams}; all files of processes.{self.process}.lhe must "
                                    f"come from one set-up")
            for p in init.procInfo:
                self.init_processes.setdefault(p.procId, (p.xSection, p.error, p.unitWeight, p.procId))
            src = {"path": str(path), "sha256": _sha256(path), "bytes": path.stat().st_size, "events": 0,
                   "negative_weights": 0}
            self.records.append(src)
            for head, rows in reader:
                if head[2] < 0:
                    if refuse:
                        raise LHEInputError(f"LHE file '{path}': event {src['events']} has a negative weight "
                                            f"({head[2]:g}); set processes.{self.process}.negative_weights: keep to "
                                            f"use such events (jets are used unweighted)")
                    src["negative_weights"] += 1
                src["events"] += 1
                yield head, rows

    def init_block(self) -> str:
        from rs3l.physics import lhe

        b = self.beams
        return lhe.init_block((b[0], b[1]), (b[2], b[3]), list(self.init_processes.values()), pdf_groups=(b[4], b[5]),
                              pdf_sets=(b[6], b[7]), weighting=b[8])


def split(cfg: dict, process: str, out_dir: str | Path) -> dict:
    """Check every event of ``process``' LHE files and write ``out_dir/chunk{c}.lhe.gz`` for
    c = 0 .. :func:`n_chunks` - 1 plus ``out_dir/lhe_sources.json`` (returned), all atomically.

    Streams: memory holds one chunk. Every file is read to its end (and checked) even when the
    chunks are full. Weights: each event keeps its XWGTUP; with ``processes.<name>.negative_weights:
    refuse`` (the default) a negative weight is an error. Jets are used unweighted downstream; the
    record holds the sum of weights and the number of negative weights per chunk.
    """
    from rs3l.atomic import write_text
    from rs3l.config import simulation_hash
    from rs3l.physics import lhe

    if process not in cfg["processes"] or not is_lhe(cfg["processes"][process]):
        lhe_names = [p for p, e in cfg["processes"].items() if is_lhe(e)]
        raise ValueError(f"process '{process}' is not an LHE process; LHE processes: {', '.join(lhe_names) or 'none'}")
    proc, epc = cfg["processes"][process], cfg["simulation"]["events_per_chunk"]
    out_dir = Path(out_dir)
    chunks = n_chunks(cfg, process)  # what the workflow's DAG was built with
    sources = _Sources(cfg, process, source_files(proc["lhe"]))
    sim_hash = simulation_hash(cfg)
    pending, record_chunks, used = [], [], 0

    def flush():
        c, lo, hi = len(record_chunks), used - len(pending), used
        header = (f"<!-- rs3l split-lhe process={process} chunk={c} events {lo}..{hi - 1} of the files matching "
                  f"{proc['lhe']} simulation_hash={sim_hash} -->\n"
                  f"<rs3l process=\"{process}\" chunk=\"{c}\" first=\"{lo}\" stop=\"{hi}\"/>")
        path = out_dir / f"chunk{c}.lhe.gz"
        lhe.write_atomic(path, header, sources.init_block(), pending)
        weights = [ev.weight for ev in pending]
        record_chunks.append({"chunk": c, "first": lo, "stop": hi, "sum_weights": float(sum(weights)),
                              "negative_weights": sum(w < 0 for w in weights), "sha256": _sha256(path)})
        pending.clear()

    for head, rows in sources.events():
        if used < chunks * epc:
            pending.append(lhe.HardEvent(rows, scale=head[3], alpha_qed=head[4], alpha_qcd=head[5], weight=head[2],
                                         process_id=head[1]))
            used += 1
            if len(pending) == epc:
                flush()
    if pending:
        flush()
    if len(record_chunks) != chunks:
        raise LHEInputError(f"processes.{process}.lhe: {len(record_chunks)} chunks written, {chunks} expected")
    # which source events each chunk holds: [file index, first, stop) within that file
    start = [0]
    for src in sources.records:
        start.append(start[-1] + src["events"])
    for ch in record_chunks:
        ch["sources"] = [[f, max(ch["first"], start[f]) - start[f], min(ch["stop"], start[f + 1]) - start[f]]
                         for f in range(len(sources.records)) if max(ch["first"], start[f]) < min(ch["stop"], start[f + 1])]
    for old in out_dir.glob("chunk*.lhe.gz"):
        if old.name not in {f"chunk{c}.lhe.gz" for c in range(chunks)}:
            old.unlink()  # from an earlier split into more chunks
    record = {"process": process, "pattern": proc["lhe"], "files": sources.records, "events": start[-1],
              "events_used": used, "events_per_chunk": epc, "weighting": sources.beams[8],
              "negative_weights": proc["negative_weights"],
              "init_processes": [{"id": pid, "xsec_pb": x, "xerr_pb": dx}
                                 for x, dx, _, pid in sources.init_processes.values()],
              "chunks": record_chunks}
    write_text(out_dir / RECORD, json.dumps(record, indent=1, sort_keys=True))
    return record


def read_record(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `rs3l split-lhe` for this process first")
    return json.loads(path.read_text())


def main(cfg: dict, args) -> None:
    import logging

    record = split(cfg, args.process, args.out_dir)
    logging.getLogger(__name__).info("%s: %d of %d events from %d files -> %d chunks in %s", args.process,
                                     record["events_used"], record["events"], len(record["files"]),
                                     len(record["chunks"]), args.out_dir)

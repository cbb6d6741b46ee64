"""Receipts: a unit that finished keeps its output through the faults that make Snakemake run it again.

Snakemake deletes a job's outputs before it runs the job, and after the job fails. On a cluster
that throws finished work away: one failing unit fails its whole bundle (a Snakemake group job
of up to 50 units), and the retry runs every unit of it again; a bundle that Slurm requeues after
a node failure, and a Snakemake restarted after it was killed, do the same.

A receipt is a hard link of a finished output, named after a ``key``: the hash of everything
that determines the output's content (:func:`key`). The next run of the unit finds the receipt
and links it back in place instead of computing it again; the two names share their data, so a
receipt costs no disk space while the output exists. Same key, same output: the units that keep
receipts (``rs3l resimulate``) are deterministic given their key. Another key (new settings,
new input, new algorithm version) means the unit runs. One receipt per output is kept, in
``<output folder>/.receipts/``, where no reader of outputs looks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from rs3l import atomic

log = logging.getLogger(__name__)

FOLDER = ".receipts"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key(**parts) -> str:
    """The hash of what determines an output (JSON-serialisable values)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def path(out: str | os.PathLike, unit_key: str) -> Path:
    out = Path(out)
    return out.parent / FOLDER / f"{out.name}.{unit_key[:24]}"


def reuse(out: str | os.PathLike, unit_key: str) -> Path | None:
    """Put the output that the receipt of ``unit_key`` holds back at ``out`` (atomically).
    Returns the receipt, or None when there is none (the unit has to run)."""
    receipt = path(out, unit_key)
    try:
        atomic.link(receipt, out)
    except FileNotFoundError:
        return None
    return receipt


def record(out: str | os.PathLike, unit_key: str) -> Path | None:
    """Keep a receipt of the finished output ``out``; drop the unit's receipts of other keys."""
    receipt = path(out, unit_key)
    try:
        atomic.link(out, receipt)
    except OSError as exc:  # e.g. a filesystem without hard links: the unit just runs again next time
        log.warning("no receipt kept for %s (%s): after a fault it would be computed again", out, exc)
        return None
    for old in kept(out):
        if old != receipt:
            old.unlink(missing_ok=True)
    return receipt


def kept(out: str | os.PathLike) -> list[Path]:
    """The receipts kept for the output ``out``, whatever their key."""
    out = Path(out)
    return list((out.parent / FOLDER).glob(f"{out.name}.*"))


def restore(out: str | os.PathLike, inode: int) -> bool:
    """Put back at ``out`` the receipt that is the very file ``inode`` (an output seen finished, then
    removed). False when no receipt of ``out`` is that file (none kept, or one of another key)."""
    same = [r for r in kept(out) if r.stat().st_ino == inode]
    if same:
        atomic.link(same[0], out)
    return bool(same)

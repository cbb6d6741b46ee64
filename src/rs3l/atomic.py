"""The one atomic-write helper: write to a temporary file beside the target, then rename.

A job killed mid-write leaves only ``.<name>.tmp-<host>-<pid>-<random>`` behind, never a file
under the final name, so neither Snakemake nor ``rs3l merge`` can mistake it for output.

The temporary name is unique per writer, not only per process id: after a restart (a killed
Snakemake, a requeued or retried Slurm job) two jobs on different nodes may write the same
output on a shared filesystem, and their process ids can coincide. Each then writes its own
temporary file and the rename is atomic, so the target is always one writer's complete file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path


def temp_path(target: str | os.PathLike) -> Path:
    """A temporary name beside ``target``, unique per writer (host, process, random)."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path; on success it is fsynced and renamed to ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        # write() on an open file fails without a file name (ENOSPC, EDQUOT): name the output
        if exc.filename is None or os.fspath(exc.filename) == os.fspath(tmp):
            exc.filename = str(target)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def link(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make ``target`` a hard link of ``source``, replacing ``target`` atomically (no copy: both
    names share the data). Both must be on the same filesystem."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        os.link(source, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        Path(tmp).write_text(text)


def write_text_if_changed(target: str | os.PathLike, text: str) -> bool:
    """``write_text`` only if ``target`` does not already hold ``text`` (an unchanged file keeps
    its mtime, so Snakemake does not re-run what reads it). Returns whether it wrote."""
    target = Path(target)
    if target.exists() and target.read_text() == text:
        return False
    write_text(target, text)
    return True

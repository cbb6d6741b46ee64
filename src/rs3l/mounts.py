"""Which filesystem a folder is on, read from the kernel's mount table.

SQLite's file locking is unreliable on network filesystems (its own documentation: NFS, and
Lustre without ``flock``), so rs3l refuses its embedded SQLite store there
(:func:`rs3l.tracking.check_store_location`). The mount table is ``/proc/mounts``, or the file
named by ``RS3L_MOUNTS_FILE`` (same format: ``device mount-point type options 0 0``), which is how
the tests fake a network filesystem without mounting one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MOUNTS_FILE_ENV = "RS3L_MOUNTS_FILE"
# Filesystems shared between machines, where SQLite locking cannot be trusted; fuse.* covers
# sshfs, glusterfs, ceph-fuse, s3fs... (a FUSE filesystem is usually a remote one).
SHARED_TYPES = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "beegfs", "ceph")


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\040 ...)
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, in mount order."""
    path = os.environ.get(MOUNTS_FILE_ENV) or "/proc/mounts"
    out = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append((_unescape(fields[1]), fields[2]))
    return out


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` made absolute, or its nearest ancestor that exists."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _existing_real_path(path: str | os.PathLike) -> str:
    """The real path (symlinks resolved) of ``path``, or of its nearest existing ancestor's real
    path joined with the rest: a results folder that does not exist yet is created on the
    filesystem of the folder that will hold it."""
    existing = nearest_existing(path)
    rest = Path(os.path.abspath(path)).relative_to(existing)
    return os.path.join(os.path.realpath(existing), rest) if rest.parts else os.path.realpath(existing)


def filesystem(path: str | os.PathLike) -> tuple[str, str]:
    """(filesystem type, mount point) of the folder ``path``: the longest mount point that holds
    it (the last one mounted, where two are mounted on the same point). ("unknown", "") when
    the mount table cannot be read (not Linux)."""
    real = _existing_real_path(path)
    try:
        table = mount_table()
    except OSError:
        return "unknown", ""
    best = ("unknown", "")
    for point, fstype in table:
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[1]):
            best = (fstype, point)
    return best


def is_shared(fstype: str) -> bool:
    """Whether a filesystem of this type is shared between machines (network or cluster)."""
    return fstype in SHARED_TYPES or fstype.startswith("fuse.")

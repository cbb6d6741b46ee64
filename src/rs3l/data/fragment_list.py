"""Fragment list files: how fragment paths reach ``rs3l merge`` (one path a line).

Linux allows 2 MB of arguments in all and 128 KiB per argument; at cluster size the
fragment paths of a merge are larger than that, so they travel in a file. Light on
imports: Snakemake writes these files at parse time.
"""

from __future__ import annotations

from pathlib import Path

from rs3l.atomic import write_text_if_changed


def write_fragment_list(path: str | Path, fragments: list[str]) -> bool:
    """Write ``fragments`` one a line, atomically, only if the content changes (an unchanged list
    keeps its mtime, so Snakemake does not re-run the merge). Returns whether it wrote."""
    return write_text_if_changed(path, "".join(f"{f}\n" for f in fragments))


def read_fragment_list(path: str | Path) -> list[str]:
    """Fragment paths from a list file; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fragment list '{path}' does not exist")
    lines = (line.strip() for line in path.read_text().splitlines())
    paths = [line for line in lines if line and not line.startswith("#")]
    if not paths:
        raise ValueError(f"fragment list '{path}' names no fragments")
    return paths

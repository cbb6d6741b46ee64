"""The shape of a run before it starts: merge parts (used by the workflow) and ``rs3l plan``.

Light on imports (no pyarrow, no Pythia): Snakemake imports it at parse time.
"""

from __future__ import annotations

from rs3l.config import config_hash


def merge_groups(cfg: dict) -> list[tuple[str, int]]:
    """Every (process, chunk) group of fragments, in the order the merge writes them."""
    return [(p, c) for p in cfg["simulation"]["processes"] for c in range(cfg["simulation"]["chunks"])]


def merge_parts(cfg: dict) -> list[list[tuple[str, int]]]:
    """The (process, chunk) groups of each parallel merge job: ``merge.chunks_per_part`` consecutive
    groups each (the last part may have fewer). One part gives the single merge's shards exactly."""
    groups, size = merge_groups(cfg), cfg["merge"]["chunks_per_part"]
    return [groups[i:i + size] for i in range(0, len(groups), size)]


def merge_hash(cfg: dict) -> str:
    """Hash of what decides the merged data besides the fragments (the ``merge`` section)."""
    return config_hash({"merge": cfg["merge"]})

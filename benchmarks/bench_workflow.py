"""Workflow benchmarks, measured side by side in one run.

1. Fan-out scaling: wall time of the smoke workflow's simulation stages (generate,
   resimulate, merge) with --cores 1 and with --cores 2; prints the speed-up ratio.
2. Merge peak memory at two dataset sizes (the smoke fragments replicated as k and 4k
   chunks); prints the ratio of peak RSS, which must stay near 1 (streaming merge).

    python benchmarks/bench_workflow.py [--copies 20]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_workflow(results: Path, cores: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "snakemake"), "--cores", str(cores), "--configfile", "config/smoke.yaml",
                    "--config", f"results_dir={results}", "--workflow-profile", "workflow/profiles/default", "merge"],
                   cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t0


def replicate(fragments: list[Path], copies: int, out: Path) -> list[Path]:
    """The same fragments as `copies` chunks (chunk column and metadata rewritten)."""
    paths = []
    for k in range(copies):
        for f in fragments:
            t = pq.read_table(f)
            meta = dict(t.schema.metadata)
            meta[b"rs3l.chunk"] = str(k).encode()
            t = t.set_column(t.schema.get_field_index("chunk"), "chunk", pa.array([k] * t.num_rows, pa.int32()))
            t = t.replace_schema_metadata(meta)
            p = out / f"{k}_{f.parent.parent.name}_{f.name}"
            pq.write_table(t, p, compression="zstd")
            paths.append(p)
    return paths


def merge_peak_mb(config: Path, fragments: list[Path], out_dir: Path) -> float:
    code = (
        "import resource, sys\n"
        "from rs3l.data.merge import merge\nfrom rs3l.resolve import load\n"
        f"merge(load({str(config)!r}), sys.argv[1:], {str(out_dir)!r})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, *map(str, fragments)], check=True, capture_output=True, text=True)
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=20, help="chunks of the small dataset; the large one has 4x")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t1 = run_workflow(tmp / "c1", 1)
        t2 = run_workflow(tmp / "c2", 2)
        print(f"fan-out (smoke simulation + merge): 1 core {t1:6.1f} s, 2 cores {t2:6.1f} s, "
              f"speed-up {t1 / t2:.2f} (ideal 2.00)")
        frags = sorted((tmp / "c2" / "fragments").rglob("*.parquet"))
        cfg = tmp / "c2" / "config.yaml"
        sizes = {}
        for copies in (args.copies, 4 * args.copies):
            d = tmp / f"rep{copies}"
            d.mkdir()
            paths = replicate(frags, copies, d)
            n_bytes = sum(p.stat().st_size for p in paths)
            sizes[copies] = (merge_peak_mb(cfg, paths, tmp / f"merged{copies}"), n_bytes)
            shutil.rmtree(d)
        (a, ba), (b, bb) = sizes[args.copies], sizes[4 * args.copies]
        print(f"merge peak RSS: {a:7.1f} MB for {ba / 1e6:6.1f} MB of fragments, "
              f"{b:7.1f} MB for {bb / 1e6:6.1f} MB; ratio {b / a:.2f} for {bb / ba:.1f}x the data (target ~1)")


if __name__ == "__main__":
    main()

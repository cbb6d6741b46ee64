"""Scale benchmarks, measured in one run.

1. Workflow size: `snakemake -n -p` wall time and peak RSS at about 1k, 10k and 50k units
   (resimulate jobs; generated configs with many chunks), the time per unit at each size
   (growth must be about linear), and the longest command line any rule would run at the
   largest size (must stay below Linux's 128 KiB per argument).
2. Merge: throughput (jets/s) and peak RSS at two data sizes (synthetic fragments in the
   format `rs3l resimulate` writes), the single merge against parallel parts (2 at a time,
   then the final step).

    python benchmarks/bench_scale.py [--units 1000 10000 50000] [--events 400]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))

VIEWS = ["nominal", "seed", "fsr_up", "fsr_down", "isr_up", "isr_down", "had_up", "had_down", "mpi_off", "vincia"]


def timed(cmd: list[str], **kwargs) -> tuple[float, float, str, float]:
    """(wall s, peak RSS MB, stdout+stderr, CPU s = user + system) of ``cmd``, through /usr/bin/time -v."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1)) / 1024
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", res.stderr).group(1)) for k in ("User", "System"))
    return wall, rss, res.stdout + res.stderr, cpu


def dry_run(tmp: Path, units: int, extra: list[str]) -> dict:
    chunks = max(1, round(units / (2 * len(VIEWS))))
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["simulation"].update(chunks=chunks, processes=["qcd", "top"], views=VIEWS)
    cfg["merge"]["chunks_per_part"] = 50
    path = tmp / f"scale{units}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    wall, rss, out, _ = timed([str(BIN / "snakemake"), "-n", "-p", *extra, "--configfile", str(path),
                            "--config", f"results_dir={tmp / f'r{units}'}"], cwd=REPO)
    n = 2 * chunks * len(VIEWS)
    # the shell commands printed by -p
    cmds = [line.split("Shell command: ", 1)[1] for line in out.splitlines() if "Shell command: " in line]
    longest = max(cmds, key=len)
    jobs = int(re.search(r"^total\s+(\d+)", out, flags=re.M).group(1))
    # before parts and list files, rule merge had every fragment path on its command line
    r = tmp / f"r{units}"
    before = sum(len(f"{r}/fragments/{p}/chunk{c}/{v}.r0.parquet") + 1
                 for p in ("qcd", "top") for c in range(chunks) for v in VIEWS)
    return {"units": n, "jobs": jobs, "wall": wall, "rss": rss, "longest": len(longest),
            "longest_rule": longest.split()[1], "before": before}


def merge_bench(tmp: Path, chunks: int, events: int) -> dict:
    from fragments import make_fragments
    from synthetic import make_config

    from rs3l.data.fragment_list import write_fragment_list
    from rs3l.plan import merge_parts

    views = VIEWS[:4]
    cfg = make_config(tmp / f"m{chunks}", views=views,
                      simulation={"views": views, "processes": ["q", "top"], "chunks": chunks},
                      merge={"chunks_per_part": max(1, chunks // 2)})  # 4 parts
    cfg_path = tmp / f"m{chunks}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    paths = make_fragments(cfg, tmp / f"frag{chunks}", events=events, jets_per_event=2, missing=0.05)
    listing = tmp / f"list{chunks}.txt"
    write_fragment_list(listing, [str(p) for p in paths])
    rs3l = str(BIN / "rs3l")
    single_wall, single_rss, _, single_cpu = timed([rs3l, "merge", "--config", str(cfg_path), "--fragment-list", str(listing),
                                        "--out-dir", str(tmp / f"single{chunks}")])
    manifest = json.loads((tmp / f"single{chunks}" / "manifest.json").read_text())
    jets = sum(manifest["splits"][s]["jets"] for s in manifest["splits"])
    # parallel: one list per part, two parts at a time (2 cores), then the final step
    by_group = {}
    for p in paths:
        by_group.setdefault((p.parent.parent.name, int(p.parent.name[5:])), []).append(str(p))
    parts = merge_parts(cfg)
    cmds = []
    for i, groups in enumerate(parts):
        lst = tmp / f"list{chunks}-{i}.txt"
        write_fragment_list(lst, [f for g in groups for f in by_group[g]])
        cmds.append([rs3l, "merge", "--config", str(cfg_path), "--fragment-list", str(lst), "--part", str(i),
                     "--out-dir", str(tmp / f"parted{chunks}")])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        part_runs = list(pool.map(timed, cmds))
    fin_wall, fin_rss, _, fin_cpu = timed([rs3l, "merge", "--config", str(cfg_path), "--finalize", str(len(parts)),
                                  "--out-dir", str(tmp / f"parted{chunks}")])
    parallel_wall = time.perf_counter() - t0
    frag_mb = sum(p.stat().st_size for p in paths) / 1e6
    return {"chunks": chunks, "fragments": len(paths), "frag_mb": frag_mb, "jets": jets, "single_wall": single_wall,
            "single_rss": single_rss, "single_cpu": single_cpu, "parts": len(parts),
            "part_wall": max(r[0] for r in part_runs), "part_rss": max(r[1] for r in part_runs),
            "part_cpu_max": max(r[3] for r in part_runs), "part_cpu_sum": sum(r[3] for r in part_runs),
            "fin_wall": fin_wall, "fin_rss": fin_rss, "fin_cpu": fin_cpu, "parallel_wall": parallel_wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="*", default=[1000, 10000, 50000], help="workflow sizes (resimulate jobs)")
    ap.add_argument("--scheduler", default=None, help="also pass --scheduler to snakemake (e.g. greedy)")
    ap.add_argument("--events", type=int, default=400, help="events per synthetic chunk in the merge benchmark")
    ap.add_argument("--merge-chunks", type=int, nargs=2, default=[8, 32], help="chunks per process at the two merge sizes")
    args = ap.parse_args()
    extra = ["--scheduler", args.scheduler] if args.scheduler else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.units:
            print("snakemake -n -p (DAG of the whole workflow):")
            print(f"{'units':>8}{'jobs':>8}{'wall s':>9}{'ms/unit':>9}{'peak RSS MB':>13}{'KB/unit':>9}{'longest cmd B':>15}")
            rows = []
            base = dry_run(tmp, 20, extra)  # Snakemake's start-up and parsing, to subtract
            print(f"{base['units']:>8}{base['jobs']:>8}{base['wall']:>9.1f}{'':>9}{base['rss']:>13.0f}{'':>9}{base['longest']:>15}"
                  "   (baseline: start-up)", flush=True)
            for units in args.units:
                r = dry_run(tmp, units, extra)
                rows.append(r)
                r["per_unit"] = (r["wall"] - base["wall"]) / r["units"]
                print(f"{r['units']:>8}{r['jobs']:>8}{r['wall']:>9.1f}{r['per_unit'] * 1e3:>9.2f}{r['rss']:>13.0f}"
                      f"{(r['rss'] - base['rss']) * 1024 / r['units']:>9.1f}{r['longest']:>15}", flush=True)
            print("(ms/unit and KB/unit: above the baseline's start-up time and memory)")
            if len(rows) > 1:
                a, b = rows[0], rows[-1]
                print(f"time per unit, {b['units']} vs {a['units']} units: x{b['per_unit'] / a['per_unit']:.2f} (1.00 = linear)")
            b = rows[-1]
            print(f"longest command line at {b['units']} units: {b['longest']} B (rule {b['longest_rule']}; limit 131072 B "
                  f"per argument); before list files the merge command held every fragment path: {b['before']:,} B")
        print("\nmerge (synthetic fragments, 2 processes x chunks x 4 views). CPU s = user + system; on a busy "
              "machine wall times mislead, so parts are compared by CPU time: on a cluster each part is its own job, "
              "the merge's wall time = longest part + final step")
        res = [merge_bench(tmp, c, args.events) for c in args.merge_chunks]
        for r in res:
            print(f"  {r['fragments']:>4} fragments, {r['frag_mb']:6.1f} MB, {r['jets']:>7} jets:\n"
                  f"    single merge: wall {r['single_wall']:5.1f} s, CPU {r['single_cpu']:5.1f} s "
                  f"({r['jets'] / r['single_cpu']:6.0f} jets per CPU s), peak RSS {r['single_rss']:4.0f} MB\n"
                  f"    {r['parts']} parts:      longest part CPU {r['part_cpu_max']:5.1f} s, all parts CPU "
                  f"{r['part_cpu_sum']:5.1f} s, peak RSS {r['part_rss']:4.0f} MB; final step wall {r['fin_wall']:4.1f} s, "
                  f"CPU {r['fin_cpu']:4.1f} s, peak RSS {r['fin_rss']:4.0f} MB\n"
                  f"    here, 2 parts at a time on this (shared) 2-core machine: wall {r['parallel_wall']:5.1f} s "
                  f"(single {r['single_wall']:5.1f} s)")
        a, b = res
        print(f"  {b['jets'] / a['jets']:.1f}x the data: single merge peak RSS x{b['single_rss'] / a['single_rss']:.2f}, "
              f"CPU x{b['single_cpu'] / a['single_cpu']:.2f}; part peak RSS x{b['part_rss'] / a['part_rss']:.2f}; "
              f"final step CPU x{b['fin_cpu'] / a['fin_cpu']:.2f}; cluster wall (longest part + final) / single: "
              f"{(b['part_cpu_max'] + b['fin_cpu']) / b['single_cpu']:.2f} with {b['parts']} parts "
              f"(parts' CPU overhead x{b['part_cpu_sum'] / b['single_cpu']:.2f})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Wall time per stage of one Snakemake run, from its log (Snakemake's own .snakemake/log/*.snakemake.log or its
captured output): for each rule, the jobs, when the first one started and the last one finished (minutes after the
run's first job), and the wall time during which at least one of its jobs ran.

    python scripts/stage_wall.py SNAKEMAKE_LOG [--json OUT.json]      # prints a markdown table
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def parse(lines) -> dict:
    """{rule: [(start, end), ...]} in seconds since the first job started (end None if the job never finished)."""
    now, pending, jobs = None, None, {}
    for line in lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif (m := START.match(line)) and now is not None:
            pending = (m.group(1), now)
        elif (m := JOBID.match(line)) and pending is not None:
            jobs[int(m.group(1))] = [pending[0], pending[1], None]
            pending = None
        elif (m := FINISHED.match(line)) and int(m.group(1)) in jobs:
            jobs[int(m.group(1))][2] = now
    if not jobs:
        raise SystemExit("stage_wall: no Snakemake job found in the log")
    t0 = min(s for _, s, _ in jobs.values())
    out: dict[str, list] = {}
    for rule, s, e in jobs.values():
        out.setdefault(rule, []).append(((s - t0).total_seconds(), None if e is None else (e - t0).total_seconds()))
    return out


def busy(intervals) -> float:
    """Seconds covered by the union of the (start, end) intervals."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(i for i in intervals if i[1] is not None):
        if cur_e is None or s > cur_e:
            total += 0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (0 if cur_e is None else cur_e - cur_s)


def summary(rules: dict) -> dict:
    rows = {}
    for rule, iv in sorted(rules.items(), key=lambda kv: min(s for s, _ in kv[1])):
        ends = [e for _, e in iv if e is not None]
        rows[rule] = {"jobs": len(iv), "unfinished": len(iv) - len(ends), "first_start_min": min(s for s, _ in iv) / 60,
                      "last_end_min": max(ends) / 60 if ends else None, "busy_min": busy(iv) / 60}
    ends = [e for iv in rules.values() for _, e in iv if e is not None]
    return {"wall_min": max(ends) / 60 if ends else None, "rules": rows}


def markdown(s: dict) -> str:
    out = [f"Wall time from the first job's start to the last job's end: {s['wall_min']:.1f} min.", "",
           "| stage (rule) | jobs | first start (min) | last end (min) | wall with a job running (min) |",
           "|---|---|---|---|---|"]
    for rule, r in s["rules"].items():
        end = "–" if r["last_end_min"] is None else f"{r['last_end_min']:.1f}"
        unfinished = f" ({r['unfinished']} unfinished)" if r["unfinished"] else ""
        out.append(f"| {rule} | {r['jobs']}{unfinished} | "
                   f"{r['first_start_min']:.1f} | {end} | {r['busy_min']:.1f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="Snakemake's log of the run")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    with open(args.log, errors="replace") as f:
        s = summary(parse(f))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)
    sys.stdout.write(markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())

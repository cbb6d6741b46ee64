#!/usr/bin/env bash
# Copy a finished study's small report files into the repository (docs/<name>/): the results page and
# table, the paired comparisons, job seconds per stage, the plots a reader looks at, each pre-training's
# summary, and the hashes that identify the data and the config. Nothing large (no data, no models).
#   bash scripts/publish-study.sh results-study-2core docs/study-2core [SNAKEMAKE_LOG]
# With Snakemake's log of the run, also the wall time per stage (wall_time.md, scripts/stage_wall.py).
set -euo pipefail
results=${1:?usage: publish-study.sh RESULTS_DIR DEST_DIR}
dest=${2:?usage: publish-study.sh RESULTS_DIR DEST_DIR}
[[ -f $results/summary/results.md ]] || { echo "publish-study: $results/summary/results.md is missing: run the study first" >&2; exit 1; }
mkdir -p "$dest/plots" "$dest/pretrain"
cp "$results"/summary/{results.md,results.csv,comparisons.json,job_seconds.json} "$dest/"
for p in "$results"/summary/plots/{pool_scan,label_efficiency,robustness}_*.png "$results"/summary/plots/{jet_mass,embeddings}.png; do
    [[ -f $p ]] && cp "$p" "$dest/plots/"
done
for s in "$results"/pretrain/*/summary.json "$results"/pretrain/summary.json; do
    [[ -f $s ]] || continue
    name=$(basename "$(dirname "$s")")
    python3 - "$s" "$dest/pretrain/$name.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
keep = {k: s[k] for k in ("pool", "pool_jets", "epochs", "epochs_trained", "best_epoch", "best_val_loss", "early_stopped",
                          "converged", "knn_acc_final", "final_metrics") if k in s}
json.dump(keep, open(sys.argv[2], "w"), indent=1)
PY
done
python3 - "$results" "$dest/hashes.json" <<'PY'
import json, sys, pathlib
r = pathlib.Path(sys.argv[1])
m = json.loads((r / "data" / "manifest.json").read_text())
out = {"data_content_hash": m.get("content_hash"), "simulation_hash": m.get("simulation_hash"),
       "merge_hash": m.get("merge_hash"), "config_hash": m.get("config_hash"),
       "jets": {s: m["splits"][s]["jets"] for s in ("train", "val", "test")},
       "per_class": {s: m["splits"][s].get("per_class") for s in ("train", "val", "test")},
       "per_view": {s: m["splits"][s].get("per_view") for s in ("train", "val", "test")}}
try:
    import yaml
    from rs3l.config import config_hash
    out["resolved_config_hash"] = config_hash(yaml.safe_load((r / "config.yaml").read_text()))
except Exception as exc:  # noqa: BLE001 - the hashes above are what matters
    out["resolved_config_hash"] = f"unavailable ({exc})"
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
cp "$results/config.yaml" "$dest/config.resolved.yaml"
if [[ -n ${3:-} ]]; then
    python3 "$(dirname "$0")/stage_wall.py" "$3" --json "$dest/wall_time.json" > "$dest/wall_time.md"
fi
echo "publish-study: $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1) in $dest"

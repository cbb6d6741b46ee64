#!/usr/bin/env bash
# Set up and run the default pipeline end to end (config/config.yaml), then print the results table.
#   bash scripts/run.sh [extra snakemake arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
start=$(date +%s)
snakemake --cores "$(nproc)" --workflow-profile workflow/profiles/default "$@"
results=$(python -c "from rs3l.resolve import load; print(load()['results_dir'])")
echo
echo "== rs3l results ($(( $(date +%s) - start )) s wall time; plots in $results/summary/plots, MLflow store $results/mlflow.db) =="
cat "$results/summary/results.md"
echo
echo "Browse the runs in MLflow's UI (Ctrl-C stops it): . .venv/bin/activate && rs3l ui"

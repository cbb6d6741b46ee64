#!/usr/bin/env bash
# Set up rs3l on a fresh machine: a virtualenv in .venv with pinned dependencies.
#   bash scripts/setup.sh              # simulation + training (CPU torch)
#   bash scripts/setup.sh --with-slurm # also the Debian packages of a single-node Slurm (tests)
# GPU users: install the CUDA build of torch 2.13.0 into .venv first (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
with_slurm=0
[[ ${1:-} == --with-slurm ]] && with_slurm=1

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
pip_install() {
    # pip's notes about unreachable local index folders are noise; its errors still fail the script
    python -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_install --upgrade pip
# Pin the CPU build of torch explicitly: a loose pin pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
pip_install -e ".[test]"

if [[ $with_slurm == 1 ]] && ! command -v slurmctld >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
echo "rs3l set up in $(pwd)/.venv"

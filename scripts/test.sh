#!/usr/bin/env bash
# Set up (including a single-node Slurm from Debian packages) and run the test suite.
#   bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-slurm --no-profile  # the tests install the profile under a temporary HOME
. .venv/bin/activate
python -m pytest "$@"

#!/usr/bin/env bash
# Set up (including a single-node Slurm and Chromium from Debian packages) and run the test suite.
#   bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
# the tests install the profile under a temporary HOME; chromium: the `rs3l ui` test's headless browser
bash scripts/setup.sh --with-slurm --with-browser --no-profile
. .venv/bin/activate
python -m pytest "$@"

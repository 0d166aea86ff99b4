#!/usr/bin/env bash
# Set up, then run the whole test suite (tiny models, plus @slow tests on SmolLM2-135M) on CPU; without
# arguments, then the `floors` tests against the lowest dependency versions (scripts/test_floors.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
if [ $# -eq 0 ]; then
    bash scripts/test_floors.sh
fi

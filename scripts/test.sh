#!/usr/bin/env bash
# Set up, then run the whole test suite (tiny models, plus @slow tests on SmolLM2-135M) on CPU; without
# arguments, then the `floors` tests against the lowest dependency versions (scripts/test_floors.sh).
# Two pytest-xdist workers with one torch thread each (`-n 0` among ARGS runs the tests in one process);
# tests/conftest.py keeps the tests of a module-scoped fixture on one worker and builds the tiny
# experiment once for both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q -n 2 --dist loadgroup "$@"
if [ $# -eq 0 ]; then
    bash scripts/test_floors.sh
fi

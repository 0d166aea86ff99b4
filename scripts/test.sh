#!/usr/bin/env bash
# Set up, then run the whole test suite (tiny models, plus @slow tests on SmolLM2-135M) on CPU; without
# arguments, then the `floors` tests against the lowest dependency versions (scripts/test_floors.sh),
# whose set-up runs meanwhile at the lowest CPU priority, on what the suite leaves idle.
# Two pytest-xdist workers with one torch thread each (`-n 0` among ARGS runs the tests in one process);
# tests/conftest.py keeps the tests of a module-scoped fixture on one worker and builds the tiny
# experiment once for both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ $# -eq 0 ]; then
    nice -n 19 bash scripts/test_floors.sh --prepare > .floors-prepare.log 2>&1 &
    prepare=$!
fi
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# glibc: serve large blocks (the tiny model's 49k-column logits) from the heap and keep freed ones there,
# instead of a fresh mmap, page-faulted anew, for each: the tiny experiment 27 -> 21 s, its system time
# 8.2 -> 1.9 s, its peak 0.1 GB higher (BENCHMARKS.md). Speed only: no result depends on it.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4294967296}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4294967296}"
status=0
python -m pytest -q -n 2 --dist loadgroup "$@" || status=$?
if [ $# -eq 0 ]; then
    wait "$prepare" || { status=1; cat .floors-prepare.log; echo "scripts/test_floors.sh --prepare failed" >&2; }
    [ "$status" -ne 0 ] || bash scripts/test_floors.sh --prepared || status=$?
fi
exit "$status"

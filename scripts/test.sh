#!/usr/bin/env bash
# Set up, then run the whole test suite (tiny models, plus @slow tests on SmolLM2-135M) on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"

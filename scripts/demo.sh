#!/usr/bin/env bash
# Set up, then run the embedded default experiment (SmolLM2-135M-Instruct, embedded data, offline).
# Extra arguments go to `metasft run` (e.g. --out DIR, key=value overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
metasft run --out "${METASFT_OUT:-runs/embedded_default}" "$@"

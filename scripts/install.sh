#!/usr/bin/env bash
# `pip install ARGS` into the active virtual environment, by uv where it can (metasft's ~70 dependencies
# and torch in about 20 s where pip takes about 45: BENCHMARKS.md, "Set-up"), else by pip. uv reads no pip
# configuration: pip's find-links (where a machine keeps a local torch build) are passed on; a pip mirror
# only pip knows of still works, by pip. --compile-bytecode, as pip does: without .pyc files (and with
# PYTHONDONTWRITEBYTECODE set, as on this machine) every process compiles torch and transformers anew,
# 11 s of CPU per `import metasft.pipeline` instead of 5.
set -euo pipefail
links="${PIP_FIND_LINKS:-$(python -m pip config get global.find-links 2>/dev/null || true)}"
python -m pip install -q uv 2>/dev/null &&
    python -m uv pip install -q --compile-bytecode ${links:+--find-links "$links"} "$@" 2>/dev/null && exit 0
python -m pip install -q "$@"

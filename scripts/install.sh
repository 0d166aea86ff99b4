#!/usr/bin/env bash
# `pip install ARGS` into the active virtual environment, by uv where it can (it resolves and installs
# metasft's ~70 dependencies in about 3 s where pip takes about 30: BENCHMARKS.md, "Set-up"), else by
# pip (uv reads no pip.conf: a pip mirror or find-links only pip knows of still works).
# torch is installed by pip before this (uv does not look in pip's find-links for the local CPU build).
set -euo pipefail
python -m pip install -q uv 2>/dev/null && python -m uv pip install -q "$@" 2>/dev/null && exit 0
python -m pip install -q "$@"

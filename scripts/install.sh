#!/usr/bin/env bash
# `pip install ARGS` into the active virtual environment, by uv where it can (it resolves and installs
# metasft's ~70 dependencies in about 3 s where pip takes about 30, and the torch wheel in 3 s where pip
# takes 14: BENCHMARKS.md, "Set-up"), else by pip. uv reads no pip configuration: pip's find-links (where
# a machine keeps a local torch build) are passed on; a pip mirror only pip knows of still works, by pip.
set -euo pipefail
links="${PIP_FIND_LINKS:-$(python -m pip config get global.find-links 2>/dev/null || true)}"
python -m pip install -q uv 2>/dev/null &&
    python -m uv pip install -q ${links:+--find-links "$links"} "$@" 2>/dev/null && exit 0
python -m pip install -q "$@"

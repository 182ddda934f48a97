#!/usr/bin/env bash
# Set up .venv if needed, lint with ruff, then run the default test suite (no slow runs).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m slow   or   bash scripts/test.sh tests/test_ntk.py
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check dyntheory experiments paper_figures tests benchmarks docs/examples
.venv/bin/ruff format --check dyntheory experiments paper_figures tests benchmarks docs/examples
echo "[test] pytest"
.venv/bin/python -m pytest -q "$@"

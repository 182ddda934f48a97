#!/usr/bin/env bash
# Set up .venv if needed, lint with ruff, then run the default test suite (no slow runs).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m slow   or   bash scripts/test.sh tests/test_ntk.py
# pytest-xdist runs one worker per core, at most 4, each test file on one worker (its module
# fixtures computed once), the longest files first (tests/conftest.py orders them);
# DYNTHEORY_TEST_WORKERS=N sets the number (0: no workers, one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check dyntheory experiments paper_figures tests benchmarks docs/examples
.venv/bin/ruff format --check dyntheory experiments paper_figures tests benchmarks docs/examples
echo "[test] pytest"
.venv/bin/python -m pytest -q -n "${DYNTHEORY_TEST_WORKERS:-auto}" --maxprocesses=4 \
  --dist loadfile --no-loadscope-reorder "$@"

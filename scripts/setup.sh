#!/usr/bin/env bash
# Create ./.venv (once) and install dyntheory with its pinned stack. Idempotent and quiet.
# Needs only python3 >= 3.11 and access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.dyntheory-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "[setup] installing dyntheory and its pinned dependencies (about a minute the first time)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,docs]'
  # neural-tangents' metadata drags in TensorFlow for one experimental module that we stub
  # (see dyntheory/_compat/neural_tangents.py), so it is installed without dependencies.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps neural-tangents==0.6.5
  touch "$stamp"
fi

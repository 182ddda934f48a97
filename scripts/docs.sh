#!/usr/bin/env bash
# Set up .venv if needed, then build the documentation site into site/ with warnings as errors
# (a broken reference or a docstring mkdocstrings cannot parse fails the build).
# Extra arguments go to `mkdocs build`, e.g.  bash scripts/docs.sh -d /tmp/site
# To browse it while editing:  .venv/bin/mkdocs serve
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict "$@"

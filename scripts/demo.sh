#!/usr/bin/env bash
# Set up .venv if needed, then run the main job: the quick grokking experiment (AdamW vs PRM,
# 3 seeds, a few minutes on a 2-core CPU, without the costly W_S probes). Writes
# runs/grokking-quick/ with results.json, then draws grokking.png from it.
# Extra arguments go to `dyntheory run`, e.g.  bash scripts/demo.sh --set seeds=1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The W_S / NTK probes on the whole training set are off here (probes_per_decade=0): with them the
# quick preset takes ~25 min per optimizer on this CPU (docs/results/instruments.md).
.venv/bin/dyntheory run grokking --preset quick --set probes_per_decade=0 --out runs/grokking-quick "$@"
# The figure is drawn from the run directory alone (paper_figures/grokking.py).
.venv/bin/dyntheory figures --only grokking --runs runs --preset quick --no-run --out runs/grokking-quick
echo "[demo] figure: runs/grokking-quick/grokking.png"

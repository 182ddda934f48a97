"""The W_S frontier benchmark end to end on the tiny grokking preset: the baseline, a warm
refresh and an adaptive schedule (``--set dissipation_warm_start/refresh_tol``) write a table
with their errors, refresh counts and costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_frontier_on_the_tiny_preset(tmp_path):
    rows = ["refresh-2/decade-warm", "adaptive-8/decade-tol0.1"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "dissipation_frontier.py")]
    cmd += ["--out", str(tmp_path), "--preset", "tiny", "--only", *rows]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    assert "grokking tiny" in out
    for name in rows:
        line = next(r for r in out.splitlines() if r.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] != "— (—)" and cells[-2] != "—" and cells[-1] != "—", line
    saved = json.loads((tmp_path / "adaptive-8-decade-tol0.1-adamw" / "config.json").read_text())
    c = saved["config"]
    assert c["dissipation_warm_start"] is True and c["dissipation_refresh_tol"] == 0.1

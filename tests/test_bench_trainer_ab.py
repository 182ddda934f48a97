"""The side-by-side benchmark of trainer.py versions: its inputs checked, and (slow) a run of two
copies of the current version, which must both train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "trainer_ab.py"
TRAINER = ROOT / "dyntheory" / "engine" / "trainer.py"


def run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(
    "args, message",
    [
        ((TRAINER,), "at least two versions"),
        ((TRAINER, "/nonexistent/trainer.py"), "no such file: /nonexistent/trainer.py"),
    ],
)
def test_bad_inputs_are_one_line_errors(args, message):
    out = run(*args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_two_copies_of_the_current_trainer(tmp_path):
    copy = tmp_path / "trainer_copy.py"
    copy.write_text(TRAINER.read_text())
    out = run(
        TRAINER, copy, "--compile-rounds", 1, "--chunks", 2, "--lrs", "1e-3", "--alphas", "0.1,1"
    )
    assert out.returncode == 0, out.stderr
    rows = [
        r for r in out.stdout.splitlines() if r.startswith(f"| {TRAINER} ") or "trainer_copy" in r
    ]
    assert len(rows) == 2

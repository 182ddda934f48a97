"""Fault injection: kill ``dyntheory run`` at every write and rename point, and corrupt or delete
every run file in turn. Either the run resumes to the same result as an uninterrupted one, or
``dyntheory resume`` refuses with one line; in no case is a file of the user's lost.

The write points are enumerated, not guessed: a traced run (``DYNTHEORY_FAULT_TRACE``) lists
every point it passes (:mod:`dyntheory.engine.faults`), and each is then targeted by
``DYNTHEORY_FAULT=NAME:K`` at its first and its last pass, which kills the process there with
``os._exit`` (no cleanup runs, as under ``kill -9``). The default suite kills at one point of
each kind; ``-m slow`` kills at all of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dyntheory.cli import app as cli
from dyntheory.engine import faults, rundir
from tests.helpers import xla_flags
from tests.test_cli_resume import assert_same_run

ROOT = Path(__file__).resolve().parents[1]
ARGV = ["run", "toy_regression", "--preset", "tiny"]
USER_FILE = "notes.txt"  # a file of the user's in the run directory: never lost
# the points a toy run passes, by kind (the trace test checks the list is complete)
KINDS = {
    "write:config.json",
    "write:probes.npz",
    "write:results.json",
    f"write:{rundir.MARKER}",
    "append:metrics.jsonl",
    "checkpoint",
}
QUICK = [  # one point of each kind, for the default suite (-1: its last pass)
    ("write:probes.npz:before-rename", -1),
    ("append:metrics.jsonl:half", -1),
    ("checkpoint:after-save", 1),
]


def cli_process(argv, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    """``dyntheory ARGV`` in a process of its own, on one device (what is tested is what a kill
    leaves on disk, not the mesh; on 8 fake devices a toy run takes half as long again)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": xla_flags(1)}
    env.pop("DYNTHEORY_FAULT", None)
    env.pop("DYNTHEORY_FAULT_TRACE", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", "import sys; from dyntheory.cli import main; sys.exit(main())"]
        + list(map(str, argv)),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """An uninterrupted run with its trace: ``(run dir, Counter of point -> passes)``."""
    root = tmp_path_factory.mktemp("faults")
    out, trace = root / "whole", root / "trace.txt"
    out.mkdir()
    (out / USER_FILE).write_text("the user's notes\n")
    done = cli_process([*ARGV, "--out", out], {"DYNTHEORY_FAULT_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr[-3000:]
    return out, Counter(trace.read_text().split())


def test_the_trace_enumerates_every_kind_of_write_point(traced):
    _, points = traced
    kinds = {p.rsplit(":", 1)[0] if p.count(":") > 1 else p.split(":")[0] for p in points}
    assert KINDS <= kinds, sorted(kinds)
    assert all(name in points for name, _ in QUICK)
    # the count the README states: distinct (point, first/last pass) cases of the slow suite
    assert len(_cases(points)) >= 2 * len(KINDS)


def _cases(points: Counter) -> list[tuple[str, int]]:
    cases = []
    for name, n in sorted(points.items()):
        cases += [(name, 1)] + ([(name, n)] if n > 1 else [])
    return cases


def _kill_then_resume(tmp_path, whole: Path, point: str, k: int) -> None:
    out = tmp_path / "run"
    out.mkdir(parents=True)
    (out / USER_FILE).write_text("the user's notes\n")
    killed = cli_process([*ARGV, "--out", out], {"DYNTHEORY_FAULT": f"{point}:{k}"})
    assert killed.returncode == faults.KILLED, (point, k, killed.stderr[-2000:])
    resumed = cli_process(["resume", out])
    assert (out / USER_FILE).read_text() == "the user's notes\n"  # never lost
    if resumed.returncode == 0:
        assert_same_run(out, whole)
        assert not list(out.glob(".*.tmp"))  # a kill's leftovers are gone
    else:  # refused: one line, naming the way on, and nothing changed
        lines = [x for x in resumed.stderr.strip().splitlines() if not x.startswith("compiling")]
        assert resumed.returncode == 2 and len(lines) == 1, resumed.stderr[-2000:]
        assert any(w in lines[0] for w in ("--force", "--rebuild", "dyntheory run")), lines[0]


@pytest.mark.parametrize("point, k", QUICK)
def test_a_kill_at_a_write_point_resumes_or_refuses(tmp_path, traced, point, k):
    _kill_then_resume(tmp_path, traced[0], point, traced[1][point] if k < 0 else k)


@pytest.mark.slow
def test_a_kill_at_every_write_point_resumes_or_refuses(tmp_path, traced):
    whole, points = traced
    for i, (point, k) in enumerate(_cases(points)):
        _kill_then_resume(tmp_path / str(i), whole, point, k)


# ------------------------------------------------------------ every run file, deleted or corrupt


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif path.is_dir():  # every data file of a checkpoint
        for f in path.rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(np.random.default_rng(1).bytes(200))
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] + b"\x00garbage")


RUN_FILES = [
    rundir.CONFIG,
    rundir.METRICS,
    rundir.ARRAYS,
    rundir.RESULTS,
    rundir.MARKER,
    f"{rundir.CHECKPOINTS}/60",
    f"{rundir.CHECKPOINTS}/30",
]


def _damage_then_resume(capsys, tmp_path, tiny_run, name: str, how: str) -> None:
    whole = tiny_run("toy_regression")
    out = tmp_path / f"{name.replace('/', '-')}-{how}"
    shutil.copytree(whole, out)
    (out / USER_FILE).write_text("the user's notes\n")
    _damage(out / name, how)
    code = cli.main(["resume", str(out)])
    _, err = capsys.readouterr()
    assert (out / USER_FILE).read_text() == "the user's notes\n"
    if code == 0:
        assert_same_run(out, whole)
    else:
        lines = [
            x
            for x in err.strip().splitlines()
            if "failed to restore" not in x and not x.startswith("compiling")
        ]
        assert code == 2 and len(lines) == 1, (name, how, err[-2000:])


@pytest.mark.parametrize(
    "name, how",
    [
        (rundir.ARRAYS, "corrupt"),
        (rundir.RESULTS, "delete"),
        (f"{rundir.CHECKPOINTS}/30", "delete"),
    ],
)
def test_a_damaged_run_file_resumes_or_refuses(capsys, tmp_path, tiny_run, name, how):
    _damage_then_resume(capsys, tmp_path, tiny_run, name, how)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["delete", "corrupt"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_every_damaged_run_file_resumes_or_refuses(capsys, tmp_path, tiny_run, name, how):
    _damage_then_resume(capsys, tmp_path, tiny_run, name, how)
